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

KEEP_RELEASES = 5


def needed_by_hosts(hosts: Iterable[tuple[str | None, str | None]]) -> set[str]:
    """Every host's ``(current, previous)``: what it runs and what it would roll back to (the
    store keeps both, written as activations succeed and as hosts report in)."""
    return {release for pair in hosts for release in pair if release is not None}


def releases_to_seed(built_at: Mapping[str, float], keep: int, pinned: Iterable[str]) -> set[str]:
    """The newest `keep` releases and every pinned one that exists (ties: by id, stable)."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, not {keep}")
    newest = sorted(built_at, key=lambda r: (built_at[r], r), reverse=True)[:keep]
    return set(newest) | {r for r in pinned if r in built_at}
