"""``shoal fleet install / status / uninstall``: the per-host steps run over SSH, many at once.

Each host runs :data:`seeder.fleet_steps.STEPS` in order in its own task; at most ``parallel``
hosts are in flight (a trio CapacityLimiter) and paramiko's blocking calls run in worker
threads under the same bound. A host's failure is recorded with its reason and never stops
the others. What runs on the host is :mod:`seeder.fleet_agent`, sent with each command.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import trio
import yaml

from common.addr import Address
from common.errors import ShoalError
from common.install_layout import InstallLayout
from seeder import fleet_agent, ssh, wheelhouse
from seeder.fleet_seeder import ClientFactory, ConnectedWatch, Tokens
from seeder.fleet_steps import (
    Failed,
    HostRun,
    Plan,
    Reason,
    check_disk,
    check_python,
    classify_command,
    plan,
    reason_of,
)
from seeder.inventory import InventoryHost

WAIT_CONNECTED = 90.0
UNIT = "shoal-peer.service"
AGENT = Path(fleet_agent.__file__).read_text()


@dataclass(frozen=True)
class Options:
    known_hosts: Path
    accept_new: bool = False
    identity_file: str | None = None
    service: str = "auto"  # systemd | none | auto
    parallel: int = 50
    peer_seeder: Address | None = None  # what the peers dial
    cache: Path = Path("wheelhouse")
    purge: bool = False
    wait: float = WAIT_CONNECTED


def layout_of(host: InventoryHost) -> InstallLayout:
    def path(var: str, default: PurePosixPath) -> PurePosixPath:
        return PurePosixPath(str(host.var(var, default)))

    base = InstallLayout()
    return InstallLayout(
        prefix=path("shoal_prefix", base.prefix),
        data_dir=path("shoal_data_dir", base.data_dir),
        config=path("shoal_config", base.config),
        unit_dir=path("shoal_unit_dir", base.unit_dir),
        unit_name=str(host.var("shoal_unit", base.unit_name)),
    )


def render_unit(layout: InstallLayout) -> str:
    """The shipped unit (``deploy/systemd/shoal-peer.service``) for this host's paths: it runs
    the host's launcher (``PREFIX/bin/shoal-peer``) with the host's config."""
    text = resources.files("seeder").joinpath(f"deploy/systemd/{UNIT}").read_text()
    default = InstallLayout()
    for old, new in ((default.launcher, layout.launcher), (default.config, layout.config)):
        if any(c.isspace() or c in "%$\\\"'" for c in str(new)):
            raise ShoalError(f"path {str(new)!r} cannot go into a systemd unit (spaces, quotes)")
        text = text.replace(str(old), str(new))
    return text


class Host:
    """One host's SSH session and the host-agent calls on it."""

    def __init__(self, inv: InventoryHost, opts: Options, limiter: trio.CapacityLimiter) -> None:
        self.inv = inv
        self.opts = opts
        self.limiter = limiter
        self.layout = layout_of(inv)
        self.session: ssh.Session | None = None
        self.become = inv.user != "root" and bool(inv.var("shoal_become", True))

    async def blocking(self, fn: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(fn, limiter=self.limiter)

    async def connect(self) -> None:
        target = ssh.Target(
            self.inv.name,
            self.inv.address,
            self.inv.port,
            self.inv.user,
            self.inv.key_file or self.opts.identity_file,
        )
        try:
            self.session = await self.blocking(
                lambda: ssh.connect(target, self.opts.known_hosts, accept_new=self.opts.accept_new)
            )
        except ssh.SshError as exc:
            raise Failed(reason_of(exc.reason), str(exc)) from None

    def request(self, **extra: Any) -> dict[str, Any]:
        lay = self.layout
        seeder = self.opts.peer_seeder or Address("127.0.0.1", 7700)
        return {
            "prefix": str(lay.prefix),
            "data_dir": str(lay.data_dir),
            "config": str(lay.config),
            "unit": str(lay.unit),
            "unit_name": lay.unit_name,
            "pidfile": str(lay.pidfile),
            "logfile": str(lay.logfile),
            "program": str(lay.program()),
            "seeder": str(seeder),
            "seeder_host": seeder.host,
            "seeder_port": seeder.port,
            "service": str(self.inv.var("shoal_service", self.opts.service)),
            **extra,
        }

    async def agent(
        self, op: str, stdin_extra: str = "", limit: float = 900, **extra: Any
    ) -> dict[str, Any]:
        """Run one host-agent operation; its JSON answer (Failed if it failed)."""
        assert self.session is not None
        session = self.session
        cmd = f"{shlex.quote(self.inv.python)} -c {shlex.quote(AGENT)} {op}"
        if self.become:
            cmd = f"sudo -n {cmd}"
        stdin = json.dumps(self.request(**extra)) + "\n" + stdin_extra
        try:
            done = await self.blocking(lambda: session.run(cmd, stdin=stdin, timeout=limit))
        except ssh.SshError as exc:
            raise Failed(reason_of(exc.reason), str(exc)) from None
        try:
            answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise classify_command(
                done.exit_code, done.stdout, done.stderr, self.inv.python
            ) from None
        if not answer.get("ok"):
            raise Failed(reason_of(answer.get("reason", "error")), str(answer.get("detail")))
        return answer

    async def upload(self, local: Path) -> str:
        """Upload to a fresh temp dir of the SSH user (then the agent, maybe via sudo, reads it)."""
        assert self.session is not None
        session = self.session
        made = await self.blocking(lambda: session.run("mktemp -d", timeout=60))
        remote = f"{made.stdout.strip()}/{local.name}"
        if made.exit_code != 0 or not made.stdout.strip().startswith("/"):
            raise Failed(Reason.ERROR, f"mktemp -d failed: {made.stderr.strip()[-200:]}")
        try:
            await self.blocking(lambda: session.put(local, remote))
        except ssh.SshError as exc:
            raise Failed(reason_of(exc.reason), str(exc)) from None
        return remote

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


async def install_one(
    inv: InventoryHost,
    run: HostRun,
    opts: Options,
    limiter: trio.CapacityLimiter,
    builds: Builds,
    tokens: Tokens,
    watch: ConnectedWatch,
) -> None:
    host = Host(inv, opts, limiter)
    try:
        run.begin("connect", time.monotonic())
        await host.connect()
        run.begin("check python", time.monotonic())
        probe = await host.agent("probe", limit=60)
        check_python(probe, inv.python)
        run.info["service"] = probe["service"]
        target = wheelhouse.Target(probe["python"], probe["machine"], probe["glibc"])
        run.begin("bundle", time.monotonic())
        bundle = await builds.get(target)
        bind = str(inv.var("shoal_bind") or probe["route_ip"] or inv.address)
        config = peer_config(inv, host.layout, opts, bind)
        unit = render_unit(host.layout) if probe["service"] == "systemd" else None
        todo = plan(probe, bundle.install_id, bundle.manifest, config, unit, tokens.enabled)
        run.begin("check disk", time.monotonic())
        check_disk(probe, bundle.size, todo.install)
        if todo.install:
            run.begin("upload", time.monotonic())
            remote = await host.upload(bundle.archive)
            run.begin("install", time.monotonic())
            await host.agent(
                "install",
                bundle=remote,
                version=bundle.install_id,
                manifest=bundle.manifest,
                dist=wheelhouse.DIST,
                dist_version=bundle.version,
            )
            run.changed(f"installed {bundle.install_id}")
        run.info["version"] = bundle.install_id
        run.begin("configure", time.monotonic())
        configured = await host.agent(
            "configure", config_text=config, unit_text=unit, service=probe["service"]
        )
        for what in configured["changed"]:
            run.changed(what)
        if todo.enroll:
            run.begin("enroll", time.monotonic())
            token = await tokens.create(inv.name)
            await host.agent("enroll", stdin_extra=token + "\n", name=inv.name, labels=_labels(inv))
            run.changed("enrolled")
        run.begin("start", time.monotonic())
        await _start(host, run, todo, probe["service"])
        run.begin("wait connected", time.monotonic())
        if not await watch.wait(inv.name, opts.wait):
            tail = await _log_tail(host, probe["service"])
            why = f" (seeder: {watch.error})" if watch.error else ""
            raise Failed(
                Reason.SERVICE_FAILED,
                f"not connected to the seeder after {opts.wait:.0f}s{why}; log: {tail}",
            )
        run.finish(time.monotonic())
    except Failed as exc:
        run.fail(exc.reason, exc.detail, time.monotonic())
    except ShoalError as exc:  # e.g. the wheelhouse could not be built
        run.fail(Reason.ERROR, str(exc), time.monotonic())
    finally:
        await trio.to_thread.run_sync(host.close)


async def _start(host: Host, run: HostRun, todo: Plan, service: str) -> None:
    if todo.running and not todo.restart:
        return
    try:
        await host.agent("start", restart=todo.restart, service=service, limit=180)
    except Failed as exc:
        if exc.reason is Reason.SERVICE_FAILED:
            exc.detail += " | " + await _log_tail(host, service)
        raise
    run.changed("restarted" if todo.running else "started")


async def _log_tail(host: Host, service: str) -> str:
    if service == "systemd":
        return f"see journalctl -u {host.layout.unit_name}"
    try:
        tail = (await host.agent("log_tail", limit=30))["tail"]
    except Failed as exc:
        return f"(no log: {exc.detail})"
    return " | ".join(tail[-5:]) or "(empty log)"


def _labels(inv: InventoryHost) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(inv.labels.items()))


