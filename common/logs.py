"""Logging set-up shared by both daemons and the CLI."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO", *, quiet: bool = False) -> None:
    """Daemons log at ``level`` to stderr; CLI commands (``quiet``) only log warnings."""
    logging.basicConfig(
        level=logging.WARNING if quiet else level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
