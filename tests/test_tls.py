"""Mutual TLS over real sockets: who is refused in the handshake, and who gets through.

The hostile clients here build their own ``ssl`` contexts (an attacker is not bound by
common.tls); everything else goes through common.tls and common.crypto.certs.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from common import tls
from common.crypto import certs
from common.errors import ConnectionClosed, TLSRefused

NOW = dt.datetime.now(dt.UTC)


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = certs.Authority.create("test CA", NOW)
        self.ca_pem = certs.cert_pem(self.ca.cert)
        key = certs.generate_key()
        cert = self.ca.issue(key.public_key(), "seeder", "seeder", now=NOW, hosts=["127.0.0.1"])
        self.server_cert, self.server_key = root / "s.crt", root / "s.key"
        certs.write_public(self.server_cert, certs.cert_pem(cert))
        certs.write_private(self.server_key, certs.key_pem(key))

    def credential(
        self, name: str, role: str = "host", *, ca: certs.Authority | None = None, **kw: object
    ) -> tuple[Path, certs.Credential]:
        authority = ca or self.ca
        key = certs.generate_key()
        cert = authority.issue(key.public_key(), name, role, now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]
        cred = certs.Credential(cert, key, authority.cert)
        path = self.root / f"{name}.pem"
        certs.write_private(path, cred.to_pem(), overwrite=True)
        return path, cred

    def client(self, path: Path) -> ssl.SSLContext:
        return tls.client_context(path, None, self.ca_pem)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


async def serve(server: tls.ServerTLS, seen: list[object], nursery: trio.Nursery) -> int:
    async def handle(transport: trio.SocketStream) -> None:
        try:
            stream, who = await server.accept(transport, patience=5)
        except ConnectionClosed as exc:
            seen.append(exc)
            return
        seen.append(who)
        await stream.send_all(b"hi " + who.name.encode())
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def talk(port: int, ctx: ssl.SSLContext, name: str = "127.0.0.1") -> bytes:
    transport = await trio.open_tcp_stream("127.0.0.1", port)
    stream = await tls.connect(transport, ctx, name, patience=5)
    try:
        return bytes(await stream.receive_some(100))
    finally:
        await stream.aclose()


@pytest.fixture
async def running(pki: Pki) -> AsyncIterator[tuple[tls.ServerTLS, int, list[object]]]:
    crl = certs.crl_pem(pki.ca.revocation_list([], NOW))
    server = tls.ServerTLS(pki.server_cert, pki.server_key, pki.ca_pem, crl)
    seen: list[object] = []
    async with trio.open_nursery() as nursery:
        port = await serve(server, seen, nursery)
        yield server, port, seen
        nursery.cancel_scope.cancel()


async def test_a_certificate_of_the_ca_gets_through_and_names_its_holder(
    pki: Pki, running: tuple[tls.ServerTLS, int, list[object]]
) -> None:
    _, port, seen = running
    path, _ = pki.credential("web-1")
    assert await talk(port, pki.client(path)) == b"hi web-1"
    assert seen == [certs.Holder("web-1", "host")]


async def refused(port: int, ctx: ssl.SSLContext, seen: list[object]) -> TLSRefused:
    with pytest.raises(TLSRefused) as caught:
        await talk(port, ctx)
    assert caught.value.ours, caught.value  # the client's certificate was refused
    with trio.fail_after(5):
        while not seen:
            await trio.sleep(0.01)
    assert isinstance(seen[0], TLSRefused) and not seen[0].ours, seen
    return seen[0]


async def test_no_certificate_is_refused_in_the_handshake(
    pki: Pki, running: tuple[tls.ServerTLS, int, list[object]]
) -> None:
    _, port, seen = running
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.load_verify_locations(cadata=pki.ca_pem.decode())
    error = await refused(port, bare, seen)
    assert "certificate" in str(error)


async def test_a_certificate_of_another_ca_is_refused(
    pki: Pki, running: tuple[tls.ServerTLS, int, list[object]]
) -> None:
    _, port, seen = running
    other = certs.Authority.create("another CA", NOW)
    path, _ = pki.credential("web-1", ca=other)
    error = await refused(port, pki.client(path), seen)
    assert "self-signed" in str(error) or "local issuer" in str(error)


async def test_an_expired_certificate_is_refused(
    pki: Pki, running: tuple[tls.ServerTLS, int, list[object]]
) -> None:
    _, port, seen = running
    then = NOW - dt.timedelta(days=30)
    path, _ = pki.credential("web-1", now=then, not_after=then + dt.timedelta(days=1))
    error = await refused(port, pki.client(path), seen)
    assert "expired" in str(error)


async def test_a_revoked_certificate_is_refused_once_the_crl_is_reloaded(
    pki: Pki, running: tuple[tls.ServerTLS, int, list[object]]
) -> None:
    server, port, seen = running
    path, cred = pki.credential("web-1")
    keep, _ = pki.credential("web-2")
    assert await talk(port, pki.client(path)) == b"hi web-1"
    server.reload(certs.crl_pem(pki.ca.revocation_list([cred.cert.serial_number], NOW)))
    seen.clear()
    error = await refused(port, pki.client(path), seen)
    assert "revoked" in str(error)
    seen.clear()
    assert await talk(port, pki.client(keep)) == b"hi web-2"  # only that certificate


async def test_the_client_refuses_a_seeder_with_another_name_or_ca(
    pki: Pki, running: tuple[tls.ServerTLS, int, list[object]]
) -> None:
    _, port, _ = running
    path, _ = pki.credential("web-1")
    with pytest.raises(TLSRefused) as caught:
        await talk(port, pki.client(path), name="seeder.example")
    assert not caught.value.ours and "mismatch" in str(caught.value)
    other = certs.Authority.create("another CA", NOW)
    stranger = tls.client_context(path, None, certs.cert_pem(other.cert))
    with pytest.raises(TLSRefused) as caught:
        await talk(port, stranger)
    assert not caught.value.ours


async def test_a_host_certificate_cannot_serve_as_the_seeder(pki: Pki, tmp_path: Path) -> None:
    key = certs.generate_key()
    host_cert = pki.ca.issue(key.public_key(), "web-1", "host", now=NOW)
    certs.write_public(tmp_path / "h.crt", certs.cert_pem(host_cert))
    certs.write_private(tmp_path / "h.key", certs.key_pem(key))
    crl = certs.crl_pem(pki.ca.revocation_list([], NOW))
    impostor = tls.ServerTLS(tmp_path / "h.crt", tmp_path / "h.key", pki.ca_pem, crl)
    seen: list[object] = []
    path, _ = pki.credential("web-2")
    async with trio.open_nursery() as nursery:
        port = await serve(impostor, seen, nursery)
        with pytest.raises(TLSRefused) as caught:
            await talk(port, pki.client(path), name="web-1")
        nursery.cancel_scope.cancel()
    assert not caught.value.ours


async def test_a_silent_client_times_out_in_the_handshake(pki: Pki) -> None:
    crl = certs.crl_pem(pki.ca.revocation_list([], NOW))
    server = tls.ServerTLS(pki.server_cert, pki.server_key, pki.ca_pem, crl)
    _a, b = trio.testing.memory_stream_pair()
    with pytest.raises(ConnectionClosed, match="took over"):
        await server.accept(b, patience=0.2)


def test_credential_files_round_trip_and_reject_a_mismatched_key(pki: Pki) -> None:
    path, cred = pki.credential("alice", "deployer")
    loaded = certs.Credential.from_pem(path.read_bytes())
    assert certs.holder(loaded.cert) == certs.Holder("alice", "deployer")
    assert path.stat().st_mode & 0o777 == 0o600
    other = certs.Credential(cred.cert, certs.generate_key(), cred.ca)
    with pytest.raises(certs.CertificateError):
        certs.Credential.from_pem(other.to_pem())
    with pytest.raises(certs.CertificateError, match="already exists"):
        certs.write_private(path, b"x")


def test_issue_refuses_bad_names_and_roles(pki: Pki) -> None:
    key = certs.generate_key().public_key()
    bad: list[Callable[[], object]] = [
        lambda: pki.ca.issue(key, "a b", "host", now=NOW),
        lambda: pki.ca.issue(key, "web", "root", now=NOW),
        lambda: pki.ca.issue(key, "seeder", "seeder", now=NOW),  # no SAN
    ]
    for call in bad:
        with pytest.raises(certs.CertificateError):
            call()
