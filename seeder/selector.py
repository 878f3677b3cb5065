"""Host selectors: which hosts a rollout targets (``all``, ``NAME,NAME``, ``LABEL=VALUE,...``)."""

from __future__ import annotations

from collections.abc import Iterable

from common.errors import ShoalError
from seeder.store import HostRecord


class SelectorError(ShoalError):
    """A --hosts selector is malformed or matches no host."""


def select_hosts(selector: str, hosts: Iterable[HostRecord]) -> list[str]:
    """Resolve ``all``, ``NAME,NAME,...`` or ``LABEL=VALUE[,LABEL=VALUE]`` to host names."""
    known = {h.name: h for h in hosts}
    selector = selector.strip()
    if not selector:
        raise SelectorError("empty host selector")
    if selector == "all":
        chosen = sorted(known)
    elif "=" in selector:
        wanted: dict[str, str] = {}
        for part in selector.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise SelectorError(f"host selector {selector!r}: {part!r} is not LABEL=VALUE")
            wanted[key.strip()] = value.strip()
        chosen = sorted(
            n for n, h in known.items() if all(h.labels.get(k) == v for k, v in wanted.items())
        )
    else:
        names = [n.strip() for n in selector.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SelectorError(f"unknown host(s): {', '.join(unknown)}")
        chosen = sorted(set(names))
    if not chosen:
        raise SelectorError(f"host selector {selector!r} matches no host")
    return chosen
