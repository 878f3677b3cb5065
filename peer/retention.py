"""Which staged releases a peer keeps, and dropping the others from disk *and* from the swarm.

A pruned release stops being seeded before its files go: libtorrent must never serve (or fail
on) a file that was deleted under it. ``current`` and ``previous`` are always kept.
"""

from __future__ import annotations

import logging

from common.errors import ShoalError
from peer.context import PeerContext

log = logging.getLogger("shoal.peer")


def prune_releases(ctx: PeerContext) -> list[str]:
    """Keep the newest ``ctx.keep_releases`` staged releases (plus current and previous);
    stop seeding and delete the rest. Returns the pruned release ids; never raises."""
    try:
        staged = ctx.journal.releases()
    except ShoalError as exc:
        log.error("cannot list staged releases to prune: %s", exc)
        return []
    infohashes = {str(mf["release_id"]): str(mf.get("infohash", "")) for mf, _, _ in staged}
    doomed = ctx.layout.prunable(list(infohashes), keep=ctx.keep_releases)
    for release_id in doomed:
        try:
            ctx.torrents.remove(infohashes[release_id])
            ctx.layout.delete(release_id)
            ctx.journal.remove_release(release_id)
        except ShoalError as exc:
            log.error("cannot prune release %s: %s", release_id, exc)
            continue
        log.info("pruned release %s (no longer seeded)", release_id)
    return doomed
