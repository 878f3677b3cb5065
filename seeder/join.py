"""The seeder's join listener (control port + 3): new hosts enroll themselves with a join token.

TLS with the seeder's server certificate only: the joining host has no certificate yet, so none
is asked for. A connection carries one exchange of :mod:`common.join` and closes: a
``Discover`` is answered with the CA certificate (the host checks it against its token's pin,
then dials again verifying the seeder's certificate), a ``JoinRequest`` with the host's new
certificate or a refusal naming the reason. Nothing a remote sends stops the listener.

The port is open to machines that hold no credential yet, so it gets the control port's
admission (:mod:`seeder.gatekeeper`, with :data:`JOIN_LIMITS`): connections are capped in total
and per address (more are closed at once, before TLS), handshake and exchange run under one
deadline, a message is bounded (``common.join.MAX_JOIN_MESSAGE``), and refusals are logged
rate-limited. Failed joins are counted per address (:class:`seeder.admission.FailedAttempts`):
an address that keeps failing is refused without its request being looked at until its
budget refills. The token's secret is compared in constant time, and an unknown token id costs
the same as a wrong secret (:func:`seeder.join_policy.check_join`).

Who may enroll under which name: the token decides (expiry, uses, optional name pattern); a
name that already has a live host certificate (issued and neither revoked nor expired) is
refused, so nobody takes over a running host by joining under its name. An operator who wants
to re-enroll a host revokes it first (``shoal hosts revoke NAME``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Callable

import trio

from common import join as j
from common import joinchannel, tls
from common.addr import Address
from common.crypto import certs
from common.crypto.csr import CsrError, read_csr
from common.errors import ConfigError, ConnectionClosed, ProtocolError, ShoalError, TLSRefused
from common.join import MAX_JOIN_MESSAGE
from common.messages import Message
from common.ratelog import RateLog
from seeder.admission import FailedAttempts, Limits
from seeder.authority import HOST_LIFETIME, SeederCA
from seeder.gatekeeper import Gatekeeper, remote_ip
from seeder.join_policy import check_join, joined_labels
from seeder.store import Store

log = logging.getLogger("shoal.seeder.join")

EXCHANGE_TIMEOUT = 15.0  # seconds from accept to answer sent, handshake included
MAX_JOINS = 64  # connections handled at once; more are closed unanswered
# from one address at once: a fleet install behind one NAT address joins --parallel hosts at a
# time, each over two short connections one after the other
MAX_JOINS_PER_ADDRESS = 16
CLOSE_GRACE = 1.0  # seconds to say close_notify after the answer
FAILED_JOIN_BURST = 10  # failed joins an address may have at once ...
FAILED_JOIN_RATE = 0.1  # ... and one more every 10 s after that
JOIN_LIMITS = Limits(
    max_connections=MAX_JOINS,
    max_per_address=MAX_JOINS_PER_ADDRESS,
    hello_timeout=EXCHANGE_TIMEOUT,  # here: until the answer is sent
    max_frame=MAX_JOIN_MESSAGE,
    max_hello_frame=MAX_JOIN_MESSAGE,
)


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
        if self.issuer.host_in_force(request.name, now):
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
        limits: Limits = JOIN_LIMITS,
        failures: FailedAttempts | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.enrollments = enrollments
        self.tls = server_tls
        self.gate = Gatekeeper(limits, RateLog(log, clock=clock), options=False)
        self.failures = failures or FailedAttempts(FAILED_JOIN_BURST, FAILED_JOIN_RATE)
        self.clock = clock

    @property
    def patience(self) -> float:
        return self.gate.limits.hello_timeout

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = int(listeners[0].socket.getsockname()[1])
        log.info("join listener on %s:%d", host, bound)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.gate.refusals.run)
            task_status.started(bound)
            handler = self.gate.admitting(self.handle)
            await trio.serve_listeners(handler, listeners, handler_nursery=nursery)

    async def handle(self, transport: trio.abc.Stream) -> None:
        """One admitted connection: one exchange within the deadline, then closed."""
        address = remote_ip(transport)
        try:
            with trio.move_on_after(self.patience) as deadline:
                await self._exchange(transport, address)
            if deadline.cancelled_caught:
                self.gate.refusals.event(
                    "closed", address, f"no join exchange within {self.patience:g}s"
                )
        except TLSRefused as exc:
            self.gate.refusals.event("refused", address, str(exc))
        except ProtocolError as exc:
            self.gate.refusals.event("closed", address, str(exc))
        except ConnectionClosed as exc:  # a stranger's noise: not worth a line each
            log.debug("join connection from %s closed: %s", address, exc)
        except Exception:  # one connection's bug must not take the listener down
            log.exception("join connection failed after an internal error")
        finally:
            await trio.aclose_forcefully(transport)

    async def _exchange(self, transport: trio.abc.Stream, address: str) -> None:
        stream = await self.tls.accept(transport, self.patience)
        conn = j.JoinConnection(j.JoinRole.SEEDER, max_message_size=self.gate.limits.max_frame)
        try:
            try:
                request = await joinchannel.receive(stream, conn)
            except ProtocolError as exc:
                self.failures.failed(address, self.clock())
                refusal = j.JoinRefused(code=j.RefusalCode.BAD_REQUEST, reason=str(exc))
                await joinchannel.send(stream, conn, refusal)
                raise
            await joinchannel.send(stream, conn, self._answer(request, address))
        finally:
            with trio.move_on_after(CLOSE_GRACE), contextlib.suppress(trio.BrokenResourceError):
                await stream.aclose()  # close_notify: the host reads a clean end after the answer

    def _answer(self, request: Message, address: str) -> Message:
        if isinstance(request, j.Discover):
            return j.CaCert(ca_cert=self.enrollments.issuer.ca_pem)
        assert isinstance(request, j.JoinRequest)
        now = self.clock()
        wait = self.failures.wait(address, now)
        if wait > 0:
            reason = (
                f"too many failed joins from {address}; try again in {math.ceil(wait)}s"
                " (check the token and the name)"
            )
            self.gate.refusals.event("refused", address, reason)
            return j.JoinRefused(code=j.RefusalCode.RATE_LIMITED, reason=reason)
        try:
            return self.enrollments.answer(request)
        except j.JoinError as exc:
            self.failures.failed(address, now)
            self.gate.refusals.event("refused", address, f"join as {request.name[:64]!r}: {exc}")
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
