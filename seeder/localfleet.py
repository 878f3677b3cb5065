"""A seeder and peer daemons as real processes on this machine's loopback.

Used by ``shoal demo`` and by the integration tests: every host gets its own 127.0.0.x address
and data directory, every daemon its own process group, and everything started here is stopped
here (by process group, never by name). Security is on as in production: the seeder's identity
is made in its data directory on first start, every peer is enrolled (a bundle, installed with
``shoal-peer run --bundle``) before it starts, and every client presents the admin credential.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import trio

from common.addr import Address
from common.bundle import Bundle
from common.crypto import certs
from common.errors import ConnectionClosed, ShoalError
from common.tls import ClientTLS
from seeder.authority import HOST_LIFETIME, SeederCA, identity_dir, init_identity
from seeder.client import IDENTITY_ENV, SeederClient, load_credential, open_client
from seeder.identity_cli import enroll_host

STOP_GRACE = 5.0
# control address -> admin credential of every seeder started here, for helpers that know only
# the address (tests' ``shoal(control, ...)``)
_CREDENTIALS: dict[str, Path] = {}


def credential_for(control: str) -> Path | None:
    """The admin credential of the LocalFleet seeder at ``control``, if one was started here."""
    return _CREDENTIALS.get(control)


@dataclass
class Daemon:
    name: str
    process: trio.Process
    log: Path


@dataclass
class LocalFleet:
    root: Path
    seeder_ip: str = "127.0.0.1"
    # Run every daemon and CLI inside this network namespace (the bench/netns.py testbed's
    # seeder namespace), so namespaced hosts reach the seeder. ``client()`` then cannot reach
    # it from the test's own namespace: go through ``cli()``.
    netns: str | None = None
    daemons: list[Daemon] = field(default_factory=list)
    control: Address | None = None
    seeder: Daemon | None = None
    bundles: dict[str, Path] = field(default_factory=dict)
    torrent_ports: dict[str, int] = field(default_factory=dict)

    @property
    def seeder_dir(self) -> Path:
        return self.root / "seeder"

    @property
    def credential(self) -> Path:
        """The admin credential ``shoal seeder init`` made (what the CLI presents here)."""
        return identity_dir(self.seeder_dir) / "admin.pem"

    def init_identity(self) -> Path:
        """The seeder's identity (``shoal seeder init``), made once, for its loopback IP."""
        if not (identity_dir(self.seeder_dir) / "ca.crt").exists():
            self.seeder_dir.mkdir(parents=True, exist_ok=True)
            hosts = [self.seeder_ip, "localhost"]
            init_identity(self.seeder_dir, hosts, dt.datetime.now(dt.UTC))
        return self.credential

    def tls(self, credential: Path | None = None) -> ClientTLS:
        return load_credential(credential or self.init_identity())[0]

    async def start_seeder(
        self, *, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> Address:
        """Start (or restart) the seeder, keeping its control address, and wait until it answers.
        ``env`` adds to the seeder's environment (e.g. its git credential helper's config)."""
        self.init_identity()
        if self.control is None:  # the tracker, BitTorrent and join ports follow it (+1..+3)
            port = 7700 if self.netns else free_port(self.seeder_ip, block=4)  # a fresh namespace
            self.control = Address(self.seeder_ip, port)
        _CREDENTIALS[str(self.control)] = self.credential
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
            env=env,
        )
        with trio.fail_after(30):
            while self.netns is not None:
                if (await trio.to_thread.run_sync(lambda: self.cli("hosts"))).returncode == 0:
                    return self.control
                self._check_alive()
                await trio.sleep(0.2)
            while True:
                try:
                    async with open_client(self.control, self.tls()) as client:
                        await client.call("hosts.list")
                        return self.control
                except ConnectionClosed:
                    self._check_alive()
                    await trio.sleep(0.1)

    async def enroll(self, name: str, labels: dict[str, str] | None = None) -> Path:
        """Enroll host ``name`` (as ``shoal enroll`` does); its bundle file. Through the running
        seeder, or straight from its CA while none runs (a test may start a peer first)."""
        if self.seeder is not None and self.seeder.process.returncode is None:
            async with self.client() as client:
                bundle, _ = await enroll_host(client, name, labels or {})
        else:
            self.init_identity()
            bundle = offline_bundle(self.seeder_dir, name, labels or {})
        path = self.root / "bundles" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        certs.write_private(path, bundle.to_json(), overwrite=True)
        self.bundles[name] = path
        return path

    async def start_peer(
        self,
        name: str,
        ip: str,
        *,
        labels: str | None = "",
        extra: tuple[str, ...] = (),
        program: Path | None = None,
    ) -> Daemon:
        """Start a peer daemon, enrolled first if it never was (its labels go in its Hello):
        this interpreter's ``peer.cli``, or ``program`` (an installed ``shoal-peer``, e.g.
        ``PREFIX/current/bin/shoal-peer``). ``labels=None`` passes no ``--labels`` (a
        ``--config`` file in ``extra`` then gives them)."""
        assert self.control is not None, "start the seeder first (or choose its address)"
        joined = name not in self.bundles and (self.peer_dir(name) / "peer.json").exists()
        bundle = None if joined else self.bundles.get(name) or await self.enroll(name)
        # A free BitTorrent port, the same one across restarts: on a shared machine another
        # fleet's peer may hold the default 6881 of the same 127.0.0.x (extra may override it).
        port = self.torrent_ports.setdefault(name, free_port(ip))
        args = ["run", "--seeder", str(self.control), "--name", name, "--bind", ip]
        args += ["--data-dir", str(self.peer_dir(name))]
        args += ["--labels", labels] if labels is not None else []
        args += ["--bundle", str(bundle)] if bundle else []
        args += ["--torrent-port", str(port), *extra]
        if program is not None:
            return await self._spawn(name, args, program=str(program))
        return await self._spawn(name, ["-m", "peer.cli", *args])

    async def start_joined_peer(self, name: str, *, extra: tuple[str, ...] = ()) -> Daemon:
        """Start a host that ran :meth:`join` as an operator would: ``shoal-peer run
        --data-dir D`` and nothing else (but a free BitTorrent port, on a shared machine)."""
        port = self.torrent_ports.setdefault(name, free_port(self.seeder_ip))
        args = ["--data-dir", str(self.peer_dir(name)), "--torrent-port", str(port), *extra]
        return await self._spawn(name, ["-m", "peer.cli", "run", *args])

    def join(
        self, name: str, token: str, *args: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``shoal-peer join`` for host ``name`` into its data directory (after
        it, :meth:`start_peer` starts that host without a bundle)."""
        assert self.control is not None, "start the seeder first"
        where = ["--seeder", str(self.control), "--data-dir", str(self.peer_dir(name))]
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "peer.cli",
                "join",
                *where,
                "--token",
                token,
                "--name",
                name,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def client(
        self, credential: Path | None = None
    ) -> contextlib.AbstractAsyncContextManager[SeederClient]:
        """A CLI-side connection to this fleet's seeder, presenting ``credential`` (default:
        the admin credential)."""
        assert self.control is not None, "start the seeder first"
        return open_client(self.control, self.tls(credential))

    def cli(
        self, *args: str, timeout: float = 120, credential: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``shoal`` CLI against this fleet's seeder (as ``credential``, default the
        admin credential, passed in ``SHOAL_IDENTITY``)."""
        assert self.control is not None, "start the seeder first"
        env = {**os.environ, IDENTITY_ENV: str(credential or self.init_identity())}
        return subprocess.run(
            [
                *self._prefix(),
                sys.executable,
                "-m",
                "seeder.cli",
                *args,
                "--seeder",
                str(self.control),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    def add_app(self, repo: Path | str, app: str = "web", *extra: str) -> None:
        """Register ``repo`` (a path on this machine or any git URL) as application ``app``
        through the real CLI; a no-op if it is registered with the same settings."""
        url = str(repo.resolve()) if isinstance(repo, Path) else repo
        out = self.cli("app", "add", app, "--repo", url, *extra)
        if out.returncode != 0:
            raise ShoalError(f"app add failed: {out.stderr.strip()}")

    def build_release(
        self, repo: Path | str, ref: str = "main", app: str = "web", extra: tuple[str, ...] = ()
    ) -> str:
        """Build a release of ``repo`` at ``ref`` through the real CLI (registering ``repo`` as
        application ``app`` first); its release id."""
        self.add_app(repo, app)
        out = self.cli("release", "build", app, "--ref", ref, *extra)
        if out.returncode != 0:
            raise ShoalError(f"release build failed: {out.stderr.strip()}")
        return out.stdout.strip().splitlines()[-1]

    def peer_dir(self, name: str) -> Path:
        return self.root / "hosts" / name

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

    async def _spawn(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        program: str = sys.executable,
    ) -> Daemon:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = await trio.lowlevel.open_process(
                [*self._prefix(), program, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **env} if env else None,
            )
        daemon = Daemon(name, process, log)
        self.daemons.append(daemon)
        return daemon

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

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


def offline_bundle(seeder_dir: Path, name: str, labels: dict[str, str]) -> Bundle:
    """A host bundle issued straight from the CA in ``seeder_dir`` (no seeder may be running:
    it is the one writer of the CA's index)."""
    authority = SeederCA(seeder_dir)
    key = certs.generate_key()
    cert = authority.issue(
        certs.public_pem(key.public_key()),
        name,
        certs.HOST_ROLE,
        now=dt.datetime.now(dt.UTC),
        lifetime=HOST_LIFETIME,
        labels=labels,
    )
    return Bundle(
        name, labels, authority.ca_pem, cert, certs.key_pem(key), authority.signing_public()
    )


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def free_port(ip: str, *, block: int = 1) -> int:
    """A TCP port of ``ip`` that is free now, and so are the ``block - 1`` ports after it.

    Drawn outside the kernel's ephemeral range: a port from that range (what binding port 0
    gives) can be taken by any outgoing connection on the machine between this check and the
    listener's bind, which parallel tests making thousands of connections did."""
    low, high = _ephemeral_range()
    below, above = (10_000, low - block), (high + 1, 65_536 - block)
    span = below if below[1] - below[0] >= 1_000 else above
    if span[1] - span[0] < 1_000:
        raise ShoalError(f"no room outside the ephemeral ports {low}-{high} for test listeners")
    for _ in range(200):
        port = random.randrange(*span)
        if all(_free(ip, p) for p in range(port, port + block)):
            return port
    raise ShoalError(f"no block of {block} free ports on {ip}")


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux), else the IANA one."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def _free(ip: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
        return True
