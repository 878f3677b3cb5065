"""The seeder service: control server, tracker, libtorrent seeding and the rollout engine.

``run_seeder`` starts every part in one nursery and reports the bound addresses through
``task_status`` once all of them listen, so tests and the demo can start a real seeder and know
when it is ready.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from common.addr import Address
from common.crypto.tokens import ca_pin
from common.errors import ConfigError, TorrentError
from common.join import JOIN_PORT_OFFSET
from common.release import Manifest
from common.torrent import (
    SliceSeeds,
    TorrentSession,
    piece_size_of,
    tracker_hashes,
)
from common.torrent.slices import WARM_SLICES
from seeder import closed_swarm, views
from seeder.admission import Limits
from seeder.announcekeys import AnnounceKeys, admission, load_secret
from seeder.app_service import Apps
from seeder.authority import SeederCA
from seeder.build import BuiltRelease, v1_torrent
from seeder.caller import current_caller
from seeder.connections import Connections
from seeder.control import ControlServer, Handler
from seeder.engine import Engine
from seeder.enrollment import enrollment_methods
from seeder.events import EventHub
from seeder.join import start_join_listener
from seeder.live import LiveLog
from seeder.preflight import DEFAULT_TIMEOUT, Preflights, release_facts
from seeder.promotion import ENV_LABEL
from seeder.promotion_gate import PromotionGate, promotion_methods
from seeder.release_service import Releases
from seeder.retention import KEEP_RELEASES
from seeder.seeding import Seeding
from seeder.selector import select_hosts
from seeder.signatures import ReleaseSignatures, load_release_signer
from seeder.stageplan import UnknownRelease
from seeder.store import Store
from seeder.streams import Watching, publisher
from seeder.swarm_access import admitting
from seeder.swarms import DEFAULT_INTERVAL
from seeder.tokens import token_methods
from seeder.tracker import Tracker
from seeder.upgrades import Uploads, upgrade_methods

log = logging.getLogger("shoal.seeder")


TRACKER_PORT_OFFSET = 1  # default tracker port: the control port + 1 (7701)
TORRENT_PORT_OFFSET = 2  # default BitTorrent port of the full seed: the control port + 2 (7702)


@dataclass(frozen=True)
class SeederConfig:
    data_dir: Path
    listen: Address
    torrent_listen: Address | None = None
    tracker_listen: Address | None = None
    join_listen: Address | None = None
    tracker_interval: int = DEFAULT_INTERVAL
    piece_size: int = 0
    slices: bool = True
    keep_releases: int = KEEP_RELEASES
    torrent_settings: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)


def default_addresses(config: SeederConfig) -> tuple[Address, Address]:
    """(tracker, BitTorrent) listen addresses: as configured, else the control address with its
    port + 1 and + 2. Fixed ports matter: every torrent carries the tracker's URL for good, so a
    tracker on another port after a restart would orphan every release built before it. Only a
    control port of 0 (tests) gives ephemeral ports for all three."""
    tracker = config.tracker_listen or _derived(
        config.listen, TRACKER_PORT_OFFSET, "--tracker-listen"
    )
    torrent = config.torrent_listen or _derived(
        config.listen, TORRENT_PORT_OFFSET, "--torrent-listen"
    )
    return _public(tracker, "--tracker-listen"), _public(torrent, "--torrent-listen")


def join_address(config: SeederConfig) -> Address:
    """The join listener's address: as configured, else the control address with its port + 3
    (what ``shoal-peer join`` dials when given the control address)."""
    return config.join_listen or _derived(config.listen, JOIN_PORT_OFFSET, "--join-listen")


def _derived(listen: Address, offset: int, option: str) -> Address:
    if listen.port == 0:
        return listen
    if listen.port + offset > 65535:
        raise ConfigError(
            f"--listen port {listen.port} leaves no port {listen.port + offset} for {option};"
            f" pass {option} explicitly"
        )
    return listen.with_port(listen.port + offset)


@dataclass(frozen=True)
class SeederAddresses:
    control: Address
    tracker: Address
    torrent: Address
    join: Address


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
    authority = SeederCA(data)  # refuses to start without an identity, naming the command
    server_tls = authority.open_server_tls(dt.datetime.now(dt.UTC))
    (data / "releases").mkdir(parents=True, exist_ok=True)
    listen = _public(config.listen, "--listen")
    tracker_at, bt = default_addresses(config)
    signer = load_release_signer(data)  # no key, no seeder: every release it ships is signed
    store = Store(data / "seeder.db")
    try:
        signatures = ReleaseSignatures(store, signer)
        signatures.reconcile()
        keys = AnnounceKeys(load_secret(data), enrolled=closed_swarm.enrolled(store, authority))
        try:
            torrents = TorrentSession(bt.host, bt.port, overrides=config.torrent_settings)
        except TorrentError as exc:
            raise ConfigError(f"BitTorrent port {bt} (--torrent-listen): {exc}") from None
        torrents.set_allowed_peers(())  # closed until SeederAdmission opens it to the members
        torrents.set_tracker_key(keys.origin_key())
        async with trio.open_nursery() as nursery:
            await nursery.start(torrents.run)
            bt = bt.with_port(torrents.listen_port)
            tracker = Tracker(
                interval=config.tracker_interval,
                origins=frozenset({(bt.host, bt.port)}),
                origin_ok=_origin_policy(store, config.slices),
                admit=admission(keys, time.time),
            )
            try:
                tracker_port = await nursery.start(tracker.serve, tracker_at.host, tracker_at.port)
            except OSError as exc:
                raise ConfigError(
                    f"tracker cannot listen on {tracker_at} (--tracker-listen): {exc.strerror}"
                ) from None
            tracker_url = f"http://{tracker_at.host}:{tracker_port}/announce"
            slice_seeds = SliceSeeds(
                bt.host, overrides=config.torrent_settings, warm=WARM_SLICES if config.slices else 0
            )
            slice_seeds.set_allowed_peers(())
            await nursery.start(slice_seeds.run)
            # The full seed announces (it is the swarm's origin, listed by the tracker), after
            # the tracker listens, so the first announce of a restart is not refused.
            seeding = Seeding(store, torrents, slice_seeds, data / "releases", config.keep_releases)
            seeding.reconcile()
            nursery.start_soon(seeding.run)

            async def offer_slices(release_id: str, count: int) -> list[tuple[str, int]]:
                found = store.release(release_id)
                assert found is not None, release_id
                return await slice_seeds.endpoints(found[1], data / "releases" / release_id, count)

            hub = EventHub()
            engine = Engine(
                store,
                seeder_bt=(bt.host, bt.port),
                slice_seeds=offer_slices if config.slices else None,
                on_event=publisher(hub),
            )
            admitted = admitting(engine, torrents, slice_seeds)  # before any Stage goes out
            await nursery.start(engine.run)
            await nursery.start(admitted.run)
            watching = Watching(store, engine, hub, LiveLog())
            preflights = Preflights()
            methods = _methods(
                config, store, engine, seeding, slice_seeds, tracker, tracker_url, bt
            )
            methods.update(closed_swarm.granting(methods, admitted, keys, tracker_url))
            methods.update(watching.methods())
            methods.update(promotion_methods(PromotionGate(store), engine.connected))
            apps = Apps(store, data)

            async def publish(built: BuiltRelease) -> bool:
                created = store.add_release(built.manifest, built.torrent, time.time())
                signatures.ensure(built.manifest)
                seeding.reconcile()
                await _until_listed(tracker, built.torrent, bt)
                return created

            releases = Releases(
                store,
                apps,
                releases_dir=data / "releases",
                tracker_url=tracker_url,
                piece_size=config.piece_size,
                publish=publish,
            )
            methods.update(apps.methods())
            methods.update(releases.methods())
            methods.update(
                _upgrade_methods(config, store, signatures, seeding, tracker, tracker_url, bt)
            )
            methods["rollout.preflight"] = _preflight_method(config, store, engine, preflights)
            connections = Connections()
            methods.update(enrollment_methods(authority, connections))
            methods.update(token_methods(store, ca_pin(authority.ca_pem)))
            revoke = methods["hosts.revoke"]
            methods["hosts.revoke"] = closed_swarm.leaving_the_swarm(revoke, engine)
            server = ControlServer(
                store,
                engine,
                methods=methods,
                tls=server_tls,
                streams={**watching.streams(), **releases.streams()},
                observe=watching.observe,
                preflights=preflights,
                tracker_key=keys.host_key,
                labels_of=authority.labels,
                connections=connections,
                limits=config.limits,
            )
            join_at = await start_join_listener(nursery, join_address(config), store, authority)
            port = await nursery.start(server.serve, listen.host, listen.port)
            addrs = SeederAddresses(
                listen.with_port(port), tracker_at.with_port(tracker_port), bt, join_at
            )
            log.info(
                "seeder ready: control %s, tracker %s, bittorrent %s, join %s",
                *vars(addrs).values(),
            )
            task_status.started(addrs)
    finally:
        store.close()


LISTED_WAIT = 3.0  # seconds a build waits for the full seed's first announces


async def _until_listed(tracker: Tracker, torrent: bytes, origin: Address) -> None:
    """Wait (briefly) until the tracker lists the full seed in every swarm of a new release,
    so a client handed the torrent right after the build finds the seeder on its first
    announce instead of one interval later."""
    with trio.move_on_after(LISTED_WAIT):
        await tracker.wait_listed((origin.host, origin.port), tracker_hashes(torrent))


def _origin_policy(store: Store, slices: bool) -> Callable[[str], bool]:
    """Whom the tracker may hand the seeder's full seed: anyone but the fleet's own hosts while
    slices are on (a rollout gives each host its slice seed instead; the full seed would hand it
    any piece and the seeder would send pieces twice). Operators' fetches and other clients
    get it, so a release nobody has staged can still be fetched."""
    if not slices:
        return lambda ip: True

    def origin_ok(ip: str) -> bool:  # asked on every announce: one indexed lookup, not a scan
        return not store.is_host_address(ip)

    return origin_ok


def _methods(
    config: SeederConfig,
    store: Store,
    engine: Engine,
    seeding: Seeding,
    slice_seeds: SliceSeeds,
    tracker: Tracker,
    tracker_url: str,
    full_seed_at: Address,
) -> dict[str, Handler]:
    full_seed = seeding.full_seed
    releases_dir = config.data_dir / "releases"
    promotions = PromotionGate(store)

    def known_release(params: dict[str, Any]) -> tuple[Manifest, bytes]:
        release_id = str(params["release_id"])
        found = store.release(release_id)
        if found is None:
            raise UnknownRelease(
                f"no release {release_id!r} on this seeder (`shoal release list` shows them)"
            )
        return found

    async def release_torrent(params: dict[str, Any]) -> dict[str, Any]:
        manifest, torrent = known_release(params)
        kind = str(params.get("kind", "hybrid"))
        if kind == "v1":
            torrent = await _v1_copy(manifest, torrent)
            full_seed.seed(torrent, releases_dir / manifest.release_id)
            await _until_listed(tracker, torrent, full_seed_at)
        elif kind != "hybrid":
            raise ConfigError(f"unknown torrent kind {kind!r} (hybrid or v1)")
        return {"release": manifest.to_dict(), "torrent": torrent, "kind": kind}

    async def _v1_copy(manifest: Manifest, torrent: bytes) -> bytes:
        """The release's v1-only torrent: same archive, tracker and piece size (made once)."""
        directory = releases_dir / manifest.release_id
        return await trio.to_thread.run_sync(
            lambda: v1_torrent(directory, manifest.archive, tracker_url, piece_size_of(torrent))
        )

    async def release_fetch(params: dict[str, Any]) -> dict[str, Any]:
        """What a hand fetch needs: the torrent, and the full seed to dial besides the tracker."""
        manifest, torrent = known_release(params)
        return {
            "release": manifest.to_dict(),
            "torrent": torrent,
            "tracker": tracker_url,
            "seeds": [[full_seed_at.host, full_seed_at.port]],
        }

    def options(params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k not in ("release_id", "hosts", "to", "force")}

    def admit(params: dict[str, Any]) -> Any:
        return promotions.admit(force=bool(params.get("force", False)), caller=current_caller())

    async def rollout_start(params: dict[str, Any]) -> dict[str, Any]:
        rollout = engine.start_rollout(
            str(params["release_id"]),
            str(params.get("hosts") or "all"),
            options(params),
            admit=admit(params),
        )
        seeding.reconcile()  # an old release rolled out again is seeded again
        return {"rollout": await views.rollout(store, rollout, 0, steps=False)}

    async def rollout_plan(params: dict[str, Any]) -> dict[str, Any]:
        release_id = str(params["release_id"])
        plan, opts, targets = engine.plan(
            release_id, str(params.get("hosts") or "all"), options(params)
        )
        promotion = promotions.preview(
            release_id, targets, force=bool(params.get("force", False)), caller=current_caller()
        )
        return {"plan": {**plan.to_dict(), "options": opts.to_dict(), "promotion": promotion}}

    async def rollback(params: dict[str, Any]) -> dict[str, Any]:
        to = params.get("to")
        rollout = engine.start_rollback(
            str(params.get("hosts") or "all"),
            None if to is None else str(to),
            options(params),
            admit=admit(params),
        )
        seeding.reconcile()  # the releases it goes back to are seeded again
        return {"rollout": await views.rollout(store, rollout, 0, steps=False)}

    async def rollout_status(params: dict[str, Any]) -> dict[str, Any]:
        rollout_id = params.get("rollout_id")
        model = engine.model(str(rollout_id)) if rollout_id else engine.latest()
        limit = int(params.get("timeline_limit", views.TIMELINE_LIMIT))
        return {"rollout": await views.rollout(store, model, limit)}

    def operator(action: str) -> Handler:
        async def handle(params: dict[str, Any]) -> dict[str, Any]:
            model = engine.operator(
                str(params["rollout_id"]), action, kill=bool(params.get("now", False))
            )
            return {"rollout": await views.rollout(store, model, 0, steps=False)}

        return handle

    async def rollout_list(params: dict[str, Any]) -> dict[str, Any]:
        items = store.summaries(int(params.get("limit", 50)))
        forced = store.forced_by([i["rollout_id"] for i in items])
        return {"rollouts": [{**i, "forced_by": forced.get(i["rollout_id"], "")} for i in items]}

    async def hosts_list(params: dict[str, Any]) -> dict[str, Any]:
        env = params.get("env")
        records = [h for h in store.hosts() if env is None or h.labels.get(ENV_LABEL, "") == env]
        return {
            "hosts": views.hosts(
                records,
                engine.connected(),
                engine.last_seen,
                engine.host_target,
                engine.versions,
            )
        }

    async def seeder_stats(params: dict[str, Any]) -> dict[str, Any]:
        totals = [full_seed.stats(), slice_seeds.stats()]
        return {
            "uploaded": sum(t.uploaded for t in totals),
            "downloaded": sum(t.downloaded for t in totals),
            "seeding": seeding.seeded(),
        }

    return {
        "seeder.stats": seeder_stats,
        "release.torrent": release_torrent,
        "release.fetch": release_fetch,
        "rollout.start": rollout_start,
        "rollout.status": rollout_status,
        "rollout.show": rollout_status,
        "rollout.plan": rollout_plan,
        "rollout.pause": operator("pause"),
        "rollout.resume": operator("resume"),
        "rollout.abort": operator("abort"),
        "rollout.list": rollout_list,
        "rollback.start": rollback,
        "hosts.list": hosts_list,
    }


