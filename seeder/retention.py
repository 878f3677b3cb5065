"""Which releases the seeder keeps seeding: the newest few, plus every release still needed.

Seeding costs a libtorrent torrent (memory, file handles, announces) per release, forever. The
seeder keeps ``keep`` releases (newest first by build time) and, whatever their age, every
release that a running rollout ships or that a host runs (its ``current``) or would roll back to
(its ``previous``: the release live on it before the current one). The rest
stay in the store and on disk, and are seeded again the moment a rollout needs one. Pure logic:
the service derives the set each time from the store instead of keeping a second copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

KEEP_RELEASES = 5


@dataclass(frozen=True)
class Activation:
    """A release that went live on a host (a rollout target that succeeded), and when."""

    host: str
    release_id: str
    at: float


def needed_by_hosts(currents: Iterable[str | None], activations: Iterable[Activation]) -> set[str]:
    """Every host's current release (as the host reports it) and, from the seeder's own
    history, the last two releases that went live on each host: its current and the previous
    one it would roll back to."""
    needed = {c for c in currents if c is not None}
    by_host: dict[str, list[Activation]] = {}
    for a in activations:
        by_host.setdefault(a.host, []).append(a)
    for history in by_host.values():
        latest: list[str] = []
        for a in sorted(history, key=lambda a: a.at, reverse=True):
            if a.release_id not in latest:
                latest.append(a.release_id)
            if len(latest) == 2:
                break
        needed.update(latest)
    return needed


def releases_to_seed(built_at: Mapping[str, float], keep: int, pinned: Iterable[str]) -> set[str]:
    """The newest `keep` releases and every pinned one that exists (ties: by id, stable)."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, not {keep}")
    newest = sorted(built_at, key=lambda r: (built_at[r], r), reverse=True)[:keep]
    return set(newest) | {r for r in pinned if r in built_at}
