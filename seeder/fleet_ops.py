"""``shoal fleet status`` and ``shoal fleet uninstall``: read or remove shoal on hosts over SSH.

Both reuse the install's SSH session and host agent (:class:`seeder.fleet_install.Host`) with
the same bounded parallelism; a host that fails is reported with its reason, the others go on.

A host that ``uninstall`` removed has left the fleet: its certificate is revoked on the seeder
(:class:`Revoker`) and its identity deleted on the host, so a copy of its key opens nothing and
a later install enrolls it afresh. ``--keep-enrolled`` keeps both (a reinstall reconnects with
the same certificate).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from common.errors import ConfigError, RemoteError, ShoalError
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
    hosts: list[InventoryHost],
    opts: Options,
    runs: dict[str, HostRun],
    revoker: Revoker | None = None,
) -> None:
    """Stop and remove the service, the virtualenvs and the config; the data dir with purge.
    With a ``revoker``, then delete the host's identity and revoke its certificate; without
    one (``--keep-enrolled``), leave the host enrolled."""
    if revoker is not None:
        await revoker.check()

    async def remove(host: Host, run: HostRun) -> None:
        run.begin("probe", time.monotonic())
        found = await host.agent("probe", limit=60)
        run.begin("uninstall", time.monotonic())
        done = await host.agent(
            "uninstall",
            purge=opts.purge,
            forget_identity=revoker is not None,
            service=found["service"],
            limit=180,
        )
        for what in done["removed"]:
            run.changed(f"removed {what}")
        if revoker is None:
            run.info.update(revocation=KEPT, revoked=[])
            return
        run.begin("revoke", time.monotonic())
        outcome = await revoker.revoke(host.inv.name)
        run.info.update(outcome)
        run.changes.extend(f"revoked certificate {serial}" for serial in outcome["revoked"])

    await _each(hosts, opts, runs, remove)
    for run in runs.values():
        run.info.setdefault("revocation", NOT_ATTEMPTED)
        run.info.setdefault("revoked", [])


# a host's "revocation" in the report; "revoked" lists the serials this run revoked
REVOKED, ALREADY, NEVER = "revoked", "already revoked", "never enrolled"
KEPT, NOT_ATTEMPTED = "kept enrolled", "not attempted"  # --keep-enrolled; the host failed first
NOTED = (ALREADY, NEVER, KEPT)  # shown in the text report (a revocation is in its changes)


def revocation(serials: list[str] | None) -> dict[str, Any]:
    """What a host's report says about its certificate, from the serials ``hosts.revoke``
    revoked (``None``: the seeder never enrolled that name)."""
    if serials is None:
        return {"revocation": NEVER, "revoked": []}
    return {"revocation": REVOKED if serials else ALREADY, "revoked": list(serials)}


class Revoker:
    """Revokes the certificates of the hosts ``uninstall`` removed, one request at a time over
    a connection of its own each (the CA rewrites its index per revocation anyway, and a
    seeder restart mid-run costs one host's request, not the rest)."""

    def __init__(self, client: ClientFactory) -> None:
        self.client = client
        self.lock = trio.Lock()

    async def check(self) -> None:
        """Before any host is touched: the seeder answers, and the credential is an admin's
        (nothing is half-applied when it is not)."""
        try:
            async with self.client() as c:
                await c.call("admin.list")  # admin only, changes nothing
        except ShoalError as exc:
            raise ConfigError(
                f"fleet uninstall revokes the certificate of every host it removes, and the"
                f" seeder cannot do that for you: {exc}. Pass --keep-enrolled to uninstall"
                " without revoking"
            ) from None

    async def revoke(self, name: str) -> dict[str, Any]:
        """Revoke host ``name``; its report's revocation fields (Failed if the seeder failed)."""
        async with self.lock:
            try:
                async with self.client() as c:
                    answer = await c.call("hosts.revoke", name=name)
            except RemoteError as exc:
                if exc.code == "UnknownHost":
                    return revocation(None)
                raise Failed(Reason.REVOKE_FAILED, str(exc)) from None
            except ShoalError as exc:
                raise Failed(Reason.REVOKE_FAILED, f"the seeder: {exc}") from None
        return revocation([str(s) for s in answer["revoked"]])


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
__all__ = [
    "STATUS_HEADS",
    "Reason",
    "Revoker",
    "revocation",
    "status_fleet",
    "status_row",
    "uninstall_fleet",
]
