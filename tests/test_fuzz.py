"""Fuzzing (hypothesis): random and mutated bytes into the control protocol decoder and the
tracker's request handling. The only outcomes allowed: valid messages or the typed error
(RemoteProtocolError) for the protocol; an HTTP answer (a bencoded ``failure reason``, 400,
404, 405, 413, 431) or a plain close for the tracker; never another exception, a traceback in
the log, or a hang.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import h11
import msgpack
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from common import messages as m
from common.errors import RemoteProtocolError
from common.protocol import CLOSED, NEED_DATA, Connection, Role, frame
from common.torrent import bdecode
from seeder.tracker import Tracker

FUZZ = settings(
    # SHOAL_FUZZ_EXAMPLES=5000 for a longer hunt; 300 keeps the suite's run near 10 s.
    max_examples=int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "300")),
    deadline=None,  # a loaded CI box: bound the run by examples, not per-example time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

HELLO = m.Hello(name="web-1", address="10.0.0.5", bt_port=6881, labels={"env": "prod"})
PEER_SAYS: list[m.Message] = [
    HELLO,
    m.Heartbeat(sent_at=1.5),
    m.StepReport(
        rollout_id="r1",
        host="web-1",
        step="BeforeInstall",
        attempt=1,
        state="failed",
        result="timed_out",
        output=["a", "b"],
        seq=3,
    ),
    m.OutputLine(rollout_id="r1", host="web-1", step="Install", line="x"),
]
CLI_SAYS: list[m.Message] = [
    m.ClientHello(client="cli"),
    m.Request(id=1, method="rollout.start", params={"release_id": "x", "hosts": "all"}),
]
SEEDER_SAYS: list[m.Message] = [
    m.Welcome(heartbeat_interval=5.0),
    m.Stage(rollout_id="r1", manifest={"app": "x"}, torrent=b"d4:infoe", peers=[["a", 1]]),
    m.Ack(seq=3),
]


def wire(messages: list[m.Message]) -> bytes:
    client = Connection(Role.CLIENT)
    return b"".join(client.send(msg) for msg in messages)


def decode_all(conn: Connection, chunks: list[bytes]) -> list[m.Message]:
    """Feed ``chunks`` then end of stream; the messages, or RemoteProtocolError (and only it)."""
    out: list[m.Message] = []
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            if event is CLOSED:
                return out
            assert isinstance(event, m.Message)
            out.append(event)
            if conn.closed:  # a goodbye: the conversation is over
                return out
    raise AssertionError("end of stream fed but the connection never closed")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (position, kind, byte) edits: 0 flips a byte, 1 inserts one, 2 deletes one."""
    buf = bytearray(data)
    for position, kind, value in edits:
        if not buf:
            buf.append(value)
            continue
        i = position % len(buf)
        if kind == 0:
            buf[i] ^= value or 1
        elif kind == 1:
            buf.insert(i, value)
        else:
            del buf[i]
    return bytes(buf)


EDITS = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 2), st.integers(0, 255)), max_size=8
)
CUTS = st.lists(st.integers(0, 10**6), max_size=6)
ROLES = st.sampled_from([Role.SERVER, Role.CLIENT])

# msgpack values, nested: what a hostile encoder can put in a frame.
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    ["t", "name", "address", "bt_port", "labels", "id", "method", "params", "seq", "protocol",
     "sent_at", "rollout_id", "host", "step", "output", "client", "reason", "x"]
)  # fmt: skip


def check(role: Role, chunks: list[bytes]) -> None:
    conn = Connection(role)
    if role is Role.CLIENT:  # a client has said its hello before it hears anything
        conn.send(HELLO)
    with contextlib.suppress(RemoteProtocolError):  # the typed error is an allowed outcome
        decode_all(conn, chunks)


@FUZZ
@given(data=st.binary(max_size=2048), cuts=CUTS, role=ROLES)
def test_random_bytes_give_messages_or_the_typed_error(
    data: bytes, cuts: list[int], role: Role
) -> None:
    check(role, split(data, cuts))


@FUZZ
@given(
    which=st.sampled_from(["peer", "cli", "seeder"]),
    edits=EDITS,
    cuts=CUTS,
)
def test_mutated_conversations_give_messages_or_the_typed_error(
    which: str, edits: list[tuple[int, int, int]], cuts: list[int]
) -> None:
    if which == "seeder":
        server = Connection(Role.SERVER)
        server.receive_data(wire([HELLO]))
        server.next_event()
        data, role = b"".join(server.send(msg) for msg in SEEDER_SAYS), Role.CLIENT
    else:
        data, role = wire(PEER_SAYS if which == "peer" else CLI_SAYS), Role.SERVER
    check(role, split(mutate(data, edits), cuts))


