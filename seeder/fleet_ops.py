"""``shoal fleet status`` and ``shoal fleet uninstall``: read or remove shoal on hosts over SSH.

Both reuse the install's SSH session and host agent (:class:`seeder.fleet_install.Host`) with
the same bounded parallelism; a host that fails is reported with its reason, the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from common.errors import ShoalError
from seeder.fleet_install import Host, Options
from seeder.fleet_seeder import ClientFactory
from seeder.fleet_steps import Failed, HostRun, Reason
from seeder.inventory import InventoryHost


async def _each(
    hosts: list[InventoryHost],
    opts: Options,
    runs: dict[str, HostRun],
    work: Callable[[Host, HostRun], Awaitable[None]],
) -> None:
    threads = trio.CapacityLimiter(opts.parallel)
    at_once = trio.CapacityLimiter(opts.parallel)

    async def one(inv: InventoryHost) -> None:
        run = runs[inv.name]
        host = Host(inv, opts, threads)
        async with at_once:
            try:
                run.begin("connect", time.monotonic())
                await host.connect()
                await work(host, run)
                run.finish(time.monotonic())
            except Failed as exc:
                run.fail(exc.reason, exc.detail, time.monotonic())
            finally:
                await trio.to_thread.run_sync(host.close)

    async with trio.open_nursery() as nursery:
        for inv in hosts:
            nursery.start_soon(one, inv)


async def status_fleet(
    hosts: list[InventoryHost], opts: Options, client: ClientFactory, runs: dict[str, HostRun]
) -> None:
    """Per host: reachable, installed version, service state, enrolled, connected."""

    async def probe(host: Host, run: HostRun) -> None:
        run.begin("probe", time.monotonic())
        found = await host.agent("probe", limit=60)
        run.info.update(
            reachable=True,
            version=found["current"],
            service=found["service"],
            running=found["running"],
            enrolled=found["enrolled"],
            python=found["python_full"],
        )

    await _each(hosts, opts, runs, probe)
    connected: set[str] | None = None
    try:
        async with client() as c:
            listed = (await c.call("hosts.list"))["hosts"]
        connected = {h["name"] for h in listed if h["connected"]}
    except ShoalError as exc:
        for run in runs.values():
            run.info["seeder_error"] = str(exc)
    for run in runs.values():
        run.info.setdefault("reachable", False)
        run.info["connected"] = None if connected is None else run.name in connected


async def uninstall_fleet(
    hosts: list[InventoryHost], opts: Options, runs: dict[str, HostRun]
) -> None:
    """Stop and remove the service, the virtualenvs and the config; the data dir with purge."""

    async def remove(host: Host, run: HostRun) -> None:
        run.begin("probe", time.monotonic())
        found = await host.agent("probe", limit=60)
        run.begin("uninstall", time.monotonic())
        done = await host.agent("uninstall", purge=opts.purge, service=found["service"], limit=180)
        for what in done["removed"]:
            run.changed(f"removed {what}")

    await _each(hosts, opts, runs, remove)


def status_row(run: HostRun) -> list[str]:
    i: dict[str, Any] = run.info
    if run.reason is not None:
        return [
            run.name,
            "no",
            "-",
            "-",
            "-",
            _yes(i.get("connected")),
            f"{run.reason}: {run.detail}",
        ]
    return [
        run.name,
        "yes",
        i.get("version") or "-",
        f"{i.get('service')} {'running' if i.get('running') else 'stopped'}",
        _yes(i.get("enrolled")),
        _yes(i.get("connected")),
        i.get("seeder_error", ""),
    ]


def _yes(value: Any) -> str:
    return "?" if value is None else ("yes" if value else "no")


STATUS_HEADS = ["HOST", "REACHABLE", "VERSION", "SERVICE", "ENROLLED", "CONNECTED", "PROBLEM"]
__all__ = ["STATUS_HEADS", "Reason", "status_fleet", "status_row", "uninstall_fleet"]
