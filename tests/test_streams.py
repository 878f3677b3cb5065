"""rollout.subscribe and logs over the real control server, on in-memory streams."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from common import messages as m
from common.channel import Channel
from common.errors import RemoteError
from common.protocol import Role
from seeder.client import SeederClient
from seeder.control import ControlServer
from seeder.engine import Engine
from seeder.events import EventHub, rollout_topic
from seeder.follow import Mode, watch_rollout
from seeder.live import LiveLog
from seeder.store import HostRecord, Store
from seeder.streams import Watching
from tests.conftest import MANIFEST
from tests.test_control_server import Clock, peer_connected


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "seeder.db")
    s.add_release(MANIFEST, b"torrent-bytes", 1.0)
    try:
        yield s
    finally:
        s.close()


def make_server(store: Store, buffer: int = 64) -> tuple[ControlServer, Watching]:
    clock = Clock()
    watching = Watching(store, EventHub(buffer=buffer), LiveLog(), clock=clock)
    engine = Engine(store, seeder_bt=("127.0.0.1", 1), clock=clock, on_event=watching.on_event)
    server = ControlServer(
        store,
        engine,
        methods=watching.methods(),
        streams=watching.streams(),
        observe=watching.observe,
    )
    return server, watching


@asynccontextmanager
async def dial(server: ControlServer, nursery: trio.Nursery) -> AsyncIterator[Channel]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle, server_stream)
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


async def test_subscribe_gets_a_snapshot_then_events_until_the_rollout_ends(store: Store) -> None:
    server, _ = make_server(store)
    with trio.fail_after(5):
        async with (
            trio.open_nursery() as nursery,
            dial(server, nursery) as peer,
            dial(server, nursery) as operator,
        ):
            await peer_connected(peer)
            rid = server.engine.start_rollout(MANIFEST.release_id, "all").rollout_id
            client = await cli(operator)
            snapshot, events = await client.subscribe("rollout.subscribe", rollout_id=rid)
            assert snapshot["rollout"]["state"] == "staging"
            assert [t["host"] for t in snapshot["rollout"]["targets"]] == ["web-1"]
            await peer.send(m.Progress(rid, "web-1", done=1, total=3, rate=2.0))
            await peer.send(report(rid, "stage", "succeeded", 1, result="succeeded"))
            assert await peer.receive() == m.Ack(seq=1)
            await server.engine.tick()  # staging is over: activating, Activate sent
            assert isinstance(await peer.receive(), m.Activate)
            await peer.send(report(rid, "activate", "succeeded", 2, result="succeeded"))
            assert await peer.receive() == m.Ack(seq=2)
            await server.engine.tick()
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


async def test_a_finished_rollout_ends_at_once_and_errors_are_refused(store: Store) -> None:
    server, _ = make_server(store)
    with trio.fail_after(5):
        async with (
            trio.open_nursery() as nursery,
            dial(server, nursery) as peer,
            dial(server, nursery) as operator,
        ):
            await peer_connected(peer)
            rid = server.engine.start_rollout(MANIFEST.release_id, "all").rollout_id
            store.set_rollout_state(rid, "failed", 5.0, "staging failed")
            client = await cli(operator)
            with pytest.raises(RemoteError, match="unknown rollout 'nope'"):
                await client.subscribe("rollout.subscribe", rollout_id="nope")
            snapshot, events = await client.subscribe("rollout.subscribe")  # the latest
            assert snapshot["rollout"]["rollout_id"] == rid
            ends = [e async for e in events]
            assert [(e.kind, e.data["reason"]) for e in ends] == [("end", "final")]
            nursery.cancel_scope.cancel()


async def test_a_lagging_subscriber_gets_an_end_event_saying_so(store: Store) -> None:
    server, watching = make_server(store, buffer=3)
    with trio.fail_after(5):
        async with (
            trio.open_nursery() as nursery,
            dial(server, nursery) as peer,
            dial(server, nursery) as operator,
        ):
            await peer_connected(peer)
            rid = server.engine.start_rollout(MANIFEST.release_id, "all").rollout_id
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
    server, watching = make_server(store)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, dial(server, nursery) as peer:
            await peer_connected(peer)
            rid = server.engine.start_rollout(MANIFEST.release_id, "all").rollout_id
            async with dial(server, nursery) as operator:
                client = await cli(operator)
                await client.subscribe("rollout.subscribe", rollout_id=rid)
                assert watching.hub.subscribers(rollout_topic(rid)) == 1
            await trio.testing.wait_all_tasks_blocked()
            assert watching.hub.subscribers(rollout_topic(rid)) == 0
            nursery.cancel_scope.cancel()


async def test_logs_live_lines_then_durable_tails_and_a_follow_stream(store: Store) -> None:
    server, _ = make_server(store)
    with trio.fail_after(5):
        async with (
            trio.open_nursery() as nursery,
            dial(server, nursery) as peer,
            dial(server, nursery) as operator,
        ):
            await peer_connected(peer)
            rid = server.engine.start_rollout(MANIFEST.release_id, "all").rollout_id
            client = await cli(operator)
            with pytest.raises(RemoteError, match="unknown host 'web-9'"):
                await client.call("logs.get", host="web-9")
            # A hook's tail, known only from its durable step report (no live lines).
            tail = ["stopped", "bye"]
            await peer.send(report(rid, "ApplicationStop", "succeeded", 1, output=tail))
            assert await peer.receive() == m.Ack(seq=1)
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
            store.set_rollout_state(rid, "succeeded", 9.0)
            server.engine._emit(rid, "rollout", state="succeeded", error="")
            rest = [e async for e in events]
            assert [e.kind for e in rest] == ["end"]
            logs = await client.call("logs.get", host="web-1", rollout_id=rid)
            nursery.cancel_scope.cancel()
    assert [(x["step"], x["line"]) for x in logs["lines"]] == [
        ("ApplicationStop", "stopped"),
        ("ApplicationStop", "bye"),
        ("ApplicationStart", "starting"),
    ]


@pytest.mark.parametrize("mode", ["live", "plain", "json"])
async def test_watch_rollout_follows_to_the_end_in_every_mode(store: Store, mode: Mode) -> None:
    server, watching = make_server(store)
    out = io.StringIO()
    with trio.fail_after(10):
        async with (
            trio.open_nursery() as nursery,
            dial(server, nursery) as peer,
            dial(server, nursery) as operator,
        ):
            await peer_connected(peer)
            rid = server.engine.start_rollout(MANIFEST.release_id, "all").rollout_id
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
            await peer.send(report(rid, "stage", "succeeded", 1, result="succeeded"))
            assert await peer.receive() == m.Ack(seq=1)
            await server.engine.tick()
            assert isinstance(await peer.receive(), m.Activate)
            await peer.send(report(rid, "activate", "succeeded", 2, result="succeeded"))
            assert await peer.receive() == m.Ack(seq=2)
            await server.engine.tick()
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

    server, watching = make_server(store)
    host = HostRecord("web-1", "127.0.0.11", 6881, {}, None, [], False, 0.0)
    store.upsert_host(host, 0.0)
    rid = server.engine.start_rollout(MANIFEST.release_id, "all").rollout_id
    client_stream, server_stream = trio.testing.lockstep_stream_pair()  # no buffer at all
    done = trio.Event()

    async def handle() -> None:
        await server.handle(server_stream)
        done.set()

    with trio.fail_after(PUSH_TIMEOUT * 3):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle)
            client = await cli(Channel(client_stream, Role.CLIENT))
            await client.subscribe("rollout.subscribe", rollout_id=rid)
            start = trio.current_time()
            watching.on_event(m.RolloutEvent(rid, 1, 0.0, "target", {"host": "web-1"}))
            await done.wait()  # the server gave up on this reader and closed its connection
            assert trio.current_time() - start == pytest.approx(PUSH_TIMEOUT)
    assert watching.hub.subscribers(rollout_topic(rid)) == 0
