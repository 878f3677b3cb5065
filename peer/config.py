"""The peer's config file (``/etc/shoal/peer.yml``): YAML, keyed by ``shoal-peer run``'s options.

    seeder: 10.0.0.1:7700        # required
    data_dir: /var/lib/shoal-peer # required
    name: web-23                  # default: the hostname
    bind: 10.0.0.23               # default: 127.0.0.1
    torrent_port: 6881
    labels: {env: prod, zone: a}
    keep: 5
    min_free: 64M                 # bytes, or with a K/M/G suffix
    unpack_ratio: 3
    prefix: /opt/shoal            # the install prefix upgrades switch (default: detected)
    upgrade_timeout: 120          # seconds a new shoal version has to connect
    log_level: INFO

``shoal fleet install`` writes it; ``shoal-peer run --config FILE`` and ``shoal-peer start``
read it. An unknown key, a missing required one or a value of the wrong type is refused with
an error naming the file and the key: a typo never silently becomes a default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from common.errors import ConfigError, ShoalError
from common.yamldoc import LiteralInt, load_yaml

if TYPE_CHECKING:
    from peer.daemon import PeerConfig

KEYS: dict[str, type | tuple[type, ...]] = {
    "seeder": str,
    "data_dir": str,
    "name": str,
    "bind": str,
    "torrent_port": int,
    "labels": dict,
    "keep": int,
    "min_free": (int, str),
    "unpack_ratio": (int, float),
    "prefix": str,
    "upgrade_timeout": (int, float),
    "log_level": str,
}
REQUIRED = ("seeder", "data_dir")


@dataclass(frozen=True)
class FileConfig:
    """The values a config file gives (None: not given, the command line's default applies)."""

    path: Path
    values: dict[str, Any]

    def get(self, key: str) -> Any:
        return self.values.get(key)


def parse_config(text: str, source: str) -> FileConfig:
    try:
        doc = load_yaml(text)
    except ShoalError as exc:
        raise ConfigError(f"config {source}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"config {source}: must be a mapping of option: value")
    values: dict[str, Any] = {}
    for key, value in doc.items():
        kind = KEYS.get(str(key))
        if kind is None:
            raise ConfigError(f"config {source}: unknown key {key!r} (known: {', '.join(KEYS)})")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"config {source}: {key}: {value!r} has the wrong type")
        if key == "labels":
            value = {str(k): _text(v) for k, v in cast(dict[Any, Any], value).items()}
        elif isinstance(value, LiteralInt):
            value = int(value)
        values[str(key)] = value
    for key in REQUIRED:
        if key not in values:
            raise ConfigError(f"config {source}: {key} is required")
    return FileConfig(Path(source), values)


def load_config(path: Path) -> FileConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read it: {exc.strerror}") from None
    return parse_config(text, str(path))


def render_config(values: dict[str, Any]) -> str:
    """The file ``shoal fleet install`` writes: fixed key order, so same values, same bytes."""
    lines = ["# written by shoal fleet install; shoal-peer run --config reads it"]
    for key in KEYS:
        if key not in values or values[key] is None:
            continue
        value = values[key]
        if key == "labels":
            if not value:
                continue
            lines.append("labels:")
            lines += [f"  {_quote(k)}: {_quote(v)}" for k, v in sorted(value.items())]
        elif isinstance(value, str):
            lines.append(f"{key}: {_quote(value)}")
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


def _text(value: Any) -> str:
    return value.text if isinstance(value, LiteralInt) else str(value)


def _quote(text: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(str(text))


# What `shoal-peer reload` applies to a running daemon: its labels (and the log level, which is
# no PeerConfig field). Every other option is read once, at start: a change needs a restart.
LIVE = ("labels",)
_OPTION = {"keep_releases": "keep", "torrent_settings": "torrent-setting"}


def restart_needed(running: PeerConfig, new: PeerConfig) -> list[str]:
    """The options (as ``shoal-peer run`` names them) whose new value only a restart applies."""
    from dataclasses import fields

    return sorted(
        _OPTION.get(f.name, f.name.replace("_", "-"))
        for f in fields(running)
        if f.name not in LIVE and getattr(running, f.name) != getattr(new, f.name)
    )
