"""The systemd units shipped in the package (``seeder/deploy/systemd/``).

``deploy/systemd/`` in the repository is the documented copy; a test keeps the two identical.
Reading them through importlib.resources works from a wheel as from the source tree.
"""

from __future__ import annotations

from importlib import resources

from common.errors import ConfigError

UNITS = ("shoal-peer.service", "shoal-seeder.service")


def unit_text(name: str) -> str:
    """The text of one shipped unit, e.g. ``shoal-peer.service``."""
    if name not in UNITS:
        raise ConfigError(f"no systemd unit {name!r} ships with shoal (known: {', '.join(UNITS)})")
    return (resources.files("seeder") / "deploy" / "systemd" / name).read_text(encoding="utf-8")
