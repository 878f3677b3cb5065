"""The sans-IO control protocol: round trips, framing, and typed errors on garbage."""

from __future__ import annotations

import msgpack
import pytest

from common import messages as m
from common.errors import LocalProtocolError, RemoteProtocolError
from common.protocol import (
    CLIENT_FRAME_LIMIT,
    CLOSED,
    FRAME_LIMIT,
    NEED_DATA,
    Connection,
    Role,
    frame,
)

PEER_MESSAGES: list[m.Message] = [
    m.Hello(
        name="web-1",
        address="10.0.0.5",
        bt_port=6881,
        labels={"env": "prod"},
        current="app-v1-abcd",
        staged=["app-v2-ef01"],
    ),
    m.Heartbeat(sent_at=1.5),
    m.StepReport(
        rollout_id="r1",
        host="web-1",
        step="BeforeInstall",
        attempt=1,
        state="failed",
        result="timed_out",
        detail="killed",
        exit_code=None,
        output=["line 1", "línea 2"],
        at=3.25,
        seq=7,
    ),
    m.OutputLine(rollout_id="r1", host="web-1", step="BeforeInstall", line="hello"),
]
SEEDER_MESSAGES: list[m.Message] = [
    m.Welcome(heartbeat_interval=5.0),
    m.Stage(
        rollout_id="r1",
        manifest={"app": "x", "size": 3},
        torrent=b"\x00\xffd4:info",
        peers=[["10.0.0.1", 6881]],
    ),
    m.Activate(rollout_id="r1", release_id="app-v2-ef01"),
    m.Ack(seq=7),
]


def pair() -> tuple[Connection, Connection]:
    return Connection(Role.CLIENT), Connection(Role.SERVER)


def drain(conn: Connection) -> list[m.Message]:
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        assert isinstance(event, m.Message)
        out.append(event)
    return out


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_peer_conversation_round_trips(byte_by_byte: bool) -> None:
    client, server = pair()
    wire = b"".join(client.send(msg) for msg in PEER_MESSAGES)
    chunks = [wire[i : i + 1] for i in range(len(wire))] if byte_by_byte else [wire]
    received: list[m.Message] = []
    for chunk in chunks:
        server.receive_data(chunk)
        received += drain(server)
    assert received == PEER_MESSAGES
    back = b"".join(server.send(msg) for msg in SEEDER_MESSAGES)
    client.receive_data(back)
    assert drain(client) == SEEDER_MESSAGES


def test_cli_request_response() -> None:
    client, server = pair()
    server.receive_data(client.send(m.ClientHello(client="cli")))
    server.receive_data(client.send(m.Request(id=1, method="hosts.list", params={"x": [1]})))
    assert drain(server) == [
        m.ClientHello(client="cli"),
        m.Request(id=1, method="hosts.list", params={"x": [1]}),
    ]
    client.receive_data(server.send(m.Response(id=1, ok=True, result={"hosts": []})))
    assert drain(client) == [m.Response(id=1, ok=True, result={"hosts": []})]


def test_clean_end_of_stream_is_closed() -> None:
    client, server = pair()
    server.receive_data(client.send(PEER_MESSAGES[0]))
    server.receive_data(b"")
    assert server.next_event() == PEER_MESSAGES[0]
    assert server.next_event() is CLOSED


def test_truncated_message_is_remote_error() -> None:
    client, server = pair()
    wire = client.send(PEER_MESSAGES[0])
    server.receive_data(wire[:-3])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a message"):
        server.next_event()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\xc1", "undecodable"),
        (b"\x92\x01", "undecodable"),  # an array cut short inside its frame
        (msgpack.packb({"t": "ping"}) + b"\x01", "bytes after the message"),
        (b"\xc7\x01\x05x", "extension type 5"),
        (msgpack.packb({(1, 2): 3}), "undecodable"),
        (msgpack.packb([1, 2, 3]), "must be a map"),
        (msgpack.packb({"t": "nonsense"}), "unknown control message type"),
        (msgpack.packb({"t": "hello", "name": "x"}), "missing fields"),
        (msgpack.packb({"t": "hello", "name": 5, "address": "a", "bt_port": 1}), "wrong type"),
        (msgpack.packb({"t": "heartbeat", "sent_at": 1.0}), "expected hello"),
        (
            msgpack.packb(
                {"t": "hello", "name": "a", "address": "b", "bt_port": 1, "protocol": 99}
            ),
            "protocol version 99",
        ),
    ],
)
def test_garbage_is_typed_remote_error(payload: bytes, match: str) -> None:
    _, server = pair()
    server.receive_data(frame(payload))
    with pytest.raises(RemoteProtocolError, match=match):
        server.next_event()


