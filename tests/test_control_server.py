"""The seeder's control server, one connection handler at a time, over in-memory streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from common import messages as m
from common.channel import Channel
from common.crypto.certs import Holder
from common.errors import ConfigError, ConnectionClosed
from common.protocol import CLIENT_FRAME_LIMIT, Role, frame
from seeder.admission import Limits
from seeder.control import HEARTBEAT_INTERVAL, STREAM_END_GRACE, ControlServer, Reply
from seeder.engine import Engine
from seeder.roles import METHOD_ROLES
from seeder.store import Store
from tests.conftest import MANIFEST


class Clock:
    """The engine's clock: advances by one second on every reading, so writes are datable."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
async def server(store: Store) -> AsyncIterator[ControlServer]:
    engine = Engine(store, seeder_bt=("127.0.0.1", 1), clock=Clock())

    async def echo(params: dict[str, Any]) -> dict[str, Any]:
        return {"echo": params}

    async def refuse(params: dict[str, Any]) -> dict[str, Any]:
        raise ConfigError(f"no such thing as {params['what']!r}")

    async def rollout_start(params: dict[str, Any]) -> dict[str, Any]:
        rollout = engine.start_rollout(params["release_id"], params.get("hosts", "all"))
        return {"rollout_id": rollout.rollout_id}

    async def huge(params: dict[str, Any]) -> dict[str, Any]:
        return {"blob": b"x" * (CLIENT_FRAME_LIMIT + 1)}

    methods = {"echo": echo, "refuse": refuse, "rollout.start": rollout_start, "huge": huge}
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield ControlServer(store, engine, methods=methods, method_roles=TEST_ROLES)
        nursery.cancel_scope.cancel()


# The methods these tests serve, with roles (the server refuses methods without one).
TEST_ROLES = {
    **METHOD_ROLES,
    "echo": "viewer",
    "refuse": "viewer",
    "one": "viewer",
    "huge": "viewer",
}
OPERATOR = Holder("alice", "admin")


PEER = Holder("web-1", "host")


