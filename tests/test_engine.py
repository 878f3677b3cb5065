"""The rollout engine with a real store and in-memory peer connections: no sockets, no sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from common import messages as m
from common.channel import Channel
from common.protocol import Role
from seeder.engine import Engine
from seeder.rollout import Deadlines
from seeder.store import HostRecord, Store
from tests.conftest import MANIFEST

RELEASE = MANIFEST.release_id
TORRENT = b"d4:infod6:lengthi3eee"
SEEDER_BT = ("127.0.0.1", 1)
HOSTS = {"web-1": ("127.0.0.11", 6881), "web-2": ("127.0.0.12", 6882)}
MARK = 2**31  # seq of the sentinel ack that ends a drain


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
        s.upsert_host(HostRecord(name, address, port, {}, None, [], False, 1.0), 1.0)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_engine(store: Store, clock: Clock, **deadlines: float) -> Engine:
    return Engine(store, seeder_bt=SEEDER_BT, deadlines=Deadlines(**deadlines), clock=clock)


class FakePeer:
    """The peer's end of one control connection; the engine holds the seeder's end."""

    def __init__(
        self,
        name: str,
        peer_stream: trio.abc.Stream | None = None,
        seeder_side: Channel | None = None,
    ) -> None:
        self.name = name
        if peer_stream is None or seeder_side is None:
            peer_stream, seeder_stream = trio.testing.memory_stream_pair()
            seeder_side = Channel(seeder_stream, Role.SERVER)
        self.channel = Channel(peer_stream, Role.CLIENT)
        self.seeder_side = seeder_side

    async def connect(self, engine: Engine) -> FakePeer:
        address, port = HOSTS[self.name]
        await self.channel.send(m.Hello(name=self.name, address=address, bt_port=port))
        assert isinstance(await self.seeder_side.receive(), m.Hello)
        engine.attach(self.name, self.seeder_side)
        return self

    async def drain(self) -> list[m.Message]:
        """Everything the engine sent so far: a sentinel ack marks the end."""
        await self.seeder_side.send(m.Ack(seq=MARK))
        got: list[m.Message] = []
        with trio.fail_after(5):
            while (msg := await self.channel.receive()) != m.Ack(seq=MARK):
                got.append(msg)
        return got


def report(rollout_id: str, host: str, step: str, state: str, detail: str = "") -> m.StepReport:
    return m.StepReport(
        rollout_id=rollout_id, host=host, step=step, attempt=1, state=state, detail=detail
    )


def states(store: Store, rollout_id: str) -> dict[str, str]:
    rollout = store.rollout(rollout_id)
    assert rollout is not None
    return {t.host: t.state for t in rollout.targets}


async def test_stage_then_activate_then_one_activation_fails(store: Store, clock: Clock) -> None:
    engine = make_engine(store, clock)
    peers = [await FakePeer(name).connect(engine) for name in HOSTS]
    assert engine.connected() == set(HOSTS)
    rid = engine.start_rollout(RELEASE, "all").rollout_id
    assert states(store, rid) == {"web-1": "pending", "web-2": "pending"}

    await engine.tick()
    for peer in peers:
        (stage,) = await peer.drain()
        assert isinstance(stage, m.Stage)
        assert stage.rollout_id == rid
        assert stage.manifest == MANIFEST.to_dict()
        assert stage.torrent == TORRENT
        assert stage.peers[0] == list(SEEDER_BT)
        (other,) = (name for name in HOSTS if name != peer.name)
        assert sorted(map(tuple, stage.peers[1:])) == [HOSTS[other]]
    assert states(store, rid) == {"web-1": "staging", "web-2": "staging"}
    rollout = store.rollout(rid)
    assert rollout is not None and rollout.state == "staging"

    # Progress reports move targets but do not end the phase; a tick sends nothing new.
    engine.on_report("web-1", report(rid, "web-1", "download", "succeeded"))
    await engine.tick()
    assert [await peer.drain() for peer in peers] == [[], []]

    for peer in peers:
        engine.on_report(peer.name, report(rid, peer.name, "stage", "succeeded"))
    assert states(store, rid) == {"web-1": "staged", "web-2": "staged"}
    await engine.tick()
    for peer in peers:
        assert await peer.drain() == [m.Activate(rollout_id=rid, release_id=RELEASE)]
    rollout = store.rollout(rid)
    assert rollout is not None and rollout.state == "activating"

    engine.on_report("web-1", report(rid, "web-1", "activate", "succeeded"))
    engine.on_report("web-2", report(rid, "web-2", "activate", "failed", "ValidateService: 3"))
    await engine.tick()
    rollout = store.rollout(rid)
    assert rollout is not None
    assert rollout.state == "failed"
    assert "activation failed" in rollout.error and "web-2" in rollout.error
    assert "web-1" not in rollout.error
    targets = {t.host: t for t in rollout.targets}
    assert targets["web-1"].state == "succeeded"
    assert (targets["web-2"].state, targets["web-2"].error) == ("failed", "ValidateService: 3")
    current = {h.name: h.current for h in store.hosts()}
    assert current == {"web-1": RELEASE, "web-2": None}
    await engine.tick()  # a finished rollout stays finished and quiet
    assert [await peer.drain() for peer in peers] == [[], []]


async def test_all_activations_succeed(store: Store, clock: Clock) -> None:
    engine = make_engine(store, clock)
    peers = [await FakePeer(name).connect(engine) for name in HOSTS]
    rid = engine.start_rollout(RELEASE, "web-2").rollout_id
    await engine.tick()
    assert await peers[0].drain() == []  # not a target
    engine.on_report("web-2", report(rid, "web-2", "stage", "succeeded"))
    await engine.tick()
    engine.on_report("web-2", report(rid, "web-2", "activate", "succeeded"))
    await engine.tick()
    rollout = store.rollout(rid)
    assert rollout is not None and (rollout.state, rollout.error) == ("succeeded", "")
    assert [type(msg) for msg in await peers[1].drain()] == [m.Stage, m.Activate]


async def test_no_duplicates_on_one_connection_but_a_new_one_gets_it_again(
    store: Store, clock: Clock
) -> None:
    engine = make_engine(store, clock)
    first = await FakePeer("web-1").connect(engine)
    rid = engine.start_rollout(RELEASE, "web-1").rollout_id
    await engine.tick()
    await engine.tick()
    engine.wake()
    await engine.tick()
    assert [type(msg) for msg in await first.drain()] == [m.Stage]

    # The peer reconnects before the seeder noticed the old connection died.
    second = await FakePeer("web-1").connect(engine)
    await engine.tick()
    await engine.tick()
    assert [type(msg) for msg in await second.drain()] == [m.Stage]
    assert await first.drain() == []
    engine.detach("web-1", first.seeder_side)  # the old connection's late goodbye
    assert engine.connected() == {"web-1"}

    engine.on_report("web-1", report(rid, "web-1", "stage", "succeeded"))
    await engine.tick()
    third = await FakePeer("web-1").connect(engine)
    await engine.tick()
    assert await second.drain() == [m.Activate(rollout_id=rid, release_id=RELEASE)]
    assert await third.drain() == [m.Activate(rollout_id=rid, release_id=RELEASE)]


async def test_a_new_connection_reusing_a_dead_ones_id_gets_the_command(
    store: Store, clock: Clock
) -> None:
    # A peer reconnects after its old connection is gone; CPython then usually hands the new
    # Channel the very address (id) of the dead one, so nothing keyed by id(channel) may
    # outlive a connection. (Before the fix in Engine.attach this failed on every run.)
    engine = make_engine(store, clock)
    engine.start_rollout(RELEASE, "web-1")
    peer = await FakePeer("web-1").connect(engine)
    for _ in range(10):
        await engine.tick()
        assert [type(msg) for msg in await peer.drain()] == [m.Stage]
        engine.detach("web-1", peer.seeder_side)
        assert engine.connected() == set()
        await peer.seeder_side.aclose()
        peer_stream, seeder_stream = trio.testing.memory_stream_pair()
        del peer  # the last reference to the dead connection's channel
        seeder_side = Channel(seeder_stream, Role.SERVER)
        peer = await FakePeer("web-1", peer_stream, seeder_side).connect(engine)
        del seeder_side
    await engine.tick()
    assert [type(msg) for msg in await peer.drain()] == [m.Stage]


async def test_a_dead_connection_is_detached_on_send(store: Store, clock: Clock) -> None:
    engine = make_engine(store, clock)
    dead = await FakePeer("web-1").connect(engine)
    rid = engine.start_rollout(RELEASE, "web-1").rollout_id
    await dead.channel.aclose()
    await engine.tick()
    assert engine.connected() == set()
    assert [h.connected for h in store.hosts() if h.name == "web-1"] == [False]
    alive = await FakePeer("web-1").connect(engine)
    await engine.tick()
    assert [type(msg) for msg in await alive.drain()] == [m.Stage]
    assert states(store, rid) == {"web-1": "staging"}


async def test_a_stage_failure_means_nothing_is_activated(store: Store, clock: Clock) -> None:
    engine = make_engine(store, clock)
    peers = [await FakePeer(name).connect(engine) for name in HOSTS]
    rid = engine.start_rollout(RELEASE, "all").rollout_id
    await engine.tick()
    engine.on_report("web-2", report(rid, "web-2", "stage", "succeeded"))
    await engine.tick()  # web-1 is still staging: the phase is not over
    rollout = store.rollout(rid)
    assert rollout is not None and rollout.state == "staging"
    engine.on_report("web-1", report(rid, "web-1", "verify", "failed", "digest mismatch"))
    await engine.tick()
    await engine.tick()
    rollout = store.rollout(rid)
    assert rollout is not None and rollout.state == "failed"
    assert "nothing was activated" in rollout.error and "web-1" in rollout.error
    assert "web-2" not in rollout.error
    assert states(store, rid) == {"web-1": "failed", "web-2": "staged"}
    for peer in peers:
        assert [type(msg) for msg in await peer.drain()] == [m.Stage]


async def test_reports_are_idempotent_and_final_states_stick(store: Store, clock: Clock) -> None:
    engine = make_engine(store, clock)
    rid = engine.start_rollout(RELEASE, "web-1").rollout_id
    engine.on_report("web-1", report(rid, "web-1", "stage", "failed", "disk full"))
    clock.now += 5
    engine.on_report("web-1", report(rid, "web-1", "stage", "failed", "disk full"))
    engine.on_report("web-1", report(rid, "web-1", "stage", "running"))  # late, out of order
    engine.on_report("web-1", report(rid, "web-1", "stage", "succeeded"))  # never overwrites
    (event,) = store.events(rid)
    assert (event.step, event.state, event.detail) == ("stage", "failed", "disk full")
    rollout = store.rollout(rid)
    assert rollout is not None
    (target,) = rollout.targets
    assert (target.state, target.error, target.updated_at) == ("failed", "disk full", clock.now - 5)


async def test_a_report_for_an_unknown_rollout_is_harmless(store: Store, clock: Clock) -> None:
    engine = make_engine(store, clock)
    rid = engine.start_rollout(RELEASE, "web-1").rollout_id
    engine.on_report("web-1", report("r-gone", "web-1", "stage", "succeeded"))
    engine.on_report("web-2", report(rid, "web-2", "stage", "succeeded"))  # not a target
    assert states(store, rid) == {"web-1": "pending"}


async def test_a_silent_host_fails_after_the_stage_deadline_not_before(
    store: Store, clock: Clock
) -> None:
    engine = make_engine(store, clock, stage=10)
    peers = [await FakePeer(name).connect(engine) for name in HOSTS]
    rid = engine.start_rollout(RELEASE, "all").rollout_id
    await engine.tick()  # stages sent at t0
    clock.now += 3
    engine.on_report("web-1", report(rid, "web-1", "stage", "succeeded"))
    clock.now += 7  # exactly at the deadline for web-2: silence is not failure yet
    await engine.tick()
    rollout = store.rollout(rid)
    assert rollout is not None and rollout.state == "staging"
    assert states(store, rid) == {"web-1": "staged", "web-2": "staging"}

    clock.now += 0.5
    await engine.tick()
    rollout = store.rollout(rid)
    assert rollout is not None and rollout.state == "failed"
    targets = {t.host: t for t in rollout.targets}
    assert targets["web-2"].state == "failed"
    assert "deadline" in targets["web-2"].error
    assert targets["web-1"].state == "staged"
    assert "web-2" in rollout.error and "nothing was activated" in rollout.error
    for peer in peers:
        assert [type(msg) for msg in await peer.drain()] == [m.Stage]


async def test_the_activate_deadline_counts_from_the_activate_command(
    store: Store, clock: Clock
) -> None:
    engine = make_engine(store, clock, stage=10, activate=100)
    peer = await FakePeer("web-1").connect(engine)
    rid = engine.start_rollout(RELEASE, "web-1").rollout_id
    await engine.tick()
    clock.now += 9
    engine.on_report("web-1", report(rid, "web-1", "stage", "succeeded"))
    await engine.tick()  # activate sent now
    clock.now += 100
    await engine.tick()
    assert states(store, rid) == {"web-1": "activating"}
    clock.now += 1
    await engine.tick()
    rollout = store.rollout(rid)
    assert rollout is not None and rollout.state == "failed"
    assert "activation failed on 1 host(s): web-1" in rollout.error
    assert [type(msg) for msg in await peer.drain()] == [m.Stage, m.Activate]
