"""The seeder under test of the control-plane benchmark: a real ``shoal seeder run`` process.

Split out of :mod:`bench.control_plane` (one concept per file): it makes the seeder's identity
as ``shoal seeder init`` does, starts the seeder of the source tree under test (``--src``) in its
own process group, runs that tree's real ``shoal`` CLI against it, reads its CPU time from /proc,
and stops it (the whole process group) at the end. Everything is bounded in time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import trio

from bench.swarm import cpu_seconds
from common.addr import Address
from common.errors import ConnectionClosed, ShoalError
from common.tls import ClientTLS
from seeder.authority import identity_dir, init_identity
from seeder.client import IDENTITY_ENV, load_credential, open_client

STOP_GRACE = 5.0
CLI_TIMEOUT = 600.0  # a start or build on a slow seeder can take long; never forever


class BenchError(ShoalError):
    """The benchmark cannot go on (what and why in the message)."""


@dataclass
class Seeder:
    """A real ``shoal seeder run`` process of the tree under test, in its own process group."""

    src: Path
    python: str
    workdir: Path
    control: Address
    process: trio.Process | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.src), IDENTITY_ENV: str(self.credential)}

    @property
    def identity(self) -> Path:
        return identity_dir(self.workdir / "data")

    @property
    def credential(self) -> Path:
        return self.identity / "admin.pem"

    @property
    def tls(self) -> ClientTLS:
        return load_credential(self.credential)[0]

    @property
    def log(self) -> Path:
        return self.workdir / "seeder.log"

    async def start(self) -> None:
        if not self.identity.exists():
            (self.workdir / "data").mkdir(parents=True, exist_ok=True)
            init_identity(self.workdir / "data", [self.control.host], dt.datetime.now(dt.UTC))
        with self.log.open("ab") as out:
            self.process = await trio.lowlevel.open_process(
                [self.python, "-m", "seeder.cli", "--log-level", "WARNING", "seeder", "run",
                 "--data-dir", str(self.workdir / "data"), "--listen", str(self.control)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=self.workdir, env=self.env,
            )  # fmt: skip
        with trio.move_on_after(60):
            while True:
                self.check_alive()
                with contextlib.suppress(ConnectionClosed):
                    async with open_client(self.control, self.tls) as client:
                        await client.call("hosts.list")
                        return
                await trio.sleep(0.1)
        raise BenchError(f"the seeder did not answer within 60 s; see {self.log}")

    def check_alive(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            tail = " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])
            raise BenchError(f"the seeder exited with {self.process.returncode}: {tail}")

    def cpu(self) -> float:
        assert self.process is not None
        used = cpu_seconds([self.process.pid])
        return used["seeder_user"] + used["seeder_system"]

    async def stop(self) -> None:
        if self.process is None:
            return
        with trio.CancelScope(shield=True):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, sig)
                    with trio.move_on_after(STOP_GRACE):
                        await self.process.wait()

    async def cli(self, *args: str) -> str:
        """Run the real ``shoal`` CLI of the tree under test; its stdout."""
        cmd = [self.python, "-m", "seeder.cli", *args, "--seeder", str(self.control)]
        with trio.fail_after(CLI_TIMEOUT):
            done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                          check=False, cwd=self.workdir, env=self.env)  # fmt: skip
        if done.returncode != 0:
            tail = " | ".join(
                (done.stdout + done.stderr).decode(errors="replace").splitlines()[-8:]
            )
            raise BenchError(f"shoal {' '.join(args)} failed ({done.returncode}): {tail}")
        return str(done.stdout.decode())