def peer_config(inv: InventoryHost, layout: InstallLayout, opts: Options, bind: str) -> str:
    """The host's ``peer.yml`` (keys: ``shoal-peer run``'s options, see peer/config.py).

    Written with sorted keys, so the same inventory gives the same bytes (idempotence)."""
    assert opts.peer_seeder is not None
    values: dict[str, Any] = {
        "seeder": str(opts.peer_seeder),
        "data_dir": str(layout.data_dir),
        "name": inv.name,
        "bind": bind,
        "labels": dict(inv.labels),
    }
    if inv.var("shoal_torrent_port") is not None:
        values["torrent_port"] = int(inv.var("shoal_torrent_port"))
    body = yaml.safe_dump(values, sort_keys=True, default_flow_style=False)
    return f"# written by shoal fleet install; read by shoal-peer run --config\n{body}"


class Builds:
    """Wheelhouse bundles per target platform, each built once per run (in a thread)."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.done: dict[str, wheelhouse.Bundle] = {}
        self.locks: dict[str, trio.Lock] = {}

    async def get(self, target: wheelhouse.Target) -> wheelhouse.Bundle:
        async with self.locks.setdefault(target.key, trio.Lock()):
            if target.key not in self.done:
                self.done[target.key] = await trio.to_thread.run_sync(
                    wheelhouse.build_bundle, self.cache, target
                )
            return self.done[target.key]


def check_peer_seeder(address: Address) -> None:
    try:
        loopback = ipaddress.ip_address(address.host).is_loopback
    except ValueError:
        loopback = address.host == "localhost"
    if loopback:
        raise ShoalError(
            f"peers would dial {address}, a loopback address; pass --peer-seeder HOST:PORT"
            " (the seeder's address as the hosts reach it)"
        )


async def install_fleet(
    hosts: list[InventoryHost],
    opts: Options,
    client: ClientFactory,
    runs: dict[str, HostRun],
) -> None:
    """Install every host (results land in ``runs``, which a progress view may read live)."""
    assert opts.peer_seeder is not None
    check_peer_seeder(opts.peer_seeder)
    tokens = Tokens(client)
    await tokens.probe()
    builds = Builds(opts.cache)
    watch = ConnectedWatch(client)
    threads = trio.CapacityLimiter(opts.parallel)
    hosts_at_once = trio.CapacityLimiter(opts.parallel)

    async def one(inv: InventoryHost) -> None:
        async with hosts_at_once:
            await install_one(inv, runs[inv.name], opts, threads, builds, tokens, watch)

    async with trio.open_nursery() as outer:
        outer.start_soon(watch.run)
        async with trio.open_nursery() as nursery:
            for inv in hosts:
                nursery.start_soon(one, inv)
        outer.cancel_scope.cancel()
