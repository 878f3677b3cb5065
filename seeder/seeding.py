"""Which releases the seeder's full seed offers: the newest ``--keep-releases``, plus those a
running rollout or a host's current/previous release needs (:mod:`seeder.retention` decides,
this module applies it to the libtorrent sessions)."""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from common.errors import ShoalError
from common.torrent import SliceSeeds, TorrentSession, torrent_infohash
from seeder.build import V1_TORRENT
from seeder.retention import needed_by_hosts, releases_to_seed
from seeder.store import Store

log = logging.getLogger("shoal.seeder.seeding")

RECONCILE_INTERVAL = 5.0  # seconds between re-derivations of the seeded releases
HISTORY = 1000  # latest rollouts looked at for the releases that live ones ship


class Seeding:
    """Keeps the seeded releases equal to :func:`seeder.retention.releases_to_seed`: the newest
    `keep`, plus those a running rollout or a host's current/previous needs. Re-derived from the
    store on every change it hears of and every RECONCILE_INTERVAL (hosts report new currents)."""

    def __init__(
        self,
        store: Store,
        full_seed: TorrentSession,
        slice_seeds: SliceSeeds,
        releases_dir: Path,
        keep: int,
    ) -> None:
        self.store, self.full_seed, self.slice_seeds = store, full_seed, slice_seeds
        self.releases_dir, self.keep = releases_dir, keep

    def wanted(self) -> set[str]:
        built_at = {mf.release_id: at for mf, _, at in self.store.releases()}
        pinned = needed_by_hosts((h.current, h.previous) for h in self.store.hosts())
        live = set(self.store.rollout_ids(live_only=True, limit=HISTORY))
        pinned |= {
            s["release_id"] for s in self.store.summaries(HISTORY) if s["rollout_id"] in live
        }
        return releases_to_seed(built_at, self.keep, pinned)

    def reconcile(self) -> list[str]:
        """Seed what is wanted and stop seeding the rest; returns the ids seeded now."""
        wanted = self.wanted()
        seeded = []
        for manifest, torrent, _ in self.store.releases():
            rid, ih = manifest.release_id, manifest.infohash
            v1 = self._v1_copy(rid)
            if rid in wanted:
                seeded.append(rid)
                for kind, data in (("", torrent), (" (v1 copy)", v1)):
                    if data is None or self.full_seed.has(torrent_infohash(data)):
                        continue
                    try:
                        self.full_seed.seed(data, self.releases_dir / rid)
                        log.info("seeding release %s%s", rid, kind)
                    except ShoalError as exc:
                        log.error("cannot seed release %s%s: %s", rid, kind, exc)
            elif self.full_seed.has(ih):
                self.full_seed.remove(ih)
                self.slice_seeds.drop(ih)
                if v1 is not None and self.full_seed.has(v1_ih := torrent_infohash(v1)):
                    self.full_seed.remove(v1_ih)
                log.info("stopped seeding release %s (beyond --keep-releases %d)", rid, self.keep)
        return seeded

    def _v1_copy(self, release_id: str) -> bytes | None:
        """The v1-only torrent, if an operator ever exported one (release torrent --v1)."""
        path = self.releases_dir / release_id / V1_TORRENT
        try:
            return path.read_bytes() if path.is_file() else None
        except OSError:
            return None

    def seeded(self) -> list[str]:
        return sorted(
            mf.release_id for mf, _, _ in self.store.releases() if self.full_seed.has(mf.infohash)
        )

    async def run(self) -> None:
        while True:
            await trio.sleep(RECONCILE_INTERVAL)
            try:
                self.reconcile()
            except ShoalError as exc:  # e.g. libtorrent refused a removal: try again later
                log.error("cannot update the seeded releases: %s", exc)
