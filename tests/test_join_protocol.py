"""The join exchange's state machine: one request, one answer, bounded, errors by whose fault."""

from __future__ import annotations

import msgpack
import pytest

from common import join as j
from common.errors import LocalProtocolError, RemoteProtocolError
from common.protocol import CLOSED, NEED_DATA

REQUEST = j.JoinRequest(
    token_id="aaaaaaaaaaaa", secret="11" * 16, name="web-1", csr=b"CSR", labels={"env": "prod"}
)


def _pair() -> tuple[j.JoinConnection, j.JoinConnection]:
    return j.JoinConnection(j.JoinRole.HOST), j.JoinConnection(j.JoinRole.SEEDER)


def test_join_exchange_round_trip_byte_by_byte() -> None:
    host, seeder = _pair()
    data = host.send(REQUEST)
    for i in range(len(data)):
        assert seeder.next_event() is NEED_DATA
        seeder.receive_data(data[i : i + 1])
    assert seeder.next_event() == REQUEST
    assert seeder.state is j.JoinState.ANSWERING
    answer = j.Joined(name="web-1", host_cert=b"C", ca_cert=b"CA", signing_key=b"K")
    host.receive_data(seeder.send(answer))
    assert host.next_event() == answer
    assert host.state is seeder.state is j.JoinState.DONE
    host.receive_data(b"")
    assert host.next_event() is CLOSED


def test_discover_is_answered_with_the_ca_or_a_refusal() -> None:
    host, seeder = _pair()
    seeder.receive_data(host.send(j.Discover()))
    assert isinstance(seeder.next_event(), j.Discover)
    with pytest.raises(LocalProtocolError, match="cannot send joined"):
        seeder.send(j.Joined(name="x", host_cert=b"", ca_cert=b"", signing_key=b""))
    host.receive_data(seeder.send(j.CaCert(ca_cert=b"PEM")))
    assert host.next_event() == j.CaCert(ca_cert=b"PEM")


def test_one_request_per_connection() -> None:
    host, seeder = _pair()
    host.send(j.Discover())
    with pytest.raises(LocalProtocolError):
        host.send(REQUEST)
    seeder.receive_data(j.JoinConnection(j.JoinRole.HOST).send(j.Discover()))
    seeder.next_event()
    with pytest.raises(RemoteProtocolError, match="unexpected data"):
        seeder.receive_data(b"\x80")  # the host talks while it is the seeder's turn


def test_seeder_may_not_speak_first_and_host_may_not_answer() -> None:
    host, seeder = _pair()
    with pytest.raises(RemoteProtocolError, match="unexpected data"):
        host.receive_data(b"\x80")
    with pytest.raises(LocalProtocolError):
        host.send(j.CaCert(ca_cert=b"x"))
    with pytest.raises(LocalProtocolError):
        seeder.send(j.CaCert(ca_cert=b"x"))


def test_an_answer_that_does_not_answer_is_the_seeders_fault() -> None:
    host = j.JoinConnection(j.JoinRole.HOST)
    host.send(j.Discover())
    wrong = msgpack.packb(
        {"t": "joined", "name": "x", "host_cert": b"", "ca_cert": b"", "signing_key": b""}
    )
    host.receive_data(wrong)
    with pytest.raises(RemoteProtocolError, match="does not answer"):
        host.next_event()


@pytest.mark.parametrize(
    ("wire", "needle"),
    [
        (msgpack.packb([1, 2]), "must be a map"),
        (msgpack.packb({"t": "hello"}), "unknown join message type"),
        (msgpack.packb({"t": "join", "token_id": 1}), "wrong type"),
        (msgpack.packb({"t": "discover", "protocol": 9}), "join protocol 9 is not supported"),
        (msgpack.packb({"t": "ca_cert", "ca_cert": b"x"}), "may not send ca_cert"),
        (b"\xc1", "undecodable"),
    ],
)
def test_garbage_is_the_remotes_fault(wire: bytes, needle: str) -> None:
    seeder = j.JoinConnection(j.JoinRole.SEEDER)
    seeder.receive_data(wire)
    with pytest.raises(RemoteProtocolError, match=needle):
        seeder.next_event()


def test_oversized_message_is_refused_before_it_is_buffered() -> None:
    seeder = j.JoinConnection(j.JoinRole.SEEDER)
    header = b"\xc6" + (10 * 1024 * 1024).to_bytes(4, "big")  # bin32 of 10 MiB
    seeder.receive_data(b"\x81\xa1t" + header)
    with pytest.raises(RemoteProtocolError, match="exceeds 65536 bytes"):
        for _ in range(20):
            seeder.receive_data(b"\0" * 8192)
            assert seeder.next_event() is NEED_DATA


def test_truncated_message_then_close() -> None:
    seeder = j.JoinConnection(j.JoinRole.SEEDER)
    seeder.receive_data(j.JoinConnection(j.JoinRole.HOST).send(REQUEST)[:10])
    assert seeder.next_event() is NEED_DATA
    seeder.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="in the middle of a message"):
        seeder.next_event()


def test_seeder_may_refuse_an_unreadable_request() -> None:
    seeder = j.JoinConnection(j.JoinRole.SEEDER)
    data = seeder.send(j.JoinRefused(code=j.RefusalCode.BAD_REQUEST, reason="garbage"))
    assert msgpack.unpackb(data)["code"] == "bad_request"
    assert seeder.state is j.JoinState.DONE


def test_control_messages_are_not_join_messages() -> None:
    from common import messages as m

    with pytest.raises(LocalProtocolError, match="not a join message"):
        j.JoinConnection(j.JoinRole.HOST).send(m.Heartbeat(sent_at=1.0))
    with pytest.raises(LocalProtocolError):
        m.to_wire(j.Discover())