def _upgrade_methods(
    config: SeederConfig,
    store: Store,
    signatures: ReleaseSignatures,
    seeding: Seeding,
    tracker: Tracker,
    tracker_url: str,
    full_seed_at: Address,
) -> dict[str, Handler]:
    """``upgrade.*``: a wheelhouse of shoal becomes a release (seeder/upgrades.py)."""

    async def register(build: Callable[[], BuiltRelease]) -> dict[str, Any]:
        built = await trio.to_thread.run_sync(build)
        created = store.add_release(built.manifest, built.torrent, time.time())
        signatures.ensure(built.manifest)
        seeding.reconcile()
        await _until_listed(tracker, built.torrent, full_seed_at)
        return {"release": built.manifest.to_dict(), "created": created, "warnings": []}

    uploads = Uploads(config.data_dir / "uploads")
    releases = config.data_dir / "releases"
    return upgrade_methods(uploads, register, releases, tracker_url, config.piece_size)


def _preflight_method(
    config: SeederConfig, store: Store, engine: Engine, preflights: Preflights
) -> Handler:
    """``rollout.preflight``: every target's checks for a release (see seeder.preflight)."""

    async def rollout_preflight(params: dict[str, Any]) -> dict[str, Any]:
        release_id = str(params["release_id"])
        found = store.release(release_id)
        if found is None:
            raise UnknownRelease(f"unknown release {release_id!r}")
        targets = select_hosts(str(params.get("hosts", "all")), store.hosts())
        release_dir = config.data_dir / "releases" / release_id
        facts = await trio.to_thread.run_sync(release_facts, found[0], release_dir)
        timeout = float(params.get("timeout", DEFAULT_TIMEOUT))
        rows = await preflights.run(facts, targets, engine.connected(), engine.send_to, timeout)
        return {"release_id": release_id, "ok": all(r["ok"] for r in rows), "hosts": rows}

    return rollout_preflight
