"""The seeder's join listener (control port + 3): new hosts enroll themselves with a join token.

TLS with the seeder's server certificate only: the joining host has no certificate yet, so none
is asked for. A connection carries one exchange of :mod:`common.join` and closes: a
``Discover`` is answered with the CA certificate (the host checks it against its token's pin,
then dials again verifying the seeder's certificate), a ``JoinRequest`` with the host's new
certificate or a refusal naming the reason. Handshake and exchange run under one deadline,
messages are bounded (``common.join.MAX_JOIN_MESSAGE``) and so are the connections handled at
once (more are closed at once). Nothing a remote sends stops the listener.

Who may enroll under which name: the token decides (expiry, uses, optional name pattern); a
name that already has a live host certificate (issued and neither revoked nor expired) is
refused, so nobody takes over a running host by joining under its name. An operator who wants
to re-enroll a host revokes it first (``shoal hosts revoke NAME``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable

import trio

from common import join as j
from common import joinchannel, tls
from common.addr import Address
from common.crypto import certs
from common.crypto.csr import CsrError, read_csr
from common.errors import ConfigError, ConnectionClosed, ProtocolError, ShoalError
from common.messages import Message
from seeder.authority import HOST_LIFETIME, SeederCA
from seeder.join_policy import check_join, joined_labels
from seeder.store import Store

log = logging.getLogger("shoal.seeder.join")

EXCHANGE_TIMEOUT = 15.0  # seconds from accept to answer sent, handshake included
MAX_JOINS = 64  # connections handled at once; more are closed unanswered
CLOSE_GRACE = 1.0  # seconds to say close_notify after the answer


def live_host(authority: SeederCA, name: str, now: float) -> bool:
    """Whether a host certificate for ``name`` is in force: issued, not revoked, not expired."""
    return authority.host_in_force(name, now)


class Enrollments:
    """Answers join requests: checks the token and the name, issues and records the host
    certificate. Synchronous from check to record (no await in between), so two joins never
    interleave; the store's atomic use count decides races besides."""

    def __init__(
        self, store: Store, issuer: SeederCA, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.clock = clock
        # read once, at start-up: a join never fails half-way for want of it
        self.signing_pub = issuer.signing_public()

    def answer(self, request: j.JoinRequest) -> j.Joined:
        """Enroll the host, or raise JoinError saying why not (the joining host's fault)."""
        now = self.clock()
        try:  # first, so that every later message and log line holds a short, printable name
            certs.check_name(request.name)
        except certs.CertificateError as exc:
            raise j.JoinError(j.RefusalCode.NAME_REFUSED, str(exc)[:300]) from None
        record = self.store.token(request.token_id)
        check_join(record, request.secret, request.name, now)
        assert record is not None
        labels = joined_labels(record, request.labels)
        try:
            csr = read_csr(request.csr, name=request.name)
        except CsrError as exc:
            raise j.JoinError(j.RefusalCode.BAD_CSR, str(exc)) from None
        if live_host(self.issuer, request.name, now):
            raise j.JoinError(
                j.RefusalCode.NAME_TAKEN,
                f"a host named {request.name!r} is already enrolled; join under another name,"
                " or have an operator run `shoal hosts revoke` on it first",
            )
        if not self.store.take_token_use(record.token_id, now):
            check_join(self.store.token(record.token_id), request.secret, request.name, now)
            raise j.JoinError(j.RefusalCode.USED_UP, f"join token {record.token_id} is used up")
        try:
            cert = self.issuer.issue(
                certs.public_pem(csr.public_key),
                request.name,
                certs.HOST_ROLE,
                now=dt.datetime.fromtimestamp(now, dt.UTC),
                lifetime=HOST_LIFETIME,
                labels=labels,
            )
        except BaseException:
            self.store.give_token_use_back(record.token_id)  # nothing was enrolled
            raise
        log.info("host %s joined with token %s, labels %s", request.name, record.token_id, labels)
        return j.Joined(
            name=request.name,
            host_cert=cert,
            ca_cert=self.issuer.ca_pem,
            signing_key=self.signing_pub,
            labels=labels,
        )


class JoinServer:
    def __init__(
        self,
        enrollments: Enrollments,
        server_tls: tls.JoinServerTLS,
        *,
        patience: float = EXCHANGE_TIMEOUT,
        max_joins: int = MAX_JOINS,
    ) -> None:
        self.enrollments = enrollments
        self.tls = server_tls
        self.patience = patience
        self._slots = trio.Semaphore(max_joins)

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = int(listeners[0].socket.getsockname()[1])
        log.info("join listener on %s:%d", host, bound)
        async with trio.open_nursery() as nursery:
            task_status.started(bound)
            await trio.serve_listeners(self.handle, listeners, handler_nursery=nursery)

    async def handle(self, transport: trio.abc.Stream) -> None:
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await trio.aclose_forcefully(transport)  # busy: the host retries later
            return
        try:
            with trio.move_on_after(self.patience) as deadline:
                await self._exchange(transport)
            if deadline.cancelled_caught:
                log.debug("join connection: no exchange within %gs; closed", self.patience)
        except (ConnectionClosed, ProtocolError) as exc:  # a stranger's noise: not worth INFO
            log.debug("join connection closed: %s", exc)
        except Exception:  # one connection's bug must not take the listener down
            log.exception("join connection failed after an internal error")
        finally:
            self._slots.release()
            await trio.aclose_forcefully(transport)

    async def _exchange(self, transport: trio.abc.Stream) -> None:
        stream = await self.tls.accept(transport, self.patience)
        conn = j.JoinConnection(j.JoinRole.SEEDER)
        try:
            try:
                request = await joinchannel.receive(stream, conn)
            except ProtocolError as exc:
                refusal = j.JoinRefused(code=j.RefusalCode.BAD_REQUEST, reason=str(exc))
                await joinchannel.send(stream, conn, refusal)
                raise
            await joinchannel.send(stream, conn, self._answer(request))
        finally:
            with trio.move_on_after(CLOSE_GRACE), contextlib.suppress(trio.BrokenResourceError):
                await stream.aclose()  # close_notify: the host reads a clean end after the answer

    def _answer(self, request: Message) -> Message:
        if isinstance(request, j.Discover):
            return j.CaCert(ca_cert=self.enrollments.issuer.ca_pem)
        assert isinstance(request, j.JoinRequest)
        try:
            return self.enrollments.answer(request)
        except j.JoinError as exc:
            log.info("join as %r refused: %s", request.name[:64], exc)
            return j.JoinRefused(code=exc.code, reason=str(exc))
        except ShoalError as exc:  # ours: the CA could not issue or record
            log.error("join as %r failed: %s", request.name[:64], exc)
            return j.JoinRefused(code=j.RefusalCode.INTERNAL, reason=f"the seeder failed: {exc}")


async def start_join_listener(
    nursery: trio.Nursery, at: Address, store: Store, authority: SeederCA
) -> Address:
    """Start the join listener on ``at`` (a taken port is an error naming the option)."""
    ident = authority.dir
    server = JoinServer(
        Enrollments(store, authority),
        tls.JoinServerTLS(ident / "seeder.crt", ident / "seeder.key"),
    )
    try:
        port = await nursery.start(server.serve, at.host, at.port)
    except OSError as exc:
        raise ConfigError(
            f"the join listener cannot listen on {at} (--join-listen): {exc.strerror}"
        ) from None
    return at.with_port(port)
