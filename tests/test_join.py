"""The join listener and ``peer.join`` over real sockets and real TLS, in one process.

The seeder side is the real thing minus the rest of the service: an identity made by
``init_identity``, its ``SeederCA``, a real store, the real join listener on a free port. Time
for token expiry is a clock the test moves. Every refusal is tried for real and must leave the
joining host's data directory as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from common import join as j
from common import tls
from common.addr import Address
from common.crypto import certs
from common.crypto.csr import make_csr
from common.crypto.tokens import JoinToken, ca_pin
from common.errors import ConnectionClosed
from common.protocol import NEED_DATA
from peer.join import JoinOptions, existing, join
from seeder.admission import FailedAttempts
from seeder.authority import SeederCA, init_identity
from seeder.join import JOIN_LIMITS, Enrollments, JoinServer
from seeder.localfleet import free_port
from seeder.store import Store
from seeder.tokens import token_methods

IP = "127.0.0.1"
FLOODER = "127.0.0.2"  # another loopback address, to dial the listener from


@dataclass
class Seeder:
    root: Path
    authority: SeederCA
    store: Store
    at: Address  # the "control" address: the join listener is on its port + 3
    now: list[float]

    async def token(self, **params: Any) -> JoinToken:
        methods = token_methods(self.store, ca_pin(self.authority.ca_pem), lambda: self.now[0])
        return JoinToken.parse((await methods["token.create"](params))["token"])

    def opts(self, token: JoinToken, name: str, **kw: Any) -> JoinOptions:
        return JoinOptions(self.at, token, self.root / "hosts" / name, name, **kw)


async def _seeder(root: Path, nursery: trio.Nursery, **server: Any) -> Seeder:
    """A join listener on a free port (``server``: JoinServer options)."""
    init_identity(root, [IP, "localhost"], dt.datetime.now(dt.UTC))
    authority = SeederCA(root)
    store = Store(root / "seeder.db")
    now = [dt.datetime.now(dt.UTC).timestamp()]
    server = JoinServer(
        Enrollments(store, authority, lambda: now[0]),
        tls.JoinServerTLS(authority.dir / "seeder.crt", authority.dir / "seeder.key"),
        **server,
    )
    port = free_port(IP)
    await nursery.start(server.serve, IP, port)
    return Seeder(root, authority, store, Address(IP, port - 3), now)


@pytest.fixture
async def seeder(tmp_path: Path) -> AsyncIterator[Seeder]:
    async with trio.open_nursery() as nursery:
        s = await _seeder(tmp_path / "seeder", nursery)
        yield s
        nursery.cancel_scope.cancel()
        s.store.close()


async def _refused(seeder: Seeder, opts: JoinOptions, code: str) -> str:
    with pytest.raises(j.JoinError) as caught:
        await join(opts)
    assert caught.value.code == code, caught.value
    assert not (opts.data_dir / "identity").exists()
    return str(caught.value)


async def test_join_writes_an_identity_the_ca_vouches_for(seeder: Seeder) -> None:
    token = await seeder.token(uses=2, labels={"env": "prod"})
    opts = seeder.opts(token, "web-1", labels={"rack": "r1", "env": "dev"})
    joined = await join(opts)
    assert joined.joined and joined.labels == {"env": "prod", "rack": "r1"}
    ident = opts.data_dir / "identity"
    assert sorted(os.listdir(ident)) == ["ca.crt", "host.crt", "host.key", "release-signing.pub"]
    assert stat.S_IMODE((ident / "host.key").stat().st_mode) == 0o600
    assert (ident / "ca.crt").read_bytes() == seeder.authority.ca_pem
    assert (ident / "release-signing.pub").read_bytes() == seeder.authority.signing_public()
    cert = certs.load_certificate((ident / "host.crt").read_bytes())
    assert certs.holder(cert) == certs.Holder("web-1", "host")
    assert certs.issued_by(cert, seeder.authority.ca.cert)
    key = certs.load_private_key((ident / "host.key").read_bytes())
    assert cert.public_key() == key.public_key()
    # the seeder recorded the enrollment with the labels (the token's winning), used one use
    assert seeder.authority.labels("web-1") == {"env": "prod", "rack": "r1"}
    (record,) = seeder.store.tokens()
    assert (record.uses, record.uses_left) == (2, 1)
    # again: a no-op that says so, no second certificate
    again = await join(opts)
    assert not again.joined and again.name == "web-1"
    assert seeder.store.tokens()[0].uses_left == 1
    assert existing(opts.data_dir) == again


async def test_expired_token(seeder: Seeder) -> None:
    token = await seeder.token(ttl=60)
    seeder.now[0] += 61
    reason = await _refused(seeder, seeder.opts(token, "web-1"), "token_expired")
    assert f"join token {token.token_id} expired" in reason


async def test_used_up_and_revoked_tokens(seeder: Seeder) -> None:
    token = await seeder.token(uses=1)
    await join(seeder.opts(token, "web-1"))
    reason = await _refused(seeder, seeder.opts(token, "web-2"), "token_used_up")
    assert "used up" in reason
    other = await seeder.token(uses=5)
    assert seeder.store.revoke_token(other.token_id, seeder.now[0])
    await _refused(seeder, seeder.opts(other, "web-3"), "token_revoked")


async def test_wrong_secret_and_unknown_token_say_the_same(seeder: Seeder) -> None:
    token = await seeder.token()
    forged = JoinToken(token.token_id, "0" * 32, token.ca_pin)
    unknown = JoinToken("0" * 12, token.secret, token.ca_pin)
    a = await _refused(seeder, seeder.opts(forged, "web-1"), "bad_token")
    b = await _refused(seeder, seeder.opts(unknown, "web-2"), "bad_token")
    assert a.split("refused the join: ")[1] == b.split("refused the join: ")[1]
    assert seeder.store.token(token.token_id).uses_left == 1  # type: ignore[union-attr]


async def test_name_pattern(seeder: Seeder) -> None:
    token = await seeder.token(uses=2, name_pattern="web-*")
    reason = await _refused(seeder, seeder.opts(token, "db-1"), "name_refused")
    assert "'web-*'" in reason
    await join(seeder.opts(token, "web-9"))


async def test_a_live_hosts_name_cannot_be_taken_until_it_is_revoked(seeder: Seeder) -> None:
    token = await seeder.token(uses=3)
    await join(seeder.opts(token, "web-1"))
    impostor = JoinOptions(seeder.at, token, seeder.root / "impostor", "web-1")
    reason = await _refused(seeder, impostor, "name_taken")
    assert "shoal hosts revoke" in reason
    assert seeder.store.token(token.token_id).uses_left == 2  # type: ignore[union-attr]
    seeder.authority.revoke_host("web-1", dt.datetime.now(dt.UTC))
    assert (await join(impostor)).joined  # an operator revoked the old one: re-enrolling works


async def test_two_hosts_racing_for_the_last_use(seeder: Seeder) -> None:
    token = await seeder.token(uses=1)
    results: list[str] = []

    async def one(name: str) -> None:
        try:
            await join(seeder.opts(token, name))
            results.append("joined")
        except j.JoinError as exc:
            results.append(exc.code)

    async with trio.open_nursery() as nursery:
        for i in range(4):
            nursery.start_soon(one, f"web-{i}")
    assert sorted(results) == ["joined", "token_used_up", "token_used_up", "token_used_up"]
    assert seeder.store.token(token.token_id).uses_left == 0  # type: ignore[union-attr]


async def test_a_seeder_with_another_ca_is_refused_before_anything_is_sent(
    seeder: Seeder, tmp_path: Path
) -> None:
    token = await seeder.token()
    async with trio.open_nursery() as nursery:
        other = await _seeder(tmp_path / "other", nursery)
        # the token of the first seeder, dialled at the second one
        opts = JoinOptions(other.at, token, tmp_path / "host", "web-1")
        with pytest.raises(j.JoinError) as caught:
            await join(opts)
        nursery.cancel_scope.cancel()
    assert caught.value.code == "ca_pin_mismatch"
    assert f"CA pin mismatch: the seeder at {IP}:{other.at.port + 3} is not the one" in str(
        caught.value
    )
    assert not (tmp_path / "host").exists()
    assert other.authority.certificates() == other.authority.certificates()[:2]  # seeder+admin


async def test_an_impostor_holding_the_public_ca_cert_gets_no_token(
    seeder: Seeder, tmp_path: Path
) -> None:
    """It answers Discover with the real CA (public), so the pin matches; but it cannot show a
    certificate of that CA, so the second handshake fails and the token is never sent."""
    token = await seeder.token()
    init_identity(tmp_path / "fake", [IP], dt.datetime.now(dt.UTC))
    fake = SeederCA(tmp_path / "fake")
    fake_tls = tls.JoinServerTLS(fake.dir / "seeder.crt", fake.dir / "seeder.key")
    received: list[bytes] = []
    handshakes: list[str] = []

    async def impostor(transport: trio.abc.Stream) -> None:
        try:
            stream = await fake_tls.accept(transport, 5)
        except ConnectionClosed as exc:
            handshakes.append(str(exc))
            return
        handshakes.append("ok")
        conn = j.JoinConnection(j.JoinRole.SEEDER)
        data = await stream.receive_some(65536)
        received.append(bytes(data))
        conn.receive_data(bytes(data))
        conn.next_event()
        await stream.send_all(conn.send(j.CaCert(ca_cert=seeder.authority.ca_pem)))
        await stream.aclose()

    port = free_port(IP)
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(port, host=IP)
        nursery.start_soon(trio.serve_listeners, impostor, listeners)
        opts = JoinOptions(Address(IP, port), token, tmp_path / "host", "web-1", join_port=port)
        with pytest.raises(j.JoinError) as caught:
            await join(opts)
        with trio.fail_after(10):
            while len(handshakes) < 2:  # the impostor's side of the refused handshake
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert caught.value.code == "seeder_not_verified", caught.value
    assert "refusing to send the token" in str(caught.value)
    assert handshakes[0] == "ok" and handshakes[1] != "ok"  # discovery, then the refused one
    assert len(received) == 1 and token.secret.encode() not in received[0]
    assert not (tmp_path / "host").exists()


async def test_the_private_key_never_crosses_the_network(seeder: Seeder, tmp_path: Path) -> None:
    """A relay with the seeder's own certificate terminates the host's TLS and forwards the
    plaintext to the real join port: everything the host sends is captured, in the clear."""
    token = await seeder.token()
    ident = seeder.authority.dir
    relay_tls = tls.JoinServerTLS(ident / "seeder.crt", ident / "seeder.key")
    sent: list[bytes] = []

    async def relay(transport: trio.abc.Stream) -> None:
        host_side = await relay_tls.accept(transport, 5)
        tcp = await trio.open_tcp_stream(IP, seeder.at.port + 3)
        seeder_side = await tls.connect(tcp, tls.pinned_context(seeder.authority.ca_pem), IP)
        async with trio.open_nursery() as nursery:

            async def upstream() -> None:
                while data := await host_side.receive_some(65536):
                    sent.append(bytes(data))
                    await seeder_side.send_all(data)

            nursery.start_soon(upstream)
            with contextlib.suppress(trio.BrokenResourceError):
                while data := await seeder_side.receive_some(65536):
                    await host_side.send_all(data)
            nursery.cancel_scope.cancel()
        await host_side.aclose()

    port = free_port(IP)
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(port, host=IP)
        nursery.start_soon(trio.serve_listeners, relay, listeners)
        opts = JoinOptions(seeder.at, token, tmp_path / "host", "web-1", join_port=port)
        assert (await join(opts)).joined
        nursery.cancel_scope.cancel()
    wire = b"".join(sent)
    assert b"CERTIFICATE REQUEST" in wire and token.secret.encode() in wire  # captured for real
    key_pem = (tmp_path / "host" / "identity" / "host.key").read_bytes()
    key = certs.load_private_key(key_pem)
    secret_scalar = key.private_numbers().private_value.to_bytes(32, "big")
    assert b"PRIVATE KEY" not in wire
    assert secret_scalar not in wire
    assert key_pem.splitlines()[1] not in wire


async def test_garbage_and_oversized_requests_leave_the_listener_serving(seeder: Seeder) -> None:
    token = await seeder.token()
    port = seeder.at.port + 3
    # not TLS at all
    stream = await trio.open_tcp_stream(IP, port)
    await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
    with trio.fail_after(10):
        try:
            while await stream.receive_some(1024):
                pass
        except trio.BrokenResourceError:
            pass  # closed with a reset: fine, it is closed
    await stream.aclose()
    # TLS, then an announced 10 MiB message
    tcp = await trio.open_tcp_stream(IP, port)
    s = await tls.connect(tcp, tls.pinned_context(seeder.authority.ca_pem), IP)
    head = b"\x81\xa1t\xc6" + (10 << 20).to_bytes(4, "big")
    await s.send_all(head + b"\0" * (65537 - len(head)))  # one byte over the limit
    answer = j.JoinConnection(j.JoinRole.HOST)
    answer.send(j.Discover())  # only to put the machine in the waiting state
    with trio.fail_after(10):
        data = b""
        while chunk := await s.receive_some(65536):
            data += chunk
    answer.receive_data(data)
    refusal = answer.next_event()
    assert isinstance(refusal, j.JoinRefused) and refusal.code == "bad_request"
    assert "exceeds 65536 bytes" in refusal.reason
    await s.aclose()
    assert (await join(seeder.opts(token, "web-1"))).joined  # still serving


async def _raw_request(seeder: Seeder, request: j.JoinRequest) -> j.Message:
    """What a hand-made client (not ``peer.join``, which checks its input) is answered."""
    return await _raw(seeder, request)


async def _raw(seeder: Seeder, request: j.Message, local_address: str | None = None) -> j.Message:
    """The answer to ``request`` sent by hand, from ``local_address`` if given."""
    port = seeder.at.port + 3
    tcp = await trio.open_tcp_stream(IP, port, local_address=local_address)
    stream = await tls.connect(tcp, tls.pinned_context(seeder.authority.ca_pem), IP)
    conn = j.JoinConnection(j.JoinRole.HOST)
    await stream.send_all(conn.send(request))
    with trio.fail_after(10):
        while (event := conn.next_event()) is NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
    await stream.aclose()
    assert isinstance(event, j.Message)
    return event


async def test_names_and_labels_a_hostile_client_sends_are_refused(seeder: Seeder) -> None:
    token = await seeder.token()
    base = {"token_id": token.token_id, "secret": token.secret, "csr": b"-"}
    long_name = await _raw_request(seeder, j.JoinRequest(name="x" * 5000, **base))
    assert isinstance(long_name, j.JoinRefused) and long_name.code == "name_refused"
    assert len(long_name.reason) <= 300
    spaced = await _raw_request(seeder, j.JoinRequest(name="web 1", **base))
    assert isinstance(spaced, j.JoinRefused) and spaced.code == "name_refused"
    labels = await _raw_request(seeder, j.JoinRequest(name="web-1", labels={"a b": "c"}, **base))
    assert isinstance(labels, j.JoinRefused) and "label key 'a b'" in labels.reason
    csr = await _raw_request(seeder, j.JoinRequest(name="web-1", **base))
    assert isinstance(csr, j.JoinRefused) and csr.code == "bad_csr"
    other = make_csr(certs.generate_key(), "web-2")  # a good CSR, for another name
    mismatch = await _raw_request(
        seeder, j.JoinRequest(name="web-1", token_id=token.token_id, secret=token.secret, csr=other)
    )
    assert isinstance(mismatch, j.JoinRefused) and mismatch.code == "bad_csr"
    assert "asks for the name 'web-2' but the host joins as 'web-1'" in mismatch.reason
    assert seeder.store.token(token.token_id).uses_left == 1  # type: ignore[union-attr]


async def test_a_silent_seeder_times_out(tmp_path: Path) -> None:
    port = free_port(IP)
    held: list[trio.abc.Stream] = []

    async def hold(stream: trio.abc.Stream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    token = JoinToken("a" * 12, "b" * 32, "c" * 64)
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(port, host=IP)
        nursery.start_soon(trio.serve_listeners, hold, listeners)
        opts = JoinOptions(Address(IP, port - 3), token, tmp_path / "h", "web-1", patience=0.5)
        with pytest.raises(ConnectionClosed, match=r"took over 0.5s|did not answer within 0.5s"):
            await join(opts)
        nursery.cancel_scope.cancel()
    assert held and not (tmp_path / "h").exists()


async def test_silent_clients_are_dropped_and_capped(tmp_path: Path) -> None:
    limits = dataclasses.replace(JOIN_LIMITS, max_connections=2, hello_timeout=1.0)
    async with trio.open_nursery() as nursery:
        seeder = await _seeder(tmp_path / "s", nursery, limits=limits)
        token = await seeder.token()
        port = seeder.at.port + 3
        idle = [await trio.open_tcp_stream(IP, port) for _ in range(2)]  # both slots taken
        await trio.sleep(0.2)
        third = await trio.open_tcp_stream(IP, port)
        with trio.fail_after(5):  # closed at once, unanswered
            assert await _closed(third)
        for stream in idle:  # dropped when their time is up
            with trio.fail_after(10):
                assert await _closed(stream)
        assert (await join(seeder.opts(token, "web-1"))).joined  # the slots are free again
        nursery.cancel_scope.cancel()
    seeder.store.close()


async def test_one_address_cannot_take_the_join_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Idle connections from one address are capped (the control port's admission), each is
    closed when its time is up, and a host at another address joins meanwhile."""
    limits = dataclasses.replace(JOIN_LIMITS, max_per_address=3, hello_timeout=2.0)
    caplog.set_level(logging.WARNING, "shoal.seeder.join")
    async with trio.open_nursery() as nursery:
        seeder = await _seeder(tmp_path / "s", nursery, limits=limits)
        token = await seeder.token()
        port = seeder.at.port + 3
        idle = [await trio.open_tcp_stream(IP, port, local_address=FLOODER) for _ in range(3)]
        await trio.sleep(0.2)
        for _ in range(5):  # over the cap: closed at once, before TLS
            extra = await trio.open_tcp_stream(IP, port, local_address=FLOODER)
            with trio.fail_after(1):
                assert await _closed(extra)
        assert (await join(seeder.opts(token, "web-1"))).joined  # from 127.0.0.1, meanwhile
        for stream in idle:  # silent: closed after the timeout
            with trio.fail_after(10):
                assert await _closed(stream)
        answer = await _raw(seeder, j.Discover(), local_address=FLOODER)  # admitted again
        assert isinstance(answer, j.CaCert)
        nursery.cancel_scope.cancel()
    seeder.store.close()
    # one line for the five refusals and one for the three timeouts (rate-limited logging)
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if line.startswith(f"refused a connection from {FLOODER}")] == [
        f"refused a connection from {FLOODER}: {FLOODER} has 3 connections open"
    ]
    assert [line for line in lines if line.startswith(f"closed a connection from {FLOODER}")] == [
        f"closed a connection from {FLOODER}: no join exchange within 2s"
    ]


