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
from common.errors import ConfigError
from common.torrent import SliceSeeds, TorrentSession
from common.torrent.slices import WARM_SLICES
from seeder import views
from seeder.build import build_release
from seeder.control import ControlServer, Handler
from seeder.engine import Engine
from seeder.store import Store
from seeder.tracker import Tracker

log = logging.getLogger("shoal.seeder")


@dataclass(frozen=True)
class SeederConfig:
    data_dir: Path
    listen: Address
    torrent_listen: Address | None = None
    tracker_listen: Address | None = None
    piece_size: int = 0
    slices: bool = True
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
            for manifest, torrent, _ in store.releases():
                torrents.seed(torrent, data / "releases" / manifest.release_id)
            tracker = Tracker()
            tracker_port = await nursery.start(tracker.serve, tracker_at.host, tracker_at.port)
            tracker_url = f"http://{tracker_at.host}:{tracker_port}/announce"
            slice_seeds = SliceSeeds(
                bt.host, overrides=config.torrent_settings, warm=WARM_SLICES if config.slices else 0
            )
            await nursery.start(slice_seeds.run)

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
            methods = _methods(config, store, engine, torrents, slice_seeds, tracker_url)
            server = ControlServer(store, engine, methods=methods)
            port = await nursery.start(server.serve, listen.host, listen.port)
            addrs = SeederAddresses(listen.with_port(port), tracker_at.with_port(tracker_port), bt)
            log.info("seeder ready: control %s, tracker %s, bittorrent %s", *vars(addrs).values())
            task_status.started(addrs)
    finally:
        store.close()


def _methods(
    config: SeederConfig,
    store: Store,
    engine: Engine,
    full_seed: TorrentSession,
    slice_seeds: SliceSeeds,
    tracker_url: str,
) -> dict[str, Handler]:
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
        full_seed.seed(built.torrent, built.directory)
        log.info("release %s %s", built.manifest.release_id, "built" if created else "exists")
        return {"release": built.manifest.to_dict(), "created": created}

    async def release_list(params: dict[str, Any]) -> dict[str, Any]:
        return {"releases": [views.release(mf, at) for mf, _, at in store.releases()]}

    async def rollout_start(params: dict[str, Any]) -> dict[str, Any]:
        rollout = engine.start_rollout(str(params["release_id"]), str(params.get("hosts", "all")))
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
        }

    return {
        "seeder.stats": seeder_stats,
        "release.build": release_build,
        "release.list": release_list,
        "rollout.start": rollout_start,
        "rollout.status": rollout_status,
        "hosts.list": hosts_list,
    }
