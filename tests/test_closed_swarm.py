"""A closed swarm, with real libtorrent and real processes: sessions admit only the addresses
they are given; the tracker answers only keyed announces; and in a real fleet an outsider who
holds a release's ``.torrent`` gets zero bytes from the peers' and the seeder's BitTorrent ports
and nothing from the tracker, while the rollout completes and an operator's ``--allow`` grant
lets that same outsider download it."""

from __future__ import annotations

import json
import os
import random
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import trio

from common import messages as m
from common.torrent import (
    SliceSeeds,
    TorrentSession,
    bdecode,
    keyed_url,
    make_torrent,
    torrent_infohash,
    tracker_hashes,
)
from seeder.announcekeys import AnnounceKeys, admission
from seeder.engine import Engine
from seeder.localfleet import LocalFleet
from seeder.store import HostRecord, Store
from seeder.swarm_access import admitting
from seeder.tracker import Tracker
from tests.conftest import make_app_repo
from tests.test_engine import HOSTS, RELEASE, Peer

pytestmark = pytest.mark.integration

_NET = random.Random().randrange(64, 250)
A, B, C = (f"127.{_NET}.2.{i}" for i in (1, 2, 3))
PEERS = {"web-1": f"127.{_NET}.3.1", "web-2": f"127.{_NET}.3.2"}
OUTSIDER = f"127.{_NET}.3.99"
PATIENCE = 8.0  # seconds an outsider keeps trying (libtorrent redials every few seconds)


async def start(nursery: trio.Nursery, ip: str) -> TorrentSession:
    session = TorrentSession(ip, 0)
    await nursery.start(session.run)
    return session


async def attempt(session: TorrentSession, torrent: bytes, dest: Path, peers: list) -> int:
    """Try to download for PATIENCE seconds; the payload bytes received."""
    with trio.move_on_after(PATIENCE):
        await session.download(torrent, dest, peers=peers)
    return session.transfer(torrent_infohash(torrent)).downloaded


