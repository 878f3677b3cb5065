"""A seeder and peer daemons as real processes on this machine's loopback.

Used by ``shoal demo`` and by the integration tests: every host gets its own 127.0.0.x address
and data directory, every daemon its own process group, and everything started here is stopped
here (by process group, never by name).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import trio

from common.addr import Address
from common.crypto.signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, write_signing_key
from common.errors import ConnectionClosed, ShoalError
from seeder.client import SeederClient, open_client

STOP_GRACE = 5.0


@dataclass
class Daemon:
    name: str
    process: trio.Process
    log: Path


@dataclass
class LocalFleet:
    root: Path
    seeder_ip: str = "127.0.0.1"
    daemons: list[Daemon] = field(default_factory=list)
    control: Address | None = None
    seeder: Daemon | None = None

    async def start_seeder(self, *, extra: tuple[str, ...] = (), keys: bool = True) -> Address:
        """Start (or restart) the seeder, keeping its control address, and wait until it answers.
        ``keys=False`` does not make its release-signing key (to see it refuse to start)."""
        if self.control is None:  # the tracker and BitTorrent ports follow it (+1, +2)
            self.control = Address(self.seeder_ip, free_port(self.seeder_ip, block=3))
        if keys:
            self._signing_key()
        self.seeder = await self._spawn(
            "seeder",
            [
                "-m",
                "seeder.cli",
                "seeder",
                "run",
                "--data-dir",
                str(self.root / "seeder"),
                "--listen",
                str(self.control),
                *extra,
            ],
        )
        with trio.fail_after(30):
            while True:
                try:
                    async with open_client(self.control) as client:
                        await client.call("hosts.list")
                        return self.control
                except ConnectionClosed:
                    self._check_alive()
                    await trio.sleep(0.1)

    async def start_peer(
        self,
        name: str,
        ip: str,
        *,
        labels: str = "",
        extra: tuple[str, ...] = (),
        keys: bool = True,
    ) -> Daemon:
        """Start a peer daemon; ``keys=False`` does not pin the seeder's public key on it."""
        assert self.control is not None, "start the seeder first"
        if keys:
            self._pin_signing_key(name)
        return await self._spawn(
            name,
            [
                "-m",
                "peer.cli",
                "run",
                "--seeder",
                str(self.control),
                "--name",
                name,
                "--bind",
                ip,
                "--data-dir",
                str(self.peer_dir(name)),
                "--labels",
                labels,
                *extra,
            ],
        )

    def client(self) -> contextlib.AbstractAsyncContextManager[SeederClient]:
        """A CLI-side connection to this fleet's seeder (with whatever credentials it needs)."""
        assert self.control is not None, "start the seeder first"
        return open_client(self.control)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the real ``shoal`` CLI against this fleet's seeder."""
        assert self.control is not None, "start the seeder first"
        return subprocess.run(
            [sys.executable, "-m", "seeder.cli", *args, "--seeder", str(self.control)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def build_release(
        self, repo: Path, ref: str = "main", app: str = "web", extra: tuple[str, ...] = ()
    ) -> str:
        """Build a release of ``repo`` at ``ref`` through the real CLI; its release id."""
        out = self.cli("release", "build", str(repo), "--ref", ref, "--app", app, *extra)
        if out.returncode != 0:
            raise ShoalError(f"release build failed: {out.stderr.strip()}")
        return out.stdout.strip().splitlines()[-1]

    def peer_dir(self, name: str) -> Path:
        return self.root / "hosts" / name

    @property
    def identity_dir(self) -> Path:
        return self.root / "seeder" / "identity"

    def _signing_key(self) -> None:
        """The seeder's release-signing key, made in this fleet's own directory the first time
        (what `shoal seeder init` makes on a real seeder; the seeder refuses to run without)."""
        if not (self.identity_dir / PRIVATE_KEY_FILE).exists():
            write_signing_key(self.identity_dir)

    def _pin_signing_key(self, name: str) -> None:
        """Give a host the seeder's public key, as enrolling it would (unless it has one)."""
        pinned = self.peer_dir(name) / "identity" / PUBLIC_KEY_FILE
        if not pinned.exists():
            self._signing_key()  # a peer may start before its seeder
            pinned.parent.mkdir(parents=True, exist_ok=True)
            pinned.write_bytes((self.identity_dir / PUBLIC_KEY_FILE).read_bytes())

    async def wait_connected(
        self, client: SeederClient, names: list[str], wait: float = 30
    ) -> None:
        with trio.fail_after(wait):
            while True:
                hosts = (await client.call("hosts.list"))["hosts"]
                up = {h["name"] for h in hosts if h["connected"]}
                if set(names) <= up:
                    return
                self._check_alive()
                await trio.sleep(0.1)

    async def _spawn(self, name: str, args: list[str]) -> Daemon:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = await trio.lowlevel.open_process(
                [sys.executable, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        daemon = Daemon(name, process, log)
        self.daemons.append(daemon)
        return daemon

    def _check_alive(self) -> None:
        for d in self.daemons:
            if d.process.returncode is not None:
                tail = d.log.read_text(errors="replace").splitlines()[-5:]
                raise ShoalError(f"{d.name} exited with {d.process.returncode}: {' | '.join(tail)}")

    async def stop(self, daemon: Daemon, sig: int = signal.SIGTERM) -> None:
        """Stop one daemon's whole process group; SIGKILL if it lingers."""
        if daemon.process.returncode is None:
            _killpg(daemon.process.pid, sig)
            with trio.move_on_after(STOP_GRACE):
                await daemon.process.wait()
        _killpg(daemon.process.pid, signal.SIGKILL)
        await daemon.process.wait()
        if daemon in self.daemons:
            self.daemons.remove(daemon)

    async def stop_all(self) -> None:
        with trio.CancelScope(shield=True):
            for daemon in reversed(list(self.daemons)):
                await self.stop(daemon)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def free_port(ip: str, *, block: int = 1) -> int:
    """A TCP port of ``ip`` that is free now, and so are the ``block - 1`` ports after it."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((ip, 0))
            port = int(s.getsockname()[1])
        if port + block <= 65536 and all(_free(ip, p) for p in range(port + 1, port + block)):
            return port
    raise ShoalError(f"no block of {block} free ports on {ip}")


def _free(ip: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
        return True
