"""rollout.subscribe and logs over the real control server and the real engine, on in-memory
streams: the server is built as ``seeder.service`` builds it (the engine's ``on_event`` feeds the
hub), and rollouts move only through the engine's API (peer reports, operator requests)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from common import messages as m
from common.channel import Channel
from common.crypto.certs import Holder
from common.errors import RemoteError
from common.protocol import Role
from seeder.client import SeederClient
from seeder.control import ControlServer
from seeder.engine import Engine
from seeder.events import EventHub, rollout_topic
from seeder.follow import Mode, watch_rollout
from seeder.live import LiveLog
from seeder.store import HostRecord, Store
from seeder.streams import Watching, publisher
from tests.conftest import MANIFEST
from tests.test_control_server import OPERATOR, PEER, Clock, peer_connected

RELEASE = MANIFEST.release_id
ONE_WAVE = {"waves": "100%"}


@asynccontextmanager
async def serving(
    store: Store, buffer: int = 64
) -> AsyncIterator[tuple[ControlServer, Watching, trio.Nursery]]:
    """The control server wired as the seeder wires it, its engine running; and the nursery."""
    clock = Clock()
    hub = EventHub(buffer=buffer)
    engine = Engine(store, seeder_bt=("127.0.0.1", 1), clock=clock, on_event=publisher(hub))
    watching = Watching(store, engine, hub, LiveLog(), clock=clock)
    server = ControlServer(
        store,
        engine,
        methods=watching.methods(),
        streams=watching.streams(),
        observe=watching.observe,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield server, watching, nursery
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def dial(server: ControlServer, nursery: trio.Nursery, who: Holder) -> AsyncIterator[Channel]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(server.converse, server_stream, who)
    channel = Channel(client_stream, Role.CLIENT)
    try:
        yield channel
    finally:
        await channel.aclose()


async def cli(channel: Channel) -> SeederClient:
    await channel.send(m.ClientHello(client="test"))
    return SeederClient(channel)


def report(rid: str, step: str, state: str, seq: int, **kw: object) -> m.StepReport:
    return m.StepReport(
        rollout_id=rid, host="web-1", step=step, attempt=1, state=state, seq=seq, **kw
    )


async def start(server: ControlServer, peer: Channel) -> str:
    """A one-wave rollout of web-1 (connected on ``peer``), once the peer has its Stage."""
    rid = server.engine.start_rollout(RELEASE, "all", ONE_WAVE).rollout_id
    assert isinstance(await peer.receive(), m.SwarmMembers)  # the swarm, before the Stage
    stage = await peer.receive()
    assert isinstance(stage, m.Stage) and stage.rollout_id == rid
    return rid


async def stage_and_activate(peer: Channel, rid: str, seq: int = 1) -> None:
    """The peer stages (acked, then told to activate) and activates (acked)."""
    await peer.send(report(rid, "stage", "succeeded", seq, result="succeeded"))
    assert await peer.receive() == m.Ack(seq=seq)
    activate = await peer.receive()  # staged: its only wave starts
    assert isinstance(activate, m.Activate) and activate.rollout_id == rid
    await peer.send(report(rid, "activate", "succeeded", seq + 1, result="succeeded"))
    assert await peer.receive() == m.Ack(seq=seq + 1)


async def test_subscribe_gets_a_snapshot_then_events_until_the_rollout_ends(store: Store) -> None:
    with trio.fail_after(5):
        async with (
            serving(store) as (server, _, nursery),
            dial(server, nursery, PEER) as peer,
            dial(server, nursery, OPERATOR) as operator,
        ):
            await peer_connected(peer)
            rid = await start(server, peer)
            client = await cli(operator)
            snapshot, events = await client.subscribe("rollout.subscribe", rollout_id=rid)
            assert snapshot["rollout"]["state"] == "staging"
            assert [t["host"] for t in snapshot["rollout"]["targets"]] == ["web-1"]
            last = max(e["seq"] for e in snapshot["rollout"]["timeline"])
            await peer.send(m.Progress(rid, "web-1", done=1, total=3, rate=2.0))
            await stage_and_activate(peer, rid)
            got = [(e.kind, e.data.get("state"), e.seq) async for e in events]
            # The connection takes requests again after the end event.
            again = await client.call("logs.get", host="web-1")
            assert again["rollout_id"] == rid
            nursery.cancel_scope.cancel()
    kinds = [k for k, _, _ in got]
    assert kinds[0] == "progress"
    assert ("step", "succeeded") in [(k, s) for k, s, _ in got]
    assert ("rollout", "activating") in [(k, s) for k, s, _ in got]
    assert got[-2][:2] == ("rollout", "succeeded")
    assert got[-1][0] == "end"
    seqs = [s for _, _, s in got if s]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Every timeline entry the snapshot did not have came, in order: none fell in between.
    after = [e["seq"] for e in store.timeline(rid) if e["seq"] > last]
    assert [s for s in seqs if s > last] == after


async def test_a_finished_rollout_ends_at_once_and_errors_are_refused(store: Store) -> None:
    with trio.fail_after(5):
        async with (
            serving(store) as (server, _, nursery),
            dial(server, nursery, PEER) as peer,
            dial(server, nursery, OPERATOR) as operator,
        ):
            await peer_connected(peer)
            rid = await start(server, peer)
            await peer.send(report(rid, "stage", "failed", 1, result="error", detail="disk full"))
            assert await peer.receive() == m.Ack(seq=1)
            assert server.engine.model(rid).state.value == "failed"  # staging fell short
            client = await cli(operator)
            with pytest.raises(RemoteError, match="unknown rollout 'nope'"):
                await client.subscribe("rollout.subscribe", rollout_id="nope")
            snapshot, events = await client.subscribe("rollout.subscribe")  # the latest
            assert snapshot["rollout"]["rollout_id"] == rid
            assert snapshot["rollout"]["state"] == "failed"
            ends = [e async for e in events]
            assert [(e.kind, e.data["reason"]) for e in ends] == [("end", "final")]
            nursery.cancel_scope.cancel()


async def test_a_lagging_subscriber_gets_an_end_event_saying_so(store: Store) -> None:
    with trio.fail_after(5):
        async with (
            serving(store, buffer=3) as (server, watching, nursery),
            dial(server, nursery, PEER) as peer,
            dial(server, nursery, OPERATOR) as operator,
        ):
            await peer_connected(peer)
            rid = await start(server, peer)
            client = await cli(operator)
            _, events = await client.subscribe("rollout.subscribe", rollout_id=rid)
            for i in range(10):  # faster than any reader: no checkpoint in between
                watching.observe("web-1", m.Progress(rid, "web-1", i, 10, 1.0))
            got = [e async for e in events]
            nursery.cancel_scope.cancel()
    done = [e.data["done"] for e in got[:-1]]
    assert done == list(range(len(done))) and len(done) < 10  # what fitted, in order
    assert got[-1].kind == "end" and got[-1].data["reason"] == "lagged"


async def test_a_client_leaving_ends_its_stream(store: Store) -> None:
    with trio.fail_after(5):
        async with (
            serving(store) as (server, watching, nursery),
            dial(server, nursery, PEER) as peer,
        ):
            await peer_connected(peer)
            rid = await start(server, peer)
            async with dial(server, nursery, OPERATOR) as operator:
                client = await cli(operator)
                await client.subscribe("rollout.subscribe", rollout_id=rid)
                assert watching.hub.subscribers(rollout_topic(rid)) == 1
            await trio.testing.wait_all_tasks_blocked()
            assert watching.hub.subscribers(rollout_topic(rid)) == 0
            nursery.cancel_scope.cancel()


async def test_logs_live_lines_then_durable_tails_and_a_follow_stream(store: Store) -> None:
    with trio.fail_after(5):
        async with (
            serving(store) as (server, _, nursery),
            dial(server, nursery, PEER) as peer,
            dial(server, nursery, OPERATOR) as operator,
        ):
            await peer_connected(peer)
            rid = await start(server, peer)
            client = await cli(operator)
            with pytest.raises(RemoteError, match="unknown host 'web-9'"):
                await client.call("logs.get", host="web-9")
            await peer.send(report(rid, "stage", "succeeded", 1, result="succeeded"))
            assert await peer.receive() == m.Ack(seq=1)
            assert isinstance(await peer.receive(), m.Activate)
            # A hook's tail, known only from its durable step report (no live lines).
            tail = ["stopped", "bye"]
            await peer.send(report(rid, "ApplicationStop", "succeeded", 2, output=tail))
            assert await peer.receive() == m.Ack(seq=2)
            snapshot, events = await client.subscribe(
                "logs.subscribe", host="web-1", rollout_id=rid
            )
            assert [x["line"] for x in snapshot["lines"]] == tail
            await peer.send(m.OutputLine(rid, "web-1", "ApplicationStart", "starting"))
            event = await events.__anext__()
            assert (event.kind, event.data["line"], event.data["step"]) == (
                "output",
                "starting",
                "ApplicationStart",
            )
            # Its report's tail repeats the line the seeder has live: shown once, not twice.
            await peer.send(report(rid, "ApplicationStart", "succeeded", 3, output=["starting"]))
            assert await peer.receive() == m.Ack(seq=3)
            await peer.send(report(rid, "activate", "succeeded", 4, result="succeeded"))
            assert await peer.receive() == m.Ack(seq=4)
            rest = [e async for e in events]  # the rollout succeeded: the stream ends
            assert [(e.kind, e.data["reason"]) for e in rest] == [("end", "final")]
            assert server.engine.model(rid).state.value == "succeeded"
            logs = await client.call("logs.get", host="web-1", rollout_id=rid)
            nursery.cancel_scope.cancel()
    assert logs["state"] == "succeeded"
    assert [(x["step"], x["line"]) for x in logs["lines"]] == [
        ("ApplicationStop", "stopped"),
        ("ApplicationStop", "bye"),
        ("ApplicationStart", "starting"),
    ]


@pytest.mark.parametrize("mode", ["live", "plain", "json"])
async def test_watch_rollout_follows_to_the_end_in_every_mode(store: Store, mode: Mode) -> None:
    out = io.StringIO()
    with trio.fail_after(10):
        async with (
            serving(store) as (server, watching, nursery),
            dial(server, nursery, PEER) as peer,
            dial(server, nursery, OPERATOR) as operator,
        ):
            await peer_connected(peer)
            rid = await start(server, peer)
            client = await cli(operator)
            codes: list[int] = []
            finished = trio.Event()

            async def watch() -> None:
                code = await watch_rollout(client, rid, mode=mode, wait_for=10, out=out)
                codes.append(code)
                finished.set()

            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            assert watching.hub.subscribers(rollout_topic(rid)) == 1
            await peer.send(m.Progress(rid, "web-1", done=3, total=3, rate=0.0))
            await stage_and_activate(peer, rid)
            await finished.wait()
            nursery.cancel_scope.cancel()
    assert codes == [0]
    text = out.getvalue()
    if mode == "json":
        assert '"kind": "snapshot"' in text.splitlines()[0]
        assert '"reason": "final"' in text.splitlines()[-1]
    else:
        assert f"rollout {rid} succeeded: 1 succeeded" in text
        assert "web-1" in text


async def test_a_client_that_stops_reading_loses_its_stream(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    from seeder.control import PUSH_TIMEOUT

    host = HostRecord("web-1", "127.0.0.11", 6881, {}, None, [], False, 0.0)
    store.upsert_host(host, 0.0)
    client_stream, server_stream = trio.testing.lockstep_stream_pair()  # no buffer at all
    done = trio.Event()
    with trio.fail_after(PUSH_TIMEOUT * 3):
        async with serving(store) as (server, watching, nursery):
            rid = server.engine.start_rollout(RELEASE, "all", ONE_WAVE).rollout_id

            async def handle() -> None:
                await server.converse(server_stream, OPERATOR)
                done.set()

            nursery.start_soon(handle)
            client = await cli(Channel(client_stream, Role.CLIENT))
            await client.subscribe("rollout.subscribe", rollout_id=rid)
            start = trio.current_time()
            server.engine.operator(rid, "pause")  # one event for the stream, never read
            await done.wait()  # the server gave up on this reader and closed its connection
            assert trio.current_time() - start == pytest.approx(PUSH_TIMEOUT)
            nursery.cancel_scope.cancel()
    assert watching.hub.subscribers(rollout_topic(rid)) == 0
