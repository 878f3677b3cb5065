"""The seeder's control server: one task per connection, peers and CLI clients alike.

Every connection is mutual TLS (:mod:`common.tls`) before any message is read: the client's
certificate names who it is, and that is who it stays. A peer connection (a host certificate,
whose Hello names the host the certificate names) registers the host, then streams heartbeats
and step reports (each acked once stored). A CLI connection's requests run as its certificate's
holder (:data:`seeder.caller.CALLER`), and only if its role may call them
(:mod:`seeder.roles`). Each request is answered by a response; a *streaming* method (``streams``)
answers with one response and then pushes events until it ends (with an ``end``
event) or the client leaves, after which the connection takes requests again. A malformed or
truncated message ends that one connection and nothing else. What a connection may cost is
:mod:`seeder.gatekeeper`'s: connection caps, the hello timeout, frame limits, the message rate,
and the rate-limited log of refusals.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from common import messages as m
from common.channel import Channel
from common.crypto.certs import HOST_ROLE, Holder
from common.errors import (
    ConnectionClosed,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    ShoalError,
    TLSRefused,
)
from common.ratelog import RateLog
from common.tls import ServerTLS
from seeder import gatekeeper, roles
from seeder.admission import Limits
from seeder.caller import CALLER, Caller
from seeder.connections import Connections
from seeder.engine import Engine
from seeder.preflight import Preflights
from seeder.store import Store
from seeder.writers import PeerWriter

log = logging.getLogger("shoal.seeder.control")

HEARTBEAT_INTERVAL = 5.0
SILENCE_TIMEOUT = HEARTBEAT_INTERVAL * 4  # a peer that says nothing this long is gone
PUSH_TIMEOUT = 30.0  # seconds a streaming client may leave a pushed event unread
STREAM_END_GRACE = 1.0  # seconds a request sent during a stream waits for the stream to end
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
# What a peer tells the seeder live, best effort (hook output, download progress): host, message.
Observer = Callable[[str, m.OutputLine | m.Progress], None]
# The errors of a method that are the caller's fault (answered, never fatal to the connection).
REQUEST_ERRORS = (ShoalError, KeyError, TypeError, ValueError)


class Reply:
    """How a streaming method answers: :meth:`respond` once, then :meth:`push` events."""

    def __init__(self, channel: Channel, request_id: int) -> None:
        self._channel = channel
        self._id = request_id
        self.responded = False

    async def respond(self, result: dict[str, Any]) -> None:
        assert not self.responded, "a stream responds once"
        self.responded = True
        await self._channel.send(m.Response(id=self._id, ok=True, result=result))

    async def push(self, event: m.RolloutEvent) -> None:
        """Send one event; a client that reads nothing for PUSH_TIMEOUT loses its connection."""
        assert self.responded, "respond before pushing events"
        try:
            with trio.fail_after(PUSH_TIMEOUT):
                await self._channel.send(event)
        except trio.TooSlowError:
            raise ConnectionClosed(
                f"the client read nothing for {PUSH_TIMEOUT:.0f}s; closing its stream"
            ) from None


StreamHandler = Callable[[dict[str, Any], Reply], Awaitable[None]]


def _no_observer(host: str, msg: m.OutputLine | m.Progress) -> None:
    log.debug("[%s] %s", host, msg)


def _no_labels(host: str) -> dict[str, str]:
    return {}


class ControlServer:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        *,
        methods: dict[str, Handler],
        tls: ServerTLS | None = None,
        streams: dict[str, StreamHandler] | None = None,
        observe: Observer = _no_observer,
        preflights: Preflights | None = None,
        tracker_key: Callable[[str], str] = lambda host: "",
        labels_of: Callable[[str], dict[str, str]] = _no_labels,
        method_roles: Mapping[str, str] = roles.METHOD_ROLES,
        connections: Connections | None = None,
        limits: Limits | None = None,
    ) -> None:
        """``tls`` is required to :meth:`serve` (tests of the message logic alone call
        :meth:`converse` over memory streams instead). ``labels_of`` gives the labels a host was
        enrolled with; they win over what its Hello says."""
        self.store = store
        self.engine = engine
        self.methods = methods
        self.streams = streams or {}
        self.observe = observe
        self.preflights = preflights or Preflights()
        self.tls = tls
        self.labels_of = labels_of
        self.method_roles = method_roles
        missing = roles.unlisted([*methods, *self.streams], method_roles)
        if missing:
            raise AssertionError(f"seeder/roles.py gives no role to {', '.join(missing)}")
        self.connections = connections or Connections()
        self.gate = gatekeeper.Gatekeeper(limits or Limits(), RateLog(log))
        self.tracker_key = tracker_key  # a host's key for the tracker (seeder.announcekeys)

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.gate.raise_fd_limit()
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        log.info("control server listening on %s:%d", host, bound)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.gate.refusals.run)
            task_status.started(bound)
            handler = self.gate.admitting(self.handle)
            await trio.serve_listeners(handler, listeners, handler_nursery=nursery)

    async def handle(self, transport: trio.abc.Stream) -> None:
        """One accepted TCP connection: the TLS handshake, then the conversation."""
        assert self.tls is not None, "a control server that listens needs its TLS context"
        try:
            stream, who = await self.tls.accept(transport, self.gate.limits.hello_timeout)
        except TLSRefused as exc:
            self.gate.refusals.event("refused", gatekeeper.remote_ip(transport), str(exc))
            return
        except ConnectionClosed as exc:
            log.debug("control connection from %s: %s", _remote(transport), exc)
            return
        await self.converse(stream, who)

    async def converse(self, stream: trio.abc.Stream, who: Holder) -> None:
        """Serve one authenticated connection of ``who`` until it ends."""
        channel = self.gate.channel(stream)
        scope = trio.CancelScope()
        self.connections.add(who, scope)
        self.connections.enter(scope)
        try:
            with scope:
                first = await self.gate.hello(channel)
                if isinstance(first, m.Hello):
                    await self._serve_peer(channel, self._admit(first, who))
                elif isinstance(first, m.ClientHello):
                    await self._serve_cli(channel, who)
            if scope.cancelled_caught:
                log.warning("closed the connection of %s: its certificate was revoked", who.name)
        except ProtocolError as exc:
            self.gate.refusals.event("closed", gatekeeper.remote_ip(stream), str(exc))
            await channel.fail(exc)
        except ConnectionClosed:
            pass
        except Exception:  # one connection's bug must not take the seeder down
            log.exception("closing a control connection after an internal error")
        finally:
            self.connections.discard(who, scope)
            await channel.aclose()

    def _admit(self, hello: m.Hello, who: Holder) -> m.Hello:
        """The Hello of a host certificate, for the host it names, with its enrolled labels."""
        if who.role != HOST_ROLE:
            raise RemoteProtocolError(
                f"a {who.role} certificate ({who.name}) cannot register as a host"
            )
        if hello.name != who.name:
            raise RemoteProtocolError(
                f"the Hello names host {hello.name!r} but the certificate is {who.name!r}"
            )
        enrolled = self.labels_of(who.name)
        if not enrolled:
            return hello
        return dataclasses.replace(hello, labels={**hello.labels, **enrolled})

    async def _serve_peer(self, channel: Channel, hello: m.Hello) -> None:
        self.engine.host_record(hello)
        key = self.tracker_key(hello.name)
        await channel.send(m.Welcome(heartbeat_interval=HEARTBEAT_INTERVAL, tracker_key=key))
        log.info("peer %s connected from %s", hello.name, hello.address)
        writer = PeerWriter(hello.name, channel)
        failure: ConnectionClosed | ProtocolError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, writer, nursery.cancel_scope)
            self.engine.attach(hello.name, writer)
            # One cancel scope for the whole conversation, its deadline moved on by every message
            # (entering a fresh trio.fail_after per message costs more than decoding the message).
            silence = trio.CancelScope(deadline=trio.current_time() + SILENCE_TIMEOUT)
            try:
                with silence:
                    await self._receive_peer(channel, hello, writer, silence)
                if silence.cancelled_caught:
                    log.warning("peer %s went silent; closing its connection", hello.name)
            except (ConnectionClosed, ProtocolError) as exc:
                failure = exc  # raised below, outside the nursery (not in an exception group)
            finally:
                self.engine.detach(hello.name, writer)
                writer.stop()
                log.info("peer %s disconnected", hello.name)
        if failure is not None:
            raise failure

    async def _receive_peer(
        self, channel: Channel, hello: m.Hello, writer: PeerWriter, silence: trio.CancelScope
    ) -> None:
        """Handle the peer's messages until it leaves or says nothing for SILENCE_TIMEOUT."""
        while True:
            msg = await channel.receive()
            silence.deadline = trio.current_time() + SILENCE_TIMEOUT
            if isinstance(msg, m.Heartbeat):
                self.engine.heartbeat(hello.name)
            elif isinstance(msg, m.StepReport):
                self.engine.on_report(hello.name, msg, writer)
                # a backlog of reports arrives in one read: let the acks drain meanwhile
                await trio.lowlevel.checkpoint()
            elif isinstance(msg, m.Refused):
                log.warning("peer %s refused %s: %s", hello.name, msg.rollout_id, msg.reason)
                self.engine.on_refused(hello.name, msg)
            elif isinstance(msg, m.OutputLine | m.Progress):
                self.observe(hello.name, msg)
            elif isinstance(msg, m.PreflightResult):
                self.preflights.on_result(hello.name, msg)

    @staticmethod
    async def _writer(writer: PeerWriter, connection: trio.CancelScope) -> None:
        """The peer's writer; when it gives up on the peer, the whole connection ends."""
        await writer.run()
        connection.cancel()

    async def _serve_cli(self, channel: Channel, who: Holder) -> None:
        CALLER.set(Caller(who.name, who.role))  # this task's context: its requests only
        pending: m.Message | None = None
        while True:
            msg = pending or await channel.receive()
            pending = None
            assert isinstance(msg, m.Request)  # the protocol lets a CLI send nothing else
            stream = self.streams.get(msg.method)
            try:
                if msg.method in self.methods or stream is not None:
                    roles.check(who.role, msg.method, self.method_roles)
            except roles.NotPermitted as exc:
                await channel.send(_refusal(msg, exc))
                continue
            if stream is not None:
                pending = await self._stream(channel, msg, stream)
            else:
                await _send_answer(channel, msg, await self._answer(msg))
            self.connections.answered()

    async def _answer(self, msg: m.Request) -> m.Response:
        handler = self.methods.get(msg.method)
        if handler is None:
            return m.Response(
                id=msg.id,
                ok=False,
                error_code="unknown_method",
                error=f"unknown method {msg.method!r}",
            )
        try:
            result = await handler(msg.params)
        except REQUEST_ERRORS as exc:
            return _refusal(msg, exc)
        return m.Response(id=msg.id, ok=True, result=result)

    async def _stream(
        self, channel: Channel, msg: m.Request, handler: StreamHandler
    ) -> m.Message | None:
        """Run one streaming method until it returns or the client leaves.

        While it runs, the client may only listen: anything it sends ends the connection (a
        protocol error on its side), and so does closing it, which also ends the stream. A
        request that arrives as the stream is ending (the client read the last event and asked
        its next question before the handler returned) is not an error: it is returned, to be
        answered next."""
        reply = Reply(channel, msg.id)
        gone: list[ConnectionClosed | ProtocolError] = []
        early: list[m.Message] = []
        finished = trio.Event()
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                try:
                    await handler(msg.params, reply)
                except (ConnectionClosed, ProtocolError) as exc:
                    gone.append(exc)
                except REQUEST_ERRORS as exc:
                    if not reply.responded:
                        await channel.send(_refusal(msg, exc))
                    else:  # too late to refuse: end the connection, the client sees it close
                        log.error("stream %s failed: %s", msg.method, exc)
                        gone.append(ConnectionClosed(f"stream {msg.method} failed: {exc}"))
                finished.set()
                nursery.cancel_scope.cancel()

            async def listen() -> None:
                try:
                    early.append(await channel.receive())
                except (ConnectionClosed, ProtocolError) as exc:
                    gone.append(exc)
                    nursery.cancel_scope.cancel()
                    return
                with trio.move_on_after(STREAM_END_GRACE):
                    await finished.wait()
                if finished.is_set():  # the stream ended: the request is the next one
                    return
                gone.append(
                    RemoteProtocolError(f"{early[0].TYPE} sent while {msg.method} was streaming")
                )
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)
            nursery.start_soon(listen)
        if gone:
            raise gone[0]
        return early[0] if early else None


def _remote(transport: trio.abc.Stream) -> str:
    sock = getattr(transport, "socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "a closed socket"
    return f"{host}:{port}"


async def _send_answer(channel: Channel, msg: m.Request, response: m.Response) -> None:
    """Send ``response``; one too big for a frame is answered with an error instead."""
    try:
        await channel.send(response)
    except LocalProtocolError as exc:
        await channel.send(
            m.Response(id=msg.id, ok=False, error_code="too_large", error=f"{msg.method}: {exc}")
        )


def _refusal(msg: m.Request, exc: Exception) -> m.Response:
    if isinstance(exc, ShoalError):
        return m.Response(id=msg.id, ok=False, error_code=type(exc).__name__, error=str(exc))
    return m.Response(
        id=msg.id,
        ok=False,
        error_code="bad_request",
        error=f"bad parameters for {msg.method}: {exc}",
    )