async def test_failed_joins_are_rate_limited_per_address(tmp_path: Path) -> None:
    now = [0.0]
    failures = FailedAttempts(burst=3, per_second=0.1)
    async with trio.open_nursery() as nursery:
        seeder = await _seeder(tmp_path / "s", nursery, failures=failures, clock=lambda: now[0])
        token = await seeder.token(uses=3)
        forged = j.JoinRequest(
            token_id=token.token_id,
            secret="0" * 32,
            name="web-9",
            csr=make_csr(certs.generate_key(), "web-9"),
        )
        for _ in range(3):
            answer = await _raw(seeder, forged, local_address=FLOODER)
            assert isinstance(answer, j.JoinRefused) and answer.code == "bad_token"
        good = j.JoinRequest(
            token_id=token.token_id,
            secret=token.secret,
            name="web-2",
            csr=make_csr(certs.generate_key(), "web-2"),
        )
        # over its budget, the address is refused without its request being looked at, even
        # with the right token
        limited = await _raw(seeder, good, local_address=FLOODER)
        assert isinstance(limited, j.JoinRefused) and limited.code == "rate_limited"
        assert f"too many failed joins from {FLOODER}; try again in 10s" in limited.reason
        assert seeder.store.token(token.token_id).uses_left == 3  # type: ignore[union-attr]
        assert (await join(seeder.opts(token, "web-1"))).joined  # another address is not held
        now[0] += 10.0  # one failure drained
        assert isinstance(await _raw(seeder, good, local_address=FLOODER), j.Joined)
        nursery.cancel_scope.cancel()
    seeder.store.close()


