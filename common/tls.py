"""Mutual TLS for the control channel: the one module that imports Python's ``ssl``.

Both sides speak TLS 1.3 only, require the other's certificate and trust only the seeder's CA.
The client checks the seeder's certificate against the name or IP it dialled. The server checks
every client certificate against a CRL (a revoked certificate is refused in the handshake) and
is handed a new CRL with :meth:`ServerTLS.reload` when a host is revoked: connections accepted
afterwards use a fresh context (which also invalidates every TLS session ticket of the old one).

An end of stream without TLS's close_notify counts as an end of stream (trio's
``https_compatible``): the control protocol's own framing detects a message cut short, and a
seeder that drops a connection does not wait for the remote's goodbye.

``ssl`` and trio's TLS errors are translated here, once, into :class:`~common.errors.TLSRefused`
(saying whose fault) or :class:`~common.errors.ConnectionClosed`.
"""

from __future__ import annotations

import contextlib
import ssl
import tempfile
from pathlib import Path
from typing import Any

import trio
from cryptography import x509

from common.crypto.certs import CertificateError, Holder, holder
from common.errors import ConnectionClosed, TLSRefused

HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS handshake may take, on either side
ALERT_LINGER = 1.0  # seconds a refused connection stays half-open so the remote reads why
ALERT_DRAIN = 64 * 1024  # bytes read (and dropped) from a refused client meanwhile


def _base(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cert_file: Path, key_file: Path | None, ca_pem: bytes) -> ssl.SSLContext:
    """A client context presenting ``cert_file`` (with its key in ``key_file``, or in the same
    file) and trusting only the CA in ``ca_pem``; the seeder's name is checked."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    try:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
        ctx.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError, UnicodeDecodeError) as exc:
        raise CertificateError(f"cannot use the credential {cert_file}: {_reason(exc)}") from None
    return ctx


class ClientTLS:
    """What a client (a peer daemon, the CLI) dials the seeder with: its certificate and the CA.
    One context serves every connection of the process."""

    def __init__(self, cert_file: Path, key_file: Path | None, ca_pem: bytes) -> None:
        self.context = client_context(cert_file, key_file, ca_pem)

    async def connect(
        self, transport: trio.abc.Stream, server_name: str, patience: float = HANDSHAKE_TIMEOUT
    ) -> trio.abc.Stream:
        return await connect(transport, self.context, server_name, patience)


class ServerTLS:
    """The seeder's server context: its certificate, the CA and the current CRL."""

    def __init__(self, cert_file: Path, key_file: Path, ca_pem: bytes, crl_pem: bytes) -> None:
        self._cert_file, self._key_file, self._ca = cert_file, key_file, ca_pem
        self.context = self._build(crl_pem)

    def reload(self, crl_pem: bytes) -> None:
        """Refuse the certificates of ``crl_pem`` from the next handshake on."""
        self.context = self._build(crl_pem)

    def _build(self, crl_pem: bytes) -> ssl.SSLContext:
        ctx = _base(ssl.PROTOCOL_TLS_SERVER)
        ctx.options |= ssl.OP_NO_TICKET  # no resumption: every connection shows its certificate
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_X509_STRICT
        try:
            ctx.load_cert_chain(self._cert_file, self._key_file)
            # only a file loads CRLs (cadata takes certificates alone)
            with tempfile.NamedTemporaryFile(prefix="shoal-trust-", suffix=".pem") as trust:
                trust.write(self._ca + b"\n" + crl_pem)
                trust.flush()
                ctx.load_verify_locations(cafile=trust.name)
        except (ssl.SSLError, OSError) as exc:
            raise CertificateError(
                f"cannot use the seeder certificate {self._cert_file}: {_reason(exc)}"
            ) from None
        return ctx

    async def accept(
        self, transport: trio.abc.Stream, patience: float = HANDSHAKE_TIMEOUT
    ) -> tuple[trio.abc.Stream, Holder]:
        """Run the server side of the handshake; the stream and who the client's certificate
        names. TLSRefused (the client's fault) or ConnectionClosed on failure."""
        stream = trio.SSLStream(transport, self.context, server_side=True, https_compatible=True)
        await _handshake(stream, patience, ours=False)
        der = stream.getpeercert(binary_form=True)
        if der is None:  # CERT_REQUIRED makes this unreachable; refuse rather than assume
            raise TLSRefused("the client presented no certificate", ours=False)
        try:
            who = holder(x509.load_der_x509_certificate(der))
        except (CertificateError, ValueError) as exc:
            raise TLSRefused(f"the client's certificate is unusable: {exc}", ours=False) from None
        return _Translated(stream), who


async def connect(
    transport: trio.abc.Stream,
    context: ssl.SSLContext,
    server_name: str,
    patience: float = HANDSHAKE_TIMEOUT,
) -> trio.abc.Stream:
    """Run the client side of the handshake with the seeder at ``server_name``."""
    stream = trio.SSLStream(transport, context, server_hostname=server_name, https_compatible=True)
    await _handshake(stream, patience, ours=True)
    return _Translated(stream)


