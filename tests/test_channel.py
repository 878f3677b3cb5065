"""The trio shell of the control protocol, over in-memory streams: no sockets, no sleeps."""

from __future__ import annotations

import msgpack
import pytest
import trio
import trio.testing

from common import messages as m
from common.channel import Channel
from common.errors import ConnectionClosed, LocalProtocolError, RemoteProtocolError
from common.protocol import Role, frame

HELLO = m.Hello(name="web-1", address="127.0.0.1", bt_port=6881, labels={"env": "test"})
REPORT = m.StepReport(
    rollout_id="r1",
    host="web-1",
    step="download",
    attempt=1,
    state="succeeded",
    output=["x" * 1000, "é"],
    seq=3,
)


def channels() -> tuple[Channel, Channel, trio.testing.MemoryStapledStream]:
    """A connected (client, server) pair; also returns the client's raw stream."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    return Channel(client_stream, Role.CLIENT), Channel(server_stream, Role.SERVER), client_stream


async def test_messages_flow_both_ways() -> None:
    client, server, _ = channels()
    with trio.fail_after(5):
        await client.send(HELLO)
        assert await server.receive() == HELLO
        welcome = m.Welcome(heartbeat_interval=5.0)
        await server.send(welcome)
        assert await client.receive() == welcome
        await client.send(REPORT)
        await client.send(m.Heartbeat(sent_at=2.5))
        assert await server.receive() == REPORT
        assert await server.receive() == m.Heartbeat(sent_at=2.5)
        await server.send(m.Ack(seq=3))
        assert await client.receive() == m.Ack(seq=3)


async def test_concurrent_sends_do_not_interleave() -> None:
    client, server, _ = channels()
    reports = [m.StepReport("r1", "web-1", "download", 1, "running", seq=i) for i in range(20)]
    with trio.fail_after(5):
        await client.send(HELLO)
        async with trio.open_nursery() as nursery:
            for report in reports:
                nursery.start_soon(client.send, report)
        assert await server.receive() == HELLO
        got = [await server.receive() for _ in reports]
    assert sorted(got, key=lambda r: r.seq) == reports  # type: ignore[attr-defined]


async def test_remote_close_is_connection_closed() -> None:
    client, server, _ = channels()
    with trio.fail_after(5):
        await client.send(HELLO)
        await client.aclose()
        assert await server.receive() == HELLO
        with pytest.raises(ConnectionClosed, match="closed the connection"):
            await server.receive()


async def test_send_to_a_closed_remote_is_connection_closed() -> None:
    client, server, _ = channels()
    with trio.fail_after(5):
        await client.send(HELLO)
        assert await server.receive() == HELLO
        await client.aclose()
        with pytest.raises(ConnectionClosed, match="while sending ack"):
            await server.send(m.Ack(seq=1))


async def test_close_in_the_middle_of_a_message_is_a_remote_error() -> None:
    _client, server, raw = channels()
    data = frame(msgpack.packb(m.to_wire(HELLO), use_bin_type=True))
    with trio.fail_after(5):
        await raw.send_all(data[:-3])
        await raw.aclose()
        with pytest.raises(RemoteProtocolError, match="middle of a message"):
            await server.receive()


@pytest.mark.parametrize(
    ("garbage", "complaint"),
    [
        (b"\xc1", "undecodable"),
        (msgpack.packb([1, 2, 3]), "must be a map"),
        (msgpack.packb({"t": "launch_missiles"}), "unknown control message type"),
        (msgpack.packb({"t": "heartbeat", "sent_at": "soon"}), "wrong type"),
    ],
)
async def test_garbage_fails_with_a_goodbye_the_other_side_sees(
    garbage: bytes, complaint: str
) -> None:
    client, server, raw = channels()
    with trio.fail_after(5):
        await client.send(HELLO)
        assert await server.receive() == HELLO
        await raw.send_all(frame(garbage))
        with pytest.raises(RemoteProtocolError, match=complaint) as caught:
            await server.receive()
        await server.fail(caught.value)
        with pytest.raises(ConnectionClosed, match=f"said goodbye: .*{complaint}"):
            await client.receive()
        # After a goodbye the connection is over for the client too: sending is our bug now.
        with pytest.raises(LocalProtocolError, match="connection is closed"):
            await client.send(m.Heartbeat(sent_at=1.0))
        # ...and the server's side of the stream is really closed.
        with pytest.raises(trio.BrokenResourceError):
            await raw.send_all(b"x")


async def test_fail_before_hello_just_closes() -> None:
    # The server may not speak before the client's hello, so there is no goodbye to send.
    client, server, raw = channels()
    with trio.fail_after(5):
        await raw.send_all(frame(b"\xc1"))
        with pytest.raises(RemoteProtocolError) as caught:
            await server.receive()
        await server.fail(caught.value)
        with pytest.raises(ConnectionClosed, match="closed the connection"):
            await client.receive()


async def test_message_split_into_one_byte_writes_arrives_whole() -> None:
    client, server, raw = channels()
    stage = m.Stage(
        rollout_id="r1",
        manifest={"app": "demo", "size": 3},
        torrent=bytes(range(256)),
        peers=[["127.0.0.1", 6881]],
    )
    data = client.conn.send(HELLO)  # the bytes the client would write, sent by hand below
    received: list[m.Message] = []

    async def reader() -> None:
        received.append(await server.receive())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for i in range(len(data)):
                await raw.send_all(data[i : i + 1])
                await trio.testing.wait_all_tasks_blocked()
                if i < len(data) - 1:
                    # The reader really got the bytes one at a time, and keeps waiting.
                    assert server.conn.pending_bytes == i + 1
                    assert received == []
        assert received == [HELLO]
        await server.send(stage)
        assert await client.receive() == stage
