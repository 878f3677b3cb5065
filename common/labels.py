"""Host labels as operators type them: ``k=v,k=v``."""

from __future__ import annotations

from common.errors import ConfigError


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ConfigError(f"label {part!r} is not KEY=VALUE")
        labels[key] = value
    return labels
