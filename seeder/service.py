"""The seeder service: control server, tracker, libtorrent seeding and the rollout engine.

``run_seeder`` starts every part in one nursery and reports the bound addresses through
``task_status`` once all of them listen, so tests and the demo can start a real seeder and know
when it is ready.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from common.addr import Address
from common.errors import ConfigError, ShoalError
from common.torrent import SliceSeeds, TorrentSession
from seeder import views
from seeder.build import build_release
from seeder.control import ControlServer, Handler
from seeder.engine import Engine
from seeder.retention import KEEP_RELEASES, Activation, needed_by_hosts, releases_to_seed
from seeder.store import FINAL_STATES, Store
from seeder.tracker import Tracker

log = logging.getLogger("shoal.seeder")

RECONCILE_INTERVAL = 5.0  # seconds between re-derivations of the seeded releases
HISTORY = 1000  # latest rollouts looked at for each host's current and previous release


@dataclass(frozen=True)
class SeederConfig:
    data_dir: Path
    listen: Address
    torrent_listen: Address | None = None
    tracker_listen: Address | None = None
    piece_size: int = 0
    slices: bool = True
    keep_releases: int = KEEP_RELEASES
    torrent_settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SeederAddresses:
    control: Address
    tracker: Address
    torrent: Address


def _public(addr: Address, what: str) -> Address:
    if addr.host in ("0.0.0.0", "::", ""):
        raise ConfigError(f"{what} must listen on a concrete IP that peers can reach, not {addr}")
    return addr


async def run_seeder(
    config: SeederConfig,
    *,
    task_status: trio.TaskStatus[SeederAddresses] = trio.TASK_STATUS_IGNORED,
) -> None:
    data = config.data_dir
    (data / "releases").mkdir(parents=True, exist_ok=True)
    listen = _public(config.listen, "--listen")
    bt = _public(config.torrent_listen or listen.with_port(0), "--torrent-listen")
    tracker_at = _public(config.tracker_listen or listen.with_port(0), "--tracker-listen")
    store = Store(data / "seeder.db")
    store.mark_all_disconnected()
    try:
        torrents = TorrentSession(bt.host, bt.port, overrides=config.torrent_settings)
        async with trio.open_nursery() as nursery:
            await nursery.start(torrents.run)
            bt = bt.with_port(torrents.listen_port)
            slice_seeds = SliceSeeds(bt.host, overrides=config.torrent_settings)
            await nursery.start(slice_seeds.run)
            seeding = Seeding(store, torrents, slice_seeds, data / "releases", config.keep_releases)
            seeding.reconcile()
            nursery.start_soon(seeding.run)
            tracker = Tracker()
            tracker_port = await nursery.start(tracker.serve, tracker_at.host, tracker_at.port)
            tracker_url = f"http://{tracker_at.host}:{tracker_port}/announce"

            async def offer_slices(release_id: str, count: int) -> list[tuple[str, int]]:
                found = store.release(release_id)
                assert found is not None, release_id
                return await slice_seeds.endpoints(found[1], data / "releases" / release_id, count)

            engine = Engine(
                store,
                seeder_bt=(bt.host, bt.port),
                slice_seeds=offer_slices if config.slices else None,
            )
            await nursery.start(engine.run)
            methods = _methods(config, store, engine, seeding, slice_seeds, tracker_url)
            server = ControlServer(store, engine, methods=methods)
            port = await nursery.start(server.serve, listen.host, listen.port)
            addrs = SeederAddresses(listen.with_port(port), tracker_at.with_port(tracker_port), bt)
            log.info("seeder ready: control %s, tracker %s, bittorrent %s", *vars(addrs).values())
            task_status.started(addrs)
    finally:
        store.close()


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
        rollouts = self.store.rollouts(limit=HISTORY)
        live = [
            Activation(t.host, r.release_id, t.updated_at)
            for r in rollouts
            for t in r.targets
            if t.state == "succeeded"
        ]
        pinned = needed_by_hosts((h.current for h in self.store.hosts()), live)
        pinned |= {r.release_id for r in rollouts if r.state not in FINAL_STATES}
        return releases_to_seed(built_at, self.keep, pinned)

    def reconcile(self) -> list[str]:
        """Seed what is wanted and stop seeding the rest; returns the ids seeded now."""
        wanted = self.wanted()
        seeded = []
        for manifest, torrent, _ in self.store.releases():
            rid, ih = manifest.release_id, manifest.infohash
            if rid in wanted:
                seeded.append(rid)
                if not self.full_seed.has(ih):
                    try:
                        self.full_seed.seed(torrent, self.releases_dir / rid)
                        log.info("seeding release %s", rid)
                    except ShoalError as exc:
                        log.error("cannot seed release %s: %s", rid, exc)
            elif self.full_seed.has(ih):
                self.full_seed.remove(ih)
                self.slice_seeds.drop(ih)
                log.info("stopped seeding release %s (beyond --keep-releases %d)", rid, self.keep)
        return seeded

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


def _methods(
    config: SeederConfig,
    store: Store,
    engine: Engine,
    seeding: Seeding,
    slice_seeds: SliceSeeds,
    tracker_url: str,
) -> dict[str, Handler]:
    full_seed = seeding.full_seed
    releases_dir = config.data_dir / "releases"

    async def release_build(params: dict[str, Any]) -> dict[str, Any]:
        repo, ref, app = Path(params["repo"]), str(params["ref"]), params.get("app")
        built = await trio.to_thread.run_sync(
            lambda: build_release(
                repo,
                ref,
                app=app,
                releases_dir=releases_dir,
                tracker_url=tracker_url,
                piece_size=config.piece_size,
            )
        )
        created = store.add_release(built.manifest, built.torrent, time.time())
        seeding.reconcile()
        log.info("release %s %s", built.manifest.release_id, "built" if created else "exists")
        return {"release": built.manifest.to_dict(), "created": created}

    async def release_list(params: dict[str, Any]) -> dict[str, Any]:
        return {"releases": [views.release(mf, at) for mf, _, at in store.releases()]}

    async def rollout_start(params: dict[str, Any]) -> dict[str, Any]:
        rollout = engine.start_rollout(str(params["release_id"]), str(params.get("hosts", "all")))
        seeding.reconcile()  # an old release rolled out again is seeded again
        return {"rollout": views.rollout(store, rollout)}

    async def rollout_status(params: dict[str, Any]) -> dict[str, Any]:
        return {"rollout": views.find_rollout(store, params.get("rollout_id"))}

    async def hosts_list(params: dict[str, Any]) -> dict[str, Any]:
        return {"hosts": views.hosts(store, engine.connected())}

    async def seeder_stats(params: dict[str, Any]) -> dict[str, Any]:
        totals = [full_seed.stats(), slice_seeds.stats()]
        return {
            "uploaded": sum(t.uploaded for t in totals),
            "downloaded": sum(t.downloaded for t in totals),
            "seeding": seeding.seeded(),
        }

    return {
        "seeder.stats": seeder_stats,
        "release.build": release_build,
        "release.list": release_list,
        "rollout.start": rollout_start,
        "rollout.status": rollout_status,
        "hosts.list": hosts_list,
    }