@asynccontextmanager
async def connection(
    server: ControlServer, who: Holder = PEER
) -> AsyncIterator[tuple[Channel, trio.Event]]:
    """A client channel to ``server.converse`` as the already authenticated ``who`` (TLS is
    tested over real sockets elsewhere); the event is set when the handler returns."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    done = trio.Event()

    async def handle() -> None:
        try:
            await server.converse(server_stream, who)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle)
        client = Channel(client_stream, Role.CLIENT)
        try:
            yield client, done
        finally:
            await client.aclose()


def hello(name: str = "web-1") -> m.Hello:
    return m.Hello(name=name, address="127.0.0.11", bt_port=6881, labels={"zone": "a"})


async def peer_connected(client: Channel, name: str = "web-1") -> None:
    await client.send(hello(name))
    assert await client.receive() == m.Welcome(heartbeat_interval=HEARTBEAT_INTERVAL)


def host(store: Store, name: str) -> Any:
    (record,) = (h for h in store.hosts() if h.name == name)
    return record


def connected(server: ControlServer, name: str) -> bool:
    return name in server.engine.connected()


async def test_hello_gets_welcome_and_registers_the_host(
    server: ControlServer, store: Store
) -> None:
    with trio.fail_after(5):
        async with connection(server) as (client, done):
            await peer_connected(client)
            record = host(store, "web-1")
            assert connected(server, "web-1") and record.labels == {"zone": "a"}
            assert (record.address, record.bt_port) == ("127.0.0.11", 6881)
            assert server.engine.connected() == {"web-1"}
            await client.aclose()
            await done.wait()
    assert server.engine.connected() == set()


def start_rollout(server: ControlServer) -> str:
    return server.engine.start_rollout(MANIFEST.release_id, "all").rollout_id


def stage_done(rollout_id: str, seq: int) -> m.StepReport:
    return m.StepReport(
        rollout_id=rollout_id,
        host="web-1",
        step="stage",
        attempt=1,
        state="succeeded",
        result="succeeded",
        at=5.0,
        seq=seq,
    )


async def test_step_report_is_acked_and_recorded(server: ControlServer, store: Store) -> None:
    with trio.fail_after(5):
        async with connection(server) as (client, _):
            await peer_connected(client)
            rid = start_rollout(server)
            assert isinstance(await client.receive(), m.SwarmMembers)  # the swarm, first
            assert isinstance(await client.receive(), m.Stage)  # from the peer's writer
            await client.send(stage_done(rid, seq=41))
            assert await client.receive() == m.Ack(seq=41)
            assert isinstance(await client.receive(), m.Activate)  # its only wave starts
    rollout = store.load_rollout(rid)  # what a restarted seeder would read
    assert rollout is not None
    (target,) = rollout.targets.values()
    (event,) = target.steps.values()
    assert (target.host, event.step, event.state, event.result) == (
        "web-1",
        "stage",
        "succeeded",
        "succeeded",
    )
    assert target.state == "activating"


async def test_the_same_report_twice_is_idempotent(server: ControlServer, store: Store) -> None:
    with trio.fail_after(5):
        async with connection(server) as (client, _):
            await peer_connected(client)
            rid = start_rollout(server)
            assert isinstance(await client.receive(), m.SwarmMembers)  # the swarm, first
            assert isinstance(await client.receive(), m.Stage)
            await client.send(stage_done(rid, seq=7))
            assert await client.receive() == m.Ack(seq=7)
            assert isinstance(await client.receive(), m.Activate)
            before = store.load_rollout(rid)
            entries = len(store.timeline(rid))
            # Re-sent after a reconnect (the ack was lost): acked again, applied once.
            await client.send(stage_done(rid, seq=7))
            assert await client.receive() == m.Ack(seq=7)
    after = store.load_rollout(rid)
    assert before is not None and after is not None
    assert len(after.targets["web-1"].steps) == 1
    assert after.targets == before.targets  # same state, same updated_at: nothing rewritten
    assert after.targets["web-1"].state == "activating"
    assert len(store.timeline(rid)) == entries  # no timeline entry for a duplicate


async def test_garbage_ends_only_its_own_connection(server: ControlServer, store: Store) -> None:
    with trio.fail_after(5):
        async with (
            connection(server, OPERATOR) as (cli, _),
            connection(server, Holder("web-9", "host")) as (bad, bad_done),
        ):
            await cli.send(m.ClientHello(client="test"))
            await peer_connected(bad, "web-9")
            await bad.stream.send_all(frame(b"\xc1\xc1\xc1"))  # not msgpack at all
            with pytest.raises(ConnectionClosed, match="goodbye: undecodable"):
                await bad.receive()
            await bad_done.wait()
            assert not connected(server, "web-9")
            # The other connection, handled concurrently all along, still works.
            await cli.send(m.Request(id=1, method="echo", params={"x": 1}))
            assert await cli.receive() == m.Response(id=1, ok=True, result={"echo": {"x": 1}})


async def test_garbage_instead_of_hello_closes_without_goodbye(server: ControlServer) -> None:
    with trio.fail_after(5):
        async with connection(server) as (client, done):
            await client.stream.send_all(frame(b"\x92\x01\x02"))  # msgpack, not a message
            await done.wait()
            with pytest.raises(ConnectionClosed, match="closed the connection"):
                await client.receive()


async def test_unknown_method(server: ControlServer) -> None:
    with trio.fail_after(5):
        async with connection(server, OPERATOR) as (client, _):
            await client.send(m.ClientHello(client="test"))
            await client.send(m.Request(id=3, method="launch", params={}))
            reply = await client.receive()
    assert isinstance(reply, m.Response)
    assert (reply.id, reply.ok, reply.error_code) == (3, False, "unknown_method")
    assert "launch" in reply.error


async def test_handler_errors_become_error_responses(server: ControlServer) -> None:
    with trio.fail_after(5):
        async with connection(server, OPERATOR) as (client, _):
            await client.send(m.ClientHello(client="test"))
            await client.send(m.Request(id=1, method="refuse", params={"what": "x"}))
            await client.send(m.Request(id=2, method="rollout.start", params={"release_id": "no"}))
            await client.send(m.Request(id=3, method="refuse", params={}))
            await client.send(m.Request(id=4, method="echo", params={"still": "here"}))
            replies = [await client.receive() for _ in range(4)]
    assert replies[0] == m.Response(
        id=1, ok=False, error_code="ConfigError", error="no such thing as 'x'"
    )
    assert replies[1] == m.Response(
        id=2, ok=False, error_code="UnknownRelease", error="unknown release 'no'"
    )
    assert isinstance(replies[2], m.Response)
    assert (replies[2].ok, replies[2].error_code) == (False, "bad_request")
    assert "refuse" in replies[2].error and "what" in replies[2].error
    assert replies[3] == m.Response(id=4, ok=True, result={"echo": {"still": "here"}})


async def test_a_silent_peer_is_dropped(
    server: ControlServer, store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(HEARTBEAT_INTERVAL * 20):
        async with connection(server) as (client, done):
            await peer_connected(client)
            start = trio.current_time()
            for _ in range(6):  # heartbeats keep it alive well past the silence limit
                await trio.sleep(HEARTBEAT_INTERVAL)
                await client.send(m.Heartbeat(sent_at=0.0))
            assert not done.is_set()
            assert connected(server, "web-1")
            await done.wait()
            silent = trio.current_time() - start - 6 * HEARTBEAT_INTERVAL
            assert silent == pytest.approx(HEARTBEAT_INTERVAL * 4)
            with pytest.raises(ConnectionClosed):
                await client.receive()
    assert not connected(server, "web-1")


async def test_a_backlog_of_reports_in_one_burst_is_acked_without_a_disconnect(
    server: ControlServer,
) -> None:
    with trio.fail_after(20):
        async with connection(server) as (client, done):
            await peer_connected(client)
            rid = start_rollout(server)
            assert isinstance(await client.receive(), m.SwarmMembers)  # the swarm, first
            assert isinstance(await client.receive(), m.Stage)
            burst = [
                m.StepReport(rid, "web-1", f"step-{i}", 1, "running", seq=i) for i in range(3000)
            ]
            await client.send_many(burst)  # one write, as a reconnecting peer's journal does
            acks = [await client.receive() for _ in burst]
            assert acks == [m.Ack(seq=i) for i in range(3000)]
            assert not done.is_set() and connected(server, "web-1")


def streaming_server(store: Store, after_last: trio.Event) -> ControlServer:
    """A server whose one stream pushes a single event, then waits for ``after_last`` before
    returning: the gap in which a client that read the event may already ask again."""
    engine = Engine(store, seeder_bt=("127.0.0.1", 1), clock=Clock())

    async def echo(params: dict[str, Any]) -> dict[str, Any]:
        return {"echo": params}

    async def one_event(params: dict[str, Any], reply: Reply) -> None:
        await reply.respond({})
        await reply.push(m.RolloutEvent("r1", 1, 0.0, "end", {"reason": "final"}))
        await after_last.wait()

    return ControlServer(
        store, engine, methods={"echo": echo}, streams={"one": one_event}, method_roles=TEST_ROLES
    )


async def test_a_request_sent_as_a_stream_ends_is_answered_next(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    after_last = trio.Event()
    server = streaming_server(store, after_last)
    async with connection(server, OPERATOR) as (client, done):
        await client.send(m.ClientHello(client="test"))
        await client.send(m.Request(id=1, method="one"))
        assert await client.receive() == m.Response(id=1, ok=True)
        assert (await client.receive()).TYPE == "rollout_event"
        await client.send(m.Request(id=2, method="echo", params={"a": 1}))
        await trio.sleep(STREAM_END_GRACE / 2)  # the handler has not returned yet
        after_last.set()
        assert await client.receive() == m.Response(id=2, ok=True, result={"echo": {"a": 1}})
        assert not done.is_set()


async def test_a_request_in_the_middle_of_a_stream_ends_the_connection(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    server = streaming_server(store, trio.Event())  # the stream never ends
    async with connection(server, OPERATOR) as (client, done):
        await client.send(m.ClientHello(client="test"))
        await client.send(m.Request(id=1, method="one"))
        assert await client.receive() == m.Response(id=1, ok=True)
        assert (await client.receive()).TYPE == "rollout_event"
        await client.send(m.Request(id=2, method="echo"))
        with pytest.raises(ConnectionClosed, match="request sent while one was streaming"):
            await client.receive()
        await done.wait()


async def test_an_answer_too_big_for_a_frame_is_an_error_not_a_dead_connection(
    server: ControlServer,
) -> None:
    with trio.fail_after(10):
        async with connection(server, OPERATOR) as (client, _):
            await client.send(m.ClientHello(client="test"))
            await client.send(m.Request(id=1, method="huge", params={}))
            reply = await client.receive()
            assert isinstance(reply, m.Response) and not reply.ok
            assert reply.error_code == "too_large"
            assert "huge: response is 6710892" in reply.error
            assert f"over the {CLIENT_FRAME_LIMIT}-byte frame limit" in reply.error
            await client.send(m.Request(id=2, method="echo", params={}))  # still served
            assert await client.receive() == m.Response(id=2, ok=True, result={"echo": {}})


def limited_server(store: Store, limits: Limits) -> ControlServer:
    engine = Engine(store, seeder_bt=("127.0.0.1", 1), clock=Clock())
    return ControlServer(store, engine, methods={}, limits=limits)


async def test_a_peer_flooding_heartbeats_is_slowed_then_cut(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    server = limited_server(store, Limits(message_rate=10, message_burst=5, cut_after=2))
    async with connection(server) as (client, done):
        await peer_connected(client)
        start = trio.current_time()
        await client.send_many([m.Heartbeat(sent_at=float(i)) for i in range(25)])
        await trio.testing.wait_all_tasks_blocked()
        # 1 hello + 5 heartbeats at once, then one per 0.1 s: the 25th is read at ~2 s.
        assert not done.is_set() and connected(server, "web-1")
        await client.send_many([m.Heartbeat(sent_at=0.0) for _ in range(1000)])
        with pytest.raises(ConnectionClosed, match=r"goodbye: over 10 messages/s for 2s"):
            await client.receive()
        await done.wait()
        assert 2.0 < trio.current_time() - start < 2.5  # cut once over the rate for 2 s
    assert not connected(server, "web-1")


async def test_a_connection_that_says_nothing_is_closed_at_the_hello_timeout(
    store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    server = limited_server(store, Limits(hello_timeout=3.0))
    async with connection(server) as (client, done):
        start = trio.current_time()
        await done.wait()
        assert trio.current_time() - start == pytest.approx(3.0)
        with pytest.raises(ConnectionClosed, match="closed the connection"):
            await client.receive()