async def _handshake(stream: trio.SSLStream[trio.abc.Stream], patience: float, ours: bool) -> None:
    side = "the seeder" if ours else "the client"
    try:
        with trio.fail_after(patience):
            await stream.do_handshake()
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise ConnectionClosed(f"the TLS handshake with {side} took over {patience:g}s") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        await _send_alert(stream)
        await trio.aclose_forcefully(stream)
        raise _translate(exc) from None


async def _send_alert(stream: trio.SSLStream[trio.abc.Stream]) -> None:
    """Tell the remote why the handshake failed (best effort), and let it read that.

    On a failed handshake trio drops the alert OpenSSL wrote (its outgoing buffer is private);
    without it the remote sees only an EOF and cannot tell a revoked certificate from a network
    fault. After sending it, close our side and drain what the remote sent meanwhile (a TLS 1.3
    client already sent its first message): closing with unread data would reset the
    connection, and a reset can discard the alert before the remote reads it. Bounded by
    ALERT_LINGER seconds and ALERT_DRAIN bytes. If this trio keeps the buffer elsewhere, the
    remote just sees the EOF."""
    outgoing = getattr(stream, "_outgoing", None)
    if not isinstance(outgoing, ssl.MemoryBIO) or not outgoing.pending:
        return
    transport = stream.transport_stream
    with (
        trio.move_on_after(ALERT_LINGER),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await transport.send_all(outgoing.read())
        if isinstance(transport, trio.SocketStream):
            await transport.send_eof()
        drained = 0
        while drained < ALERT_DRAIN and (chunk := await transport.receive_some(16384)):
            drained += len(chunk)


def _translate(exc: BaseException) -> ConnectionClosed:
    """A trio TLS error as ours: whose certificate was refused and why, or a lost connection.

    An alert *received* means the remote refused what we presented; anything else (our check
    of its certificate failed, it sent no certificate, it does not speak TLS) is its fault."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else None
    if cause is None:
        return ConnectionClosed("the connection was lost during TLS")
    reason = _reason(cause)
    if isinstance(cause, ssl.SSLEOFError) or "unexpected eof" in reason:
        return ConnectionClosed("the remote end closed the connection during the TLS handshake")
    if isinstance(cause, ssl.SSLCertVerificationError):
        return TLSRefused(f"refused the remote certificate: {reason}", ours=False)
    if "alert" in reason:
        return TLSRefused(f"the remote end refused our certificate: {reason}", ours=True)
    return TLSRefused(f"TLS failed: {reason}", ours=False)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


class _Translated(trio.abc.Stream):
    """An SSLStream whose TLS errors (a revocation alert after a TLS 1.3 handshake, above all)
    surface as TLSRefused instead of a bare BrokenResourceError."""

    def __init__(self, stream: trio.SSLStream[trio.abc.Stream]) -> None:
        self._stream = stream

    @property
    def socket(self) -> Any:
        """The TCP socket under the TLS session (for its local and remote addresses)."""
        return getattr(self._stream.transport_stream, "socket", None)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._stream.send_all(data)
        except trio.BrokenResourceError as exc:
            raise _broken(exc) from None

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            return await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            raise _broken(exc) from None

    async def aclose(self) -> None:
        await self._stream.aclose()


def _broken(exc: trio.BrokenResourceError) -> Exception:
    translated = _translate(exc)
    if isinstance(translated, TLSRefused):
        return translated
    return trio.BrokenResourceError(str(translated))


# --- the join listener (lane enroll): server-authenticated TLS for hosts without a certificate --

Context = ssl.SSLContext  # for annotations elsewhere, which never import ssl themselves


class JoinServerTLS:
    """The join listener's context: the seeder's certificate, and no client certificate asked
    for (the joining host has none yet; its token, sent inside, authenticates it)."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_NONE
        ctx.options |= ssl.OP_NO_TICKET
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, OSError) as exc:
            raise CertificateError(
                f"cannot use the seeder certificate {cert_file}: {_reason(exc)}"
            ) from None
        self.context = ctx

    async def accept(
        self, transport: trio.abc.Stream, patience: float = HANDSHAKE_TIMEOUT
    ) -> trio.abc.Stream:
        stream = trio.SSLStream(transport, self.context, server_side=True, https_compatible=True)
        await _handshake(stream, patience, ours=False)
        return _Translated(stream)


def unverified_context() -> ssl.SSLContext:
    """TLS 1.3 that checks nothing about the server: only for fetching the seeder's CA
    certificate, which the joining host then checks against the pin in its token."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def pinned_context(ca_pem: bytes) -> ssl.SSLContext:
    """TLS 1.3 that trusts only the CA in ``ca_pem`` and checks the seeder's name or IP, with no
    client certificate (a joining host's second connection)."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    try:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise CertificateError(f"cannot trust the CA certificate: {_reason(exc)}") from None
    return ctx
