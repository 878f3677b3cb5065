"""What ``shoal fleet install`` asks of the seeder: join tokens, and which hosts are connected."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import trio

from common.errors import RemoteError, ShoalError
from seeder.client import SeederClient
from seeder.fleet_steps import Failed, Reason

ClientFactory = Callable[[], AbstractAsyncContextManager[SeederClient]]
TOKEN_TTL = 900.0  # seconds a host's join token is valid: long enough for one install


class ConnectedWatch:
    """Which hosts the seeder shows connected, refreshed twice a second while anyone waits."""

    def __init__(self, client: ClientFactory) -> None:
        self.client = client
        self.connected: set[str] = set()
        self.waiters = 0
        self.changed = trio.Event()
        self.wake = trio.Event()
        self.error: str | None = None

    async def run(self) -> None:
        while True:
            if self.waiters == 0:
                self.wake = trio.Event()
                await self.wake.wait()
            try:
                async with self.client() as client:
                    while self.waiters:
                        hosts = (await client.call("hosts.list"))["hosts"]
                        self.connected = {h["name"] for h in hosts if h["connected"]}
                        self.error = None
                        self.changed.set()
                        self.changed = trio.Event()
                        await trio.sleep(0.5)
            except ShoalError as exc:
                self.error = str(exc)
                await trio.sleep(1.0)

    async def wait(self, name: str, within: float) -> bool:
        self.waiters += 1
        self.wake.set()
        try:
            with trio.move_on_after(within):
                while name not in self.connected:
                    await self.changed.wait()
                return True
            return False
        finally:
            self.waiters -= 1


class Tokens:
    """Join tokens from the seeder, one per host (single use, short-lived, that name only)."""

    def __init__(self, client: ClientFactory) -> None:
        self.client = client
        self.enabled = True
        self.lock = trio.Lock()

    async def probe(self) -> None:
        """Does the seeder enroll hosts by token? (A seeder without security does not.)"""
        async with self.client() as client:
            try:
                await client.call("token.list")
            except RemoteError as exc:
                if exc.code != "unknown_method":
                    raise
                self.enabled = False

    async def create(self, name: str) -> str:
        async with self.lock, self.client() as client:
            try:
                made = await client.call(
                    "token.create", ttl=TOKEN_TTL, uses=1, labels={}, name_pattern=name
                )
            except ShoalError as exc:
                raise Failed(Reason.ENROLL_FAILED, f"seeder refused a join token: {exc}") from None
        return str(made["token"])
