"""The rollout engine shell with a real store and in-memory peer connections: no sockets, no
sleeps (trio's autojump clock runs the engine's ticks)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from common import messages as m
from common.channel import Channel
from common.protocol import Role
from seeder.engine import Engine, Overlap
from seeder.machine import NotAllowed
from seeder.store import HostRecord, Store
from seeder.writers import PeerWriter
from tests.conftest import MANIFEST

RELEASE = MANIFEST.release_id
TORRENT = b"d4:infod6:lengthi3eee"
SEEDER_BT = ("127.0.0.1", 1)
HOSTS = {f"web-{i}": (f"127.0.0.{10 + i}", 6880 + i) for i in range(1, 4)}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "seeder.db")
    s.add_release(MANIFEST, TORRENT, 1.0)
    for name, (address, port) in HOSTS.items():
        s.upsert_host(HostRecord(name, address, port, {}, "old", [], False, 1.0), 1.0)
    try:
        yield s
    finally:
        s.close()


class Peer:
    """The peer's end of one control connection; the engine's writer holds the seeder's end."""

    def __init__(self, name: str, lockstep: bool = False) -> None:
        self.name = name
        make = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        peer_stream, seeder_stream = make()
        self.channel = Channel(peer_stream, Role.CLIENT)
        self.seeder_side = Channel(seeder_stream, Role.SERVER)
        self.writer = PeerWriter(name, self.seeder_side, send_timeout=5)

    async def connect(self, engine: Engine, nursery: trio.Nursery) -> Peer:
        address, port = HOSTS[self.name]
        async with trio.open_nursery() as hello:  # a lockstep stream sends only while read
            hello.start_soon(self.channel.send, m.Hello(self.name, address, port))
            assert isinstance(await self.seeder_side.receive(), m.Hello)
        nursery.start_soon(self.writer.run)
        engine.attach(self.name, self.writer)
        return self

    async def next(self) -> m.Message:
        with trio.fail_after(5):
            return await self.channel.receive()

    async def expect(self, kind: type[m.Message]) -> m.Message:
        msg = await self.next()
        assert isinstance(msg, kind), msg
        return msg

    def report(self, engine: Engine, rid: str, step: str, state: str, seq: int) -> None:
        msg = m.StepReport(rid, self.name, step, 1, state, seq=seq)
        engine.on_report(self.name, msg, self.writer)


@pytest.fixture
async def running(store: Store) -> AsyncIterator[tuple[Engine, trio.Nursery]]:
    engine = Engine(store, seeder_bt=SEEDER_BT, clock=Clock())
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield engine, nursery
        nursery.cancel_scope.cancel()


async def test_waves_through_the_shell_and_acks_after_commit(
    running: tuple[Engine, trio.Nursery], store: Store
) -> None:
    engine, nursery = running
    peers = {n: await Peer(n).connect(engine, nursery) for n in HOSTS}
    r = engine.start_rollout(RELEASE, "all", {"waves": "1,100%"})
    members = sorted({SEEDER_BT[0], *(ip for ip, _ in HOSTS.values())})
    for peer in peers.values():  # each is told its rollout's swarm, then to stage
        assert await peer.expect(m.SwarmMembers) == m.SwarmMembers(r.rollout_id, members, 1)
        stage = await peer.expect(m.Stage)
        assert isinstance(stage, m.Stage) and stage.token == r.token == 1
        assert stage.peers[0] == list(SEEDER_BT)
        assert sorted(map(tuple, stage.peers[1:])) == sorted(
            v for k, v in HOSTS.items() if k != peer.name
        )
    for seq, peer in enumerate(peers.values(), 1):
        peer.report(engine, r.rollout_id, "stage", "succeeded", seq)
        assert await peer.expect(m.Ack) == m.Ack(seq=seq)  # only sent once committed
    assert await peers["web-1"].expect(m.Activate) == m.Activate(r.rollout_id, RELEASE, 1, 1)
    peers["web-1"].report(engine, r.rollout_id, "activate", "succeeded", 10)
    await peers["web-1"].expect(m.Ack)
    for name in ("web-2", "web-3"):
        assert isinstance(await peers[name].expect(m.Activate), m.Activate)
        peers[name].report(engine, r.rollout_id, "activate", "succeeded", 11)
    await trio.sleep(1)
    stored = store.load_rollout(r.rollout_id)
    assert stored is not None and stored.state.value == "succeeded"
    assert {h.name: (h.current, h.previous) for h in store.hosts()} == dict.fromkeys(
        HOSTS, (RELEASE, "old")
    )
    kinds = [e["kind"] for e in store.timeline(r.rollout_id)]
    assert kinds.count("wave") == 4 and kinds[-1] == "rollout"