@FUZZ
@given(
    kind=st.sampled_from(sorted(m.MESSAGE_TYPES)),
    body=st.dictionaries(FIELD_NAMES, VALUES, max_size=8),
    after_hello=st.booleans(),
)
def test_well_framed_msgpack_of_any_shape_gives_a_message_or_the_typed_error(
    kind: str, body: dict[str, Any], after_hello: bool
) -> None:
    body = {"t": kind, **body} if "t" not in body else body
    payload = frame(msgpack.packb(body, use_bin_type=True))
    prefix = wire([HELLO]) if after_hello else b""
    check(Role.SERVER, [prefix + payload])


# --- the tracker --------------------------------------------------------------------------------

# Targets built from the tokens announces are made of, so that the parser's corners are reached.
TOKENS = [
    b"/", b"//", b"/announce", b"/scrape", b"?", b"&", b"=", b"#", b"[", b"]", b":", b"@",
    b"%", b"%2", b"%zz", b"%00", b"%ff", b"+", b";", b"info_hash", b"peer_id", b"port", b"left",
    b"numwant", b"event", b"compact", b"no_peer_id", b"started", b"stopped", b"0", b"1", b"-1",
    b"65536", b"9" * 30, b"1_0", b" 5", b"\xff", b"x" * 20, b"-LT2000-abcdefghijkl",
]  # fmt: skip
TARGETS = st.lists(st.sampled_from(TOKENS), max_size=30).map(b"".join)
GOOD_TARGET = (
    b"/announce?info_hash=%01%02%03%04%05%06%07%08%09%0a%0b%0c%0d%0e%0f%10%11%12%13%14"
    b"&peer_id=-LT2000-abcdefghijkl&port=6881&left=0&event=started&compact=1"
)


def check_tracker_answer(status: int, body: bytes) -> None:
    assert status in (200, 400, 404, 405, 413, 431), status
    if status == 200:
        decoded = bdecode(body)
        assert isinstance(decoded, dict)
        assert b"failure reason" in decoded or b"interval" in decoded or b"files" in decoded


@FUZZ
@given(target=TARGETS | st.binary(max_size=300), edits=EDITS)
@example(target=b"//[", edits=[])  # found by this test (with more examples): urlsplit raised
def test_tracker_answers_any_target_with_a_failure_reason_or_an_http_error(
    target: bytes, edits: list[tuple[int, int, int]]
) -> None:
    tracker = Tracker(clock=lambda: 0.0)
    for candidate in (target, mutate(GOOD_TARGET, edits)):
        check_tracker_answer(*tracker.respond("10.0.0.7", candidate))


async def _converse(tracker: Tracker, data: bytes) -> bytes:
    """Send ``data`` to the tracker's connection handler, half-close, read all it answers."""
    ours, theirs = trio.testing.memory_stream_pair()
    received = bytearray()
    with trio.fail_after(5):  # never a hang: the tracker answers or closes within its timeout
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tracker.serve_stream, theirs, "10.0.0.7")
            await ours.send_all(data)
            await ours.send_stream.aclose()
            while chunk := await ours.receive_some(65536):
                received += chunk
    return bytes(received)


def check_http_reply(reply: bytes) -> None:
    """The first response in ``reply`` parses as HTTP with an allowed status and body (or the
    tracker closed without a word: the bytes never made a whole request)."""
    if not reply:
        return
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(reply)
    client.receive_data(b"")
    status, body = 0, b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            check_tracker_answer(status, body)
            return  # the first response is the one for our bytes
        else:
            raise AssertionError(f"a partial response: {reply[:200]!r}")


REQUEST = b"GET " + GOOD_TARGET + b" HTTP/1.1\r\nHost: 10.0.0.1:7701\r\nUser-Agent: lt\r\n\r\n"


@FUZZ
@given(
    data=st.binary(max_size=600)
    | st.just(REQUEST).map(lambda r: r)
    | TARGETS.map(lambda t: b"GET " + t + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    edits=EDITS,
)
def test_tracker_connection_survives_random_and_mutated_requests(
    data: bytes, edits: list[tuple[int, int, int]], caplog: pytest.LogCaptureFixture
) -> None:
    tracker = Tracker(timeout=1.0)
    with caplog.at_level(logging.ERROR, logger="seeder.tracker"):
        for candidate in (data, mutate(REQUEST, edits)):
            check_http_reply(trio.run(_converse, tracker, candidate))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_huge_request_head_is_refused_not_buffered() -> None:
    tracker = Tracker(timeout=1.0)
    head = b"GET /announce?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = trio.run(_converse, tracker, head)
    assert reply.startswith(b"HTTP/1.1 431 ") or reply.startswith(b"HTTP/1.1 400 "), reply[:80]
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n"
    assert trio.run(_converse, tracker, many)[:12] in (b"HTTP/1.1 431", b"HTTP/1.1 400")
