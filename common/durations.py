"""Durations as operators type them: ``90d``, ``12h``, ``30m``, ``45s`` or plain seconds."""

from __future__ import annotations

import datetime as dt
import math

from common.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, *, what: str = "--ttl") -> dt.timedelta:
    """A positive duration; ConfigError naming ``what`` otherwise."""
    body, unit = text.strip(), "s"
    if body[-1:].lower() in _UNITS:
        body, unit = body[:-1], body[-1].lower()
    try:
        value = float(body) * _UNITS[unit]
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a duration (e.g. 90d, 12h, 30m, 45s)") from None
    if not value > 0 or not math.isfinite(value) or value > 100 * 365 * 86400:
        raise ConfigError(f"{what} {text!r} must be positive and at most 100 years")
    return dt.timedelta(seconds=value)
