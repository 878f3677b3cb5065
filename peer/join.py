"""``shoal-peer join``: enroll this host with a join token, creating ``DATA/identity/``.

1. Dial the seeder's join port (control port + 3) over TLS without checking its certificate
   and ask for its CA certificate; refuse it unless the SHA-256 of its public key is the pin in
   the token (``CA pin mismatch``): someone else answers at that address.
2. Generate the host key here (it never leaves the host) and a CSR for the host's name.
3. Dial again, now trusting only that CA and checking the seeder's certificate against the
   address dialled, and only then send the token's secret, the name, the labels and the CSR.
4. Check the answer (the certificate is the CA's, for our key and our name) and install it
   as a bundle would be (:func:`peer.identity.install`: ``ca.crt``, ``host.crt``, ``host.key``
   0600, ``release-signing.pub``, each written atomically), then ``DATA/peer.json`` for ``run``.

A host that already has an identity in ``DATA/identity`` does nothing and says so.

A connection that fails before the host has sent its request (the seeder restarting, or at its
join-port connection cap, which closes a connection before TLS) is tried again with jittered
backoff for ``retry_for`` seconds: installing hundreds of hosts at once must not fail the few
that met a full port. Nothing is retried once the request was sent (the seeder may have used the
token and issued the certificate), nor any refusal the seeder answered with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trio

from common import join as j
from common import joinchannel, tls
from common.addr import Address
from common.bundle import Bundle
from common.crypto import certs
from common.crypto.csr import CsrError, check_issued, make_csr
from common.crypto.tokens import JoinToken, ca_pin
from common.errors import ConfigError, ConnectionClosed, ProtocolError, TLSRefused
from common.messages import Message
from peer import identity, settings
from peer.backoff import Backoff

EXCHANGE_TIMEOUT = 30.0  # seconds for each of the two connections, handshake included
RETRY_FOR = 60.0  # seconds to keep redialling a join port that failed before the request


T = TypeVar("T")


class NotSent(ConnectionClosed):
    """The connection failed before our message was sent: the seeder saw nothing of it, so
    trying again is safe."""


@dataclass(frozen=True)
class JoinOptions:
    seeder: Address  # the control address; the join port is its port + 3 unless join_port
    token: JoinToken
    data_dir: Path
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    join_port: int | None = None
    patience: float = EXCHANGE_TIMEOUT  # seconds for each connection, handshake included
    retry_for: float = RETRY_FOR  # seconds to redial after a failure before the request (NotSent)

    @property
    def join_at(self) -> Address:
        port = self.join_port or self.seeder.port + j.JOIN_PORT_OFFSET
        if not 0 < port <= 65535:
            raise ConfigError(f"the join port {port} is out of range; pass --join-port")
        return self.seeder.with_port(port)


@dataclass(frozen=True)
class Joined:
    name: str
    identity: Path
    labels: dict[str, str]
    joined: bool  # False: it was already enrolled, nothing was done

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "identity": str(self.identity),
            "labels": self.labels,
            "joined": self.joined,
        }


def existing(data_dir: Path) -> Joined | None:
    """The identity a data directory already holds, if any (ConfigError if only part of one)."""
    directory = identity.identity_dir(data_dir)
    present = [n for n in identity.FILES if (directory / n).is_file()]
    if not present:
        return None
    if len(present) < len(identity.FILES):
        missing = ", ".join(n for n in identity.FILES if n not in present)
        raise ConfigError(
            f"{directory} holds part of an identity (missing {missing}); remove it (and have an"
            " operator `shoal hosts revoke` the name if it was enrolled) before joining again"
        )
    try:
        who = identity.load(data_dir).name
    except ConfigError as exc:
        raise ConfigError(f"{directory} holds an unusable identity: {exc}") from None
    return Joined(who, directory, {}, joined=False)


async def join(opts: JoinOptions) -> Joined:
    already = existing(opts.data_dir)
    if already is not None:
        return already
    certs.check_name(opts.name)
    at = opts.join_at
    backoff = Backoff(initial=0.5, cap=8.0)
    deadline = trio.current_time() + opts.retry_for
    ca_pem = await _retrying(lambda: _discover(at, opts.patience), backoff, deadline)
    pin = ca_pin(ca_pem)
    if pin != opts.token.ca_pin:
        raise j.JoinError(
            "ca_pin_mismatch",
            f"CA pin mismatch: the seeder at {at} is not the one this token was made for (its CA"
            f" pins {pin[:16]}..., the token {opts.token.ca_pin[:16]}...); refusing to send it"
            " anything",
        )
    key = certs.generate_key()
    request = j.JoinRequest(
        token_id=opts.token.token_id,
        secret=opts.token.secret,
        name=opts.name,
        csr=make_csr(key, opts.name),
        labels=opts.labels,
    )
    answer, local_ip = await _retrying(
        lambda: _enroll(at, ca_pem, request, opts.patience), backoff, deadline
    )
    if answer.ca_cert != ca_pem:
        raise j.JoinError("bad_answer", f"the seeder at {at} answered with another CA certificate")
    try:
        check_issued(answer.host_cert, ca_pem, key, opts.name)
        certs.check_signing_public(answer.signing_key)
    except (CsrError, certs.CertificateError) as exc:
        raise j.JoinError("bad_answer", f"the seeder at {at}: {exc}") from None
    bundle = Bundle(
        name=opts.name,
        labels=dict(answer.labels),
        ca=ca_pem,
        cert=answer.host_cert,
        key=certs.key_pem(key),
        release_signing_pub=answer.signing_key,
    )
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    directory = identity.install(bundle, opts.data_dir)
    settings.save(
        opts.data_dir,
        settings.PeerSettings(str(opts.seeder), local_ip),
    )
    return Joined(opts.name, directory, dict(answer.labels), joined=True)


async def _retrying(attempt: Callable[[], Awaitable[T]], backoff: Backoff, deadline: float) -> T:
    """``attempt()``, tried again while it fails with NotSent and ``deadline`` is ahead."""
    while True:
        try:
            return await attempt()
        except NotSent:
            left = deadline - trio.current_time()
            if left <= 0:
                raise
            await trio.sleep(min(backoff.next_delay(), left))


async def _discover(at: Address, patience: float) -> bytes:
    """The CA certificate the seeder at ``at`` says it has (not trusted until pinned)."""
    msg, _ = await _exchange(at, tls.unverified_context(), j.Discover(), patience, verified=False)
    if isinstance(msg, j.JoinRefused):
        raise j.JoinError(msg.code, f"the seeder at {at} refused: {msg.reason}")
    assert isinstance(msg, j.CaCert)
    return msg.ca_cert


async def _enroll(
    at: Address, ca_pem: bytes, request: j.JoinRequest, patience: float
) -> tuple[j.Joined, str]:
    try:
        context = tls.pinned_context(ca_pem)
    except certs.CertificateError as exc:
        raise j.JoinError(
            "bad_answer", f"the seeder at {at} sent a CA certificate: {exc}"
        ) from None
    msg, local_ip = await _exchange(at, context, request, patience, verified=True)
    if isinstance(msg, j.JoinRefused):
        raise j.JoinError(msg.code, f"the seeder at {at} refused the join: {msg.reason}")
    assert isinstance(msg, j.Joined)
    return msg, local_ip


async def _exchange(
    at: Address, context: tls.Context, msg: Message, patience: float, *, verified: bool
) -> tuple[Message, str]:
    """One join connection: the answer to ``msg``, and the local IP that reached the seeder."""
    conn = j.JoinConnection(j.JoinRole.HOST)
    sent = False
    try:
        with trio.fail_after(patience):
            try:
                tcp = await trio.open_tcp_stream(at.host, at.port)
            except OSError as exc:
                raise NotSent(
                    f"cannot reach the seeder's join port at {at}: {exc.strerror or exc}"
                ) from None
            local_ip = str(tcp.socket.getsockname()[0])
            try:
                stream = await tls.connect(tcp, context, at.host, patience)
            except TLSRefused as exc:
                if verified and not exc.ours:
                    raise j.JoinError(
                        "seeder_not_verified",
                        f"the seeder at {at} has the pinned CA but a certificate not issued by"
                        f" it for {at.host} ({exc}); refusing to send the token",
                    ) from None
                raise
            except ConnectionClosed as exc:  # closed before TLS: e.g. the port's connection cap
                raise NotSent(f"the join port at {at}: {exc}") from None
            async with stream:
                sent = True  # from here on the seeder may act on it: never NotSent
                await joinchannel.send(stream, conn, msg)
                answer = await joinchannel.receive(stream, conn)
    except trio.TooSlowError:
        lost = NotSent if not sent else ConnectionClosed  # a full backlog, a slow handshake
        raise lost(f"the seeder's join port at {at} did not answer within {patience:g}s") from None
    except ProtocolError as exc:
        raise ConnectionClosed(f"the join port at {at}: {exc}") from None
    return answer, local_ip
