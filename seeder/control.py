"""The seeder's control server: one task per connection, peers and CLI clients alike.

A peer connection registers the host, then streams heartbeats and step reports (each acked once
stored). A CLI connection sends requests, each answered by a response. A malformed or truncated
message ends that one connection and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from common import messages as m
from common.channel import Channel
from common.errors import ConnectionClosed, ProtocolError, ShoalError
from common.protocol import Role
from seeder.engine import Engine
from seeder.store import Store
from seeder.writers import PeerWriter

log = logging.getLogger("shoal.seeder.control")

HEARTBEAT_INTERVAL = 5.0
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlServer:
    def __init__(self, store: Store, engine: Engine, *, methods: dict[str, Handler]) -> None:
        self.store = store
        self.engine = engine
        self.methods = methods

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        log.info("control server listening on %s:%d", host, bound)
        async with trio.open_nursery() as nursery:
            task_status.started(bound)
            await trio.serve_listeners(self.handle, listeners, handler_nursery=nursery)

    async def handle(self, stream: trio.abc.Stream) -> None:
        channel = Channel(stream, Role.SERVER)
        try:
            first = await channel.receive()
            if isinstance(first, m.Hello):
                await self._serve_peer(channel, first)
            elif isinstance(first, m.ClientHello):
                await self._serve_cli(channel)
        except ProtocolError as exc:
            log.warning("closing a control connection: %s", exc)
            await channel.fail(exc)
        except ConnectionClosed:
            pass
        except Exception:  # one connection's bug must not take the seeder down
            log.exception("closing a control connection after an internal error")
        finally:
            await channel.aclose()

    async def _serve_peer(self, channel: Channel, hello: m.Hello) -> None:
        self.engine.host_record(hello)
        await channel.send(m.Welcome(heartbeat_interval=HEARTBEAT_INTERVAL))
        log.info("peer %s connected from %s", hello.name, hello.address)
        writer = PeerWriter(hello.name, channel)
        failure: ConnectionClosed | ProtocolError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, writer, nursery.cancel_scope)
            self.engine.attach(hello.name, writer)
            try:
                while True:
                    with trio.fail_after(HEARTBEAT_INTERVAL * 4):
                        msg = await channel.receive()
                    if isinstance(msg, m.Heartbeat):
                        self.engine.heartbeat(hello.name)
                    elif isinstance(msg, m.StepReport):
                        self.engine.on_report(hello.name, msg, writer)
                        # a backlog of reports arrives in one read: let the acks drain meanwhile
                        await trio.lowlevel.checkpoint()
                    elif isinstance(msg, m.Refused):
                        self.engine.on_refused(hello.name, msg)
                    elif isinstance(msg, m.OutputLine):
                        log.info("[%s %s] %s", hello.name, msg.step, msg.line)
            except trio.TooSlowError:
                log.warning("peer %s went silent; closing its connection", hello.name)
            except (ConnectionClosed, ProtocolError) as exc:
                failure = exc  # raised below, outside the nursery (not in an exception group)
            finally:
                self.engine.detach(hello.name, writer)
                writer.stop()
                log.info("peer %s disconnected", hello.name)
        if failure is not None:
            raise failure

    @staticmethod
    async def _writer(writer: PeerWriter, connection: trio.CancelScope) -> None:
        """The peer's writer; when it gives up on the peer, the whole connection ends."""
        await writer.run()
        connection.cancel()

    async def _serve_cli(self, channel: Channel) -> None:
        while True:
            msg = await channel.receive()
            assert isinstance(msg, m.Request)
            handler = self.methods.get(msg.method)
            if handler is None:
                reply = m.Response(
                    id=msg.id,
                    ok=False,
                    error_code="unknown_method",
                    error=f"unknown method {msg.method!r}",
                )
            else:
                try:
                    result = await handler(msg.params)
                except ShoalError as exc:
                    reply = m.Response(
                        id=msg.id, ok=False, error_code=type(exc).__name__, error=str(exc)
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    reply = m.Response(
                        id=msg.id,
                        ok=False,
                        error_code="bad_request",
                        error=f"bad parameters for {msg.method}: {exc}",
                    )
                else:
                    reply = m.Response(id=msg.id, ok=True, result=result)
            await channel.send(reply)
