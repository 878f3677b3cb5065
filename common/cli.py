"""Command-line options both daemons share."""

from __future__ import annotations

import argparse


def add_override_option(parser: argparse.ArgumentParser) -> None:
    """``--torrent-setting KEY=VALUE``, checked by :func:`common.torrent.parse_overrides`
    (parsed lazily there, so that CLI commands which never start libtorrent don't load it)."""
    parser.add_argument(
        "--torrent-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a libtorrent setting (repeatable)",
    )
