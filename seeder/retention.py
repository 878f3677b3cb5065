"""Which releases the seeder keeps seeding: the newest few, plus every release still needed.

Seeding costs a libtorrent torrent (memory, file handles, announces) per release, forever. The
seeder keeps ``keep`` releases (newest first by build time) and, whatever their age, every
release that a running rollout ships or that a host runs (its ``current``) or would roll back to
(its ``previous``: the newest release it has staged that is older than its current). The rest
stay in the store and on disk, and are seeded again the moment a rollout needs one. Pure logic:
the service derives the set each time from the store instead of keeping a second copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

KEEP_RELEASES = 5


@dataclass(frozen=True)
class HostReleases:
    current: str | None
    staged: Sequence[str]


def needed_by_hosts(hosts: Iterable[HostReleases], built_at: Mapping[str, float]) -> set[str]:
    """Each host's current release and its rollback target (see the module docstring)."""
    needed: set[str] = set()
    for host in hosts:
        if host.current is None:
            continue
        needed.add(host.current)
        now_at = built_at.get(host.current)
        if now_at is None:
            continue
        older = [r for r in host.staged if r != host.current and built_at.get(r, now_at) < now_at]
        if older:
            needed.add(max(older, key=lambda r: built_at[r]))
    return needed


def releases_to_seed(built_at: Mapping[str, float], keep: int, pinned: Iterable[str]) -> set[str]:
    """The newest `keep` releases and every pinned one that exists (ties: by id, stable)."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, not {keep}")
    newest = sorted(built_at, key=lambda r: (built_at[r], r), reverse=True)[:keep]
    return set(newest) | {r for r in pinned if r in built_at}