@pytest.mark.slow
async def test_a_session_admits_only_the_addresses_it_is_given(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    payload = tmp_path / "seed" / "release.bin"
    payload.parent.mkdir()
    payload.write_bytes(os.urandom(2_000_000))
    torrent, ih = make_torrent(payload, tracker_url="http://127.0.0.1:1/announce")
    seeder, member, outsider = [await start(nursery, ip) for ip in (A, B, C)]
    seeder.seed(torrent, payload.parent)
    seeder.set_allowed_peers([B])
    origin = [(A, seeder.listen_port)]
    assert await attempt(outsider, torrent, tmp_path / "c", origin) == 0
    with trio.fail_after(60):
        await member.download(torrent, tmp_path / "b", peers=origin)
    assert (tmp_path / "b" / "release.bin").read_bytes() == payload.read_bytes()
    # the member, in turn, admits only the seeder: the outsider gets nothing there either
    member.set_allowed_peers([A])
    assert await attempt(outsider, torrent, tmp_path / "c", [(B, member.listen_port)]) == 0
    seeder.set_allowed_peers([B, C])  # the outsider joins the swarm: now it may
    with trio.fail_after(60):
        await outsider.download(torrent, tmp_path / "c", peers=origin)
    assert outsider.transfer(ih).downloaded >= payload.stat().st_size
    seeder.set_allowed_peers(None)  # no filter at all


async def test_the_seeder_admits_a_rollouts_targets_before_it_tells_them_to_stage(
    store: Store, nursery: trio.Nursery
) -> None:
    """A target dials the seeder the moment its Stage arrives; if the seeder's IP filter still
    refuses it then, libtorrent does not dial again for min_reconnect_time (60 s): a first
    rollout that waited a minute. So the filters open before the Stage goes out, and close to a
    revoked host at once (not at the next refresh)."""
    for name, (address, port) in HOSTS.items():
        store.upsert_host(HostRecord(name, address, port, {}, None, [], False, 1.0), 1.0)
    full_seed = await start(nursery, A)
    full_seed.set_allowed_peers(())  # as the seeder starts: closed
    slice_seeds = SliceSeeds(A, warm=2)
    slice_seeds.set_allowed_peers(())
    await nursery.start(slice_seeds.run)
    engine = Engine(store, seeder_bt=(A, full_seed.listen_port))
    admitted = admitting(engine, full_seed, slice_seeds)
    await nursery.start(engine.run)
    await nursery.start(admitted.run)
    one, two = [await Peer(n).connect(engine, nursery) for n in ("web-1", "web-2")]
    web_1, web_2, web_3 = (HOSTS[n][0] for n in ("web-1", "web-2", "web-3"))
    assert not full_seed.admits(web_1) and not slice_seeds.admits(web_1)

    engine.start_rollout(RELEASE, "web-1,web-2")
    for peer, ip in ((one, web_1), (two, web_2)):
        await peer.expect(m.SwarmMembers)
        await peer.expect(m.Stage)
        assert full_seed.admits(ip), f"{peer.name}'s first connection to the full seed is refused"
        assert slice_seeds.admits(ip), f"{peer.name}'s first connection to a slice is refused"
    for outsider in (web_3, OUTSIDER):  # not a target: still refused
        assert not full_seed.admits(outsider) and not slice_seeds.admits(outsider)

    engine.host_left("web-2")  # revoked: out of the swarm now
    assert not full_seed.admits(web_2) and not slice_seeds.admits(web_2)
    assert full_seed.admits(web_1) and slice_seeds.admits(web_1)


async def test_only_a_keyed_session_finds_the_swarm_through_the_tracker(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    keys = AnnounceKeys(os.urandom(32), enrolled=lambda name: name == "web-1")
    tracker = Tracker(admit=admission(keys, lambda: 0.0), interval=5)
    port = await nursery.start(tracker.serve, A, 0)
    payload = tmp_path / "seed" / "release.bin"
    payload.parent.mkdir()
    payload.write_bytes(os.urandom(500_000))
    torrent, _ = make_torrent(payload, tracker_url=f"http://{A}:{port}/announce")
    seeder, member, outsider = [await start(nursery, ip) for ip in (A, B, C)]
    seeder.set_tracker_key(keys.origin_key())
    seeder.seed(torrent, payload.parent)
    hashes = tracker_hashes(torrent)
    with trio.fail_after(30):
        await tracker.wait_listed((A, seeder.listen_port), hashes)
    assert await attempt(outsider, torrent, tmp_path / "c", []) == 0  # no key: no peers
    outsider.set_tracker_key(keys.host_key("ghost"))  # a key for no enrolled host
    assert await attempt(outsider, torrent, tmp_path / "c", []) == 0
    assert all((C, outsider.listen_port) not in tracker.swarm_peers(h) for h in hashes)
    member.set_tracker_key(keys.host_key("web-1"))
    with trio.fail_after(60):
        await member.download(torrent, tmp_path / "b")  # no peer given: the tracker's alone
    assert (tmp_path / "b" / "release.bin").read_bytes() == payload.read_bytes()


def get(url: str) -> dict[bytes, object]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        data: dict[bytes, object] = bdecode(reply.read())
        return data


def announce(base: str, info_hash: bytes, key: str | None) -> dict[bytes, object]:
    query = urllib.parse.urlencode(
        {"peer_id": "-XX0001-" + "0" * 12, "port": 6999, "left": 1, "compact": 0}
    )
    url = (
        keyed_url(f"{base}?{query}", key) + "&info_hash=" + urllib.parse.quote_from_bytes(info_hash)
    )
    return get(url)


@pytest.mark.slow
async def test_an_outsider_with_the_torrent_gets_nothing_from_a_real_fleet(
    fleet: LocalFleet, tmp_path: Path, nursery: trio.Nursery
) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    with trio.fail_after(300):
        control = await fleet.start_seeder()
        for name, ip in PEERS.items():
            await fleet.start_peer(name, ip)
        async with fleet.client() as client:
            await fleet.wait_connected(client, list(PEERS))
        rid = await trio.to_thread.run_sync(fleet.build_release, repo)
        out = await trio.to_thread.run_sync(fleet.cli, "rollout", "start", rid, "--wait")
        assert out.returncode == 0, out.stdout + out.stderr  # the fleet itself is served
        hosts = json.loads((await trio.to_thread.run_sync(fleet.cli, "hosts", "--json")).stdout)
        bt_ports = {h["address"]: h["bt_port"] for h in hosts}
        stats = json.loads(
            (await trio.to_thread.run_sync(fleet.cli, "seeder", "stats", "--json")).stdout
        )

        export = tmp_path / "r.torrent"
        out = await trio.to_thread.run_sync(
            fleet.cli, "release", "torrent", rid, "--out", str(export)
        )
        assert out.returncode == 0, out.stderr
        torrent = export.read_bytes()
        url = bytes(bdecode(torrent)[b"announce"]).decode()
        assert "hk=" not in url  # a plain export carries no key

        # the tracker: an enrolled host's key gets peers, no key or a made-up one gets refused
        secret = (fleet.root / "seeder" / "tracker.secret").read_bytes()
        keys = AnnounceKeys(secret, enrolled=lambda name: True)
        v1 = tracker_hashes(torrent)[0]
        listed = await trio.to_thread.run_sync(announce, url, v1, keys.host_key("web-1"))
        assert b"failure reason" not in listed, listed
        got = {(bytes(p[b"ip"]).decode(), p[b"port"]) for p in listed[b"peers"]}  # type: ignore[attr-defined]
        assert {(ip, bt_ports[ip]) for ip in PEERS.values()} <= got
        for key in (
            None,
            "h:web-1." + "0" * 32,
            AnnounceKeys(b"x" * 32, lambda n: True).host_key("web-1"),
        ):
            refused = await trio.to_thread.run_sync(announce, url, v1, key)
            assert b"failure reason" in refused and b"peers" not in refused, (key, refused)

        # BitTorrent: every port of the fleet, dialled directly with the real torrent
        log = (fleet.root / "logs" / "seeder.log").read_text()
        slices = [int(p) for p in re.findall(r"\d+", log.split("on ports [")[-1].split("]")[0])]
        targets = [(ip, bt_ports[ip]) for ip in PEERS.values()]
        targets += [(control.host, control.port + 2)] + [(control.host, p) for p in slices]
        assert slices, "the rollout offered slice seeds"
        outsider = await start(nursery, OUTSIDER)
        assert await attempt(outsider, torrent, tmp_path / "outsider", targets) == 0
        outsider.remove(torrent_infohash(torrent), delete_files=True)
        after = json.loads(
            (await trio.to_thread.run_sync(fleet.cli, "seeder", "stats", "--json")).stdout
        )
        assert after["uploaded"] == stats["uploaded"]  # not a byte left the seeder for it

        # the same machine, granted by an operator, downloads it: what kept it out was the filter
        out = await trio.to_thread.run_sync(
            fleet.cli,
            "release",
            "torrent",
            rid,
            "--out",
            str(export),
            "--allow",
            OUTSIDER,
            "--json",
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["allowed"]["addresses"] == [OUTSIDER]
        granted = await start(nursery, OUTSIDER)
        with trio.fail_after(60):
            await granted.download(export.read_bytes(), tmp_path / "granted")
        manifest = json.loads(
            (await trio.to_thread.run_sync(fleet.cli, "release", "list", "--json")).stdout
        )[0]
        assert (tmp_path / "granted" / manifest["archive"]).stat().st_size == manifest["size"]
