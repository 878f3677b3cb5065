"""``shoal-peer run --config FILE``: run options from a YAML file; command-line flags win.

The file is a mapping whose keys are the long options of ``shoal-peer run`` (``data-dir`` or
``data_dir``) plus ``log-level``; ``labels`` may be a mapping or ``k=v,k=v``, ``torrent-setting``
a mapping or a list of ``KEY=VALUE``. Unknown keys, and values of the wrong kind, are errors
naming the key and the file. The values are fed through the same argparse types as the flags, so
``min-free: 64M`` in the file means what ``--min-free 64M`` means.

Which options a running daemon can take without a restart (``shoal-peer reload``) is decided
here too: :data:`LIVE`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.yamldoc import load_yaml

LIVE = ("labels", "log_level")  # applied by a reload; every other option needs a restart
NOT_IN_FILE = ("config", "command", "help")


def read_config(path: Path, allowed: set[str]) -> dict[str, Any]:
    """The file's options as argparse destinations -> values (strings where argparse converts)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8") from None
    try:
        data = load_yaml(text)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of option: value")
    out: dict[str, Any] = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in allowed or dest in NOT_IN_FILE:
            known = ", ".join(sorted(d.replace("_", "-") for d in allowed - set(NOT_IN_FILE)))
            raise ConfigError(f"config file {path}: unknown option {key!r} (known: {known})")
        out[dest] = _value(path, str(key), dest, value)
    return out


def _value(path: Path, key: str, dest: str, value: object) -> Any:
    if dest == "labels" and isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if dest == "torrent_setting":
        if isinstance(value, dict):
            return [f"{k}={v}" for k, v in value.items()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"config file {path}: {key} must be a mapping or a list of KEY=VALUE")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"config file {path}: {key} must be a single value, not {value!r}")
    return str(value)


def apply_config(parser: argparse.ArgumentParser, sub: argparse.ArgumentParser, path: Path) -> None:
    """Make the file's values ``sub``'s defaults (so flags still override them), typed by the
    option's own converter, and no longer required when the file gives them."""
    actions = {a.dest: a for a in sub._actions}
    values = read_config(path, set(actions) | {"log_level"})
    for dest, value in values.items():
        if dest == "log_level":
            parser.set_defaults(log_level=value)
            continue
        action = actions[dest]
        if action.type is not None and isinstance(value, str):
            try:
                value = action.type(value)  # type: ignore[operator]
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise ConfigError(f"config file {path}: {dest.replace('_', '-')}: {exc}") from None
        action.default = value
        action.required = False


def restart_needed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The options that changed and that only a restart applies, as option names."""
    return sorted(
        k.replace("_", "-")
        for k in set(old) | set(new)
        if k not in LIVE and old.get(k) != new.get(k)
    )