async def test_overlap_is_refused_with_the_running_rollouts_id(
    running: tuple[Engine, trio.Nursery],
) -> None:
    engine, _ = running
    first = engine.start_rollout(RELEASE, "web-1,web-2")
    with pytest.raises(Overlap, match=first.rollout_id):
        engine.start_rollout(RELEASE, "web-2,web-3")
    engine.start_rollout(RELEASE, "web-3")  # disjoint: fine
    engine.operator(first.rollout_id, "abort")
    engine.start_rollout(RELEASE, "web-1")  # the aborted one holds no lock
    with pytest.raises(NotAllowed, match="is aborted, not paused"):
        engine.operator(first.rollout_id, "resume")


async def test_a_stalled_peer_does_not_delay_the_others(
    running: tuple[Engine, trio.Nursery], autojump_clock: trio.testing.MockClock
) -> None:
    engine, nursery = running
    stalled = await Peer("web-1", lockstep=True).connect(engine, nursery)  # never reads
    quick = await Peer("web-2").connect(engine, nursery)
    engine.start_rollout(RELEASE, "web-1,web-2")
    started = trio.current_time()
    await quick.expect(m.SwarmMembers)
    await quick.expect(m.Stage)
    assert trio.current_time() - started < 1
    assert not stalled.writer.closed
    await trio.sleep(6)  # past the stalled peer's send timeout: it is cut off
    assert stalled.writer.closed and not quick.writer.closed


async def test_restart_reloads_paused_and_gating_rollouts(store: Store, tmp_path: Path) -> None:
    marker = tmp_path / "gate-ran"
    clock = Clock()
    async with trio.open_nursery() as nursery:
        engine = Engine(store, seeder_bt=SEEDER_BT, clock=clock)
        await nursery.start(engine.run)
        peer = await Peer("web-1").connect(engine, nursery)
        gated = engine.start_rollout(
            RELEASE, "web-1", {"waves": "100%", "gate": f"echo ran >> {marker}; sleep 1000"}
        )
        paused = engine.start_rollout(RELEASE, "web-2")
        engine.operator(paused.rollout_id, "pause")
        await peer.expect(m.SwarmMembers)
        await peer.expect(m.Stage)
        peer.report(engine, gated.rollout_id, "stage", "succeeded", 1)
        assert {type(await peer.next()), type(await peer.next())} == {m.Ack, m.Activate}
        peer.report(engine, gated.rollout_id, "activate", "succeeded", 2)
        await peer.expect(m.Ack)
        while not marker.exists():
            await trio.sleep(0.1)
        nursery.cancel_scope.cancel()  # the seeder "dies" with the gate running
    async with trio.open_nursery() as nursery:
        again = Engine(store, seeder_bt=SEEDER_BT, clock=clock)
        assert again.model(gated.rollout_id).state.value == "gating"
        assert again.model(paused.rollout_id).state.value == "paused"
        await nursery.start(again.run)
        while marker.read_text().count("ran") < 2:  # the gate runs again after the restart
            await trio.sleep(0.1)
        peer = await Peer("web-1").connect(again, nursery)
        # told its live rollout's swarm again (it seeds for the others), and given no command
        assert isinstance(await peer.next(), m.SwarmMembers)
        with trio.move_on_after(2):
            msg = await peer.next()
            pytest.fail(f"a finished target got a command again: {msg}")
        again.operator(paused.rollout_id, "resume")
        assert again.model(paused.rollout_id).state.value == "staging"
        nursery.cancel_scope.cancel()