async def _closed(stream: trio.abc.Stream) -> bool:
    """Whether the remote closed ``stream`` without sending anything (an EOF or a reset)."""
    try:
        return await stream.receive_some(1024) == b""
    except trio.BrokenResourceError:
        return True


async def test_a_full_join_port_is_redialled_until_there_is_room(tmp_path: Path) -> None:
    """The cap closes a connection before TLS, before the host sent anything: the host dials
    again (jittered backoff) while ``retry_for`` lasts, and joins once the port has room; with
    no retry it fails at once, writing nothing."""
    limits = dataclasses.replace(JOIN_LIMITS, max_per_address=1, hello_timeout=2.0)
    async with trio.open_nursery() as nursery:
        seeder = await _seeder(tmp_path / "s", nursery, limits=limits)
        token = await seeder.token()
        port = seeder.at.port + 3
        idle = await trio.open_tcp_stream(IP, port, local_address=IP)  # the one slot of IP
        await trio.sleep(0.2)
        once = seeder.opts(token, "web-1", retry_for=0.0)
        with pytest.raises(ConnectionClosed):
            await join(once)
        assert not (once.data_dir / "identity").exists()
        with trio.fail_after(30):  # the idle connection is dropped after 2 s: room again
            joined = await join(seeder.opts(token, "web-1", retry_for=20.0))
        assert joined.joined and (joined.identity / "host.crt").exists()
        await idle.aclose()
        nursery.cancel_scope.cancel()
    seeder.store.close()