def test_message_not_allowed_for_role_is_remote_error() -> None:
    client, server = pair()
    server.receive_data(client.send(m.ClientHello(client="cli")))
    server.receive_data(frame(msgpack.packb(m.to_wire(m.Heartbeat(sent_at=1.0)))))
    assert isinstance(server.next_event(), m.ClientHello)
    with pytest.raises(RemoteProtocolError, match="not allowed"):
        server.next_event()


def test_oversized_frame_is_refused_on_its_length_prefix() -> None:
    client, server = pair()
    server.receive_data(client.send(PEER_MESSAGES[0]))
    assert server.next_event() == PEER_MESSAGES[0]
    # 200 MiB announced, 10 bytes sent: refused on the 4 header bytes, nothing buffered.
    server.receive_data((200 * 1024 * 1024).to_bytes(4, "big") + b"x" * 10)
    with pytest.raises(RemoteProtocolError, match="209715200 bytes exceeds the 8388608-byte"):
        server.next_event()
    assert server.pending_bytes == 14


def test_frames_before_the_hello_have_a_smaller_limit() -> None:
    client, server = pair()
    server.receive_data((100 * 1024).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError, match="16384-byte frame limit before the hello"):
        server.next_event()
    # A hello of up to the limit is fine, and after it the full limit applies.
    server = Connection(Role.SERVER, max_frame=4096, max_hello_frame=1024)
    assert Connection(Role.CLIENT).max_frame == CLIENT_FRAME_LIMIT > FRAME_LIMIT
    server.receive_data(client.send(PEER_MESSAGES[0]))
    assert server.next_event() == PEER_MESSAGES[0]
    big = m.Heartbeat(sent_at=1.0)
    body = msgpack.packb({**m.to_wire(big), "pad": "x" * 2000})
    server.receive_data(frame(body))
    assert server.next_event() == big
    server.receive_data(frame(msgpack.packb({**m.to_wire(big), "pad": "x" * 5000})))
    with pytest.raises(RemoteProtocolError, match="exceeds the 4096-byte frame limit"):
        server.next_event()


def test_an_unframed_old_client_gets_a_clear_error() -> None:
    _, server = pair()
    server.receive_data(msgpack.packb(m.to_wire(PEER_MESSAGES[0])))
    with pytest.raises(RemoteProtocolError, match="older shoal protocol"):
        server.next_event()


def test_empty_frame_is_remote_error() -> None:
    _, server = pair()
    server.receive_data(b"\0\0\0\0")
    with pytest.raises(RemoteProtocolError, match="empty control frame"):
        server.next_event()


def test_sending_over_the_limit_is_our_error() -> None:
    client = Connection(Role.CLIENT, max_send=1024)
    client.send(m.ClientHello(client="cli"))
    with pytest.raises(LocalProtocolError, match="over the 1024-byte frame limit"):
        client.send(m.Request(id=1, method="x", params={"blob": "y" * 2000}))


def test_local_errors_for_our_own_mistakes() -> None:
    client, server = pair()
    with pytest.raises(LocalProtocolError, match="hello first"):
        client.send(m.Heartbeat(sent_at=0.0))
    with pytest.raises(LocalProtocolError, match="before the client's hello"):
        server.send(m.Welcome(heartbeat_interval=1.0))
    client.send(PEER_MESSAGES[0])
    with pytest.raises(LocalProtocolError, match="may not send"):
        client.send(m.Request(id=1, method="x"))
    client.send(m.Goodbye(reason="bye"))
    with pytest.raises(LocalProtocolError, match="closed"):
        client.send(m.Heartbeat(sent_at=0.0))
