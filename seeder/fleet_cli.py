"""The ``shoal fleet`` commands: ``hosts``, ``install``, ``status``, ``uninstall`` (README: Fleet
onboarding). ``hosts`` only reads the inventory; the others work over SSH (seeder/ssh.py)."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from common.addr import Address
from common.errors import ConfigError
from seeder import fleet_install, fleet_ops, fleet_view, render
from seeder.client import credential_path, load_credential, open_client
from seeder.fleet_steps import HostRun
from seeder.inventory import InventoryHost, env_inventory, load_inventory

WithSeeder = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least 1")
    return value


def add_commands(top: argparse._SubParsersAction, with_seeder: WithSeeder) -> None:  # type: ignore[type-arg]
    fleet = top.add_parser("fleet", help="install shoal on the hosts of an inventory over SSH")
    sub = fleet.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--inventory",
            type=Path,
            default=env_inventory(),
            help="Ansible YAML inventory (default: $SHOAL_INVENTORY)",
        )
        p.add_argument("--limit", help="Ansible pattern: web,db:!web03:&prod, web*")
        p.add_argument("--json", action="store_true")
        return p

    def over_ssh(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        common(with_seeder(p))
        p.add_argument("--parallel", type=_positive, default=50, help="hosts at once (50)")
        p.add_argument(
            "--known-hosts",
            type=Path,
            default=Path.home() / ".ssh" / "known_hosts",
            help="checked strictly (default: ~/.ssh/known_hosts)",
        )
        p.add_argument(
            "--accept-new",
            action="store_true",
            help="record unknown host keys (trust on first use); a changed key is always refused",
        )
        p.add_argument(
            "--identity-file", help="SSH private key (default: the agent, then ~/.ssh keys)"
        )
        p.add_argument(
            "--service",
            choices=("systemd", "none", "auto"),
            default="auto",
            help="how the daemon runs: systemd unit, or supervised with a pidfile (auto)",
        )
        return p

    common(sub.add_parser("hosts", help="what the inventory resolves to (no SSH)"))
    install = over_ssh(sub.add_parser("install", help="install, configure, enroll and start"))
    install.add_argument(
        "--peer-seeder",
        help="the seeder's control HOST:PORT as the hosts reach it (default: --seeder)",
    )
    install.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("SHOAL_CACHE", Path.home() / ".cache" / "shoal")),
        help="where wheelhouse bundles are kept (default: $SHOAL_CACHE or ~/.cache/shoal)",
    )
    install.add_argument(
        "--wait",
        type=float,
        default=fleet_install.WAIT_CONNECTED,
        help="seconds to wait for each host to show connected (90)",
    )
    over_ssh(sub.add_parser("status", help="per host: reachable, version, service, connected"))
    uninstall = over_ssh(sub.add_parser("uninstall", help="stop and remove shoal from hosts"))
    uninstall.add_argument("--purge", action="store_true", help="also delete the data dir")
    uninstall.add_argument(
        "--keep-enrolled",
        action="store_true",
        help="keep each host's certificate valid and its identity in place (default: delete the"
        " identity and revoke the certificate; needs an admin credential)",
    )


def select(args: argparse.Namespace) -> list[InventoryHost]:
    if args.inventory is None:
        raise ConfigError("give --inventory FILE (or set $SHOAL_INVENTORY)")
    hosts = load_inventory(args.inventory).select(args.limit)
    if not hosts:
        raise ConfigError(f"inventory {args.inventory}: no hosts selected")
    return hosts


def hosts_text(hosts: list[InventoryHost]) -> str:
    rows = [
        [
            h.name,
            f"{h.user}@{h.address}:{h.port}",
            ",".join(g for g in h.groups if g != "all") or "-",
            ",".join(f"{k}={v}" for k, v in sorted(h.labels.items())) or "-",
        ]
        for h in hosts
    ]
    return render.table(["HOST", "SSH", "GROUPS", "LABELS"], rows)


def host_dict(h: InventoryHost) -> dict[str, Any]:
    return {
        "name": h.name,
        "address": h.address,
        "port": h.port,
        "user": h.user,
        "key_file": h.key_file,
        "python": h.python,
        "groups": list(h.groups),
        "labels": h.labels,
        "prefix": str(fleet_install.layout_of(h).prefix),
        "data_dir": str(fleet_install.layout_of(h).data_dir),
        "config": str(fleet_install.layout_of(h).config),
    }


async def run(args: argparse.Namespace) -> int:
    hosts = select(args)
    if args.action == "hosts":
        if args.json:
            print(json.dumps([host_dict(h) for h in hosts], indent=2))
        else:
            print(hosts_text(hosts))
        return 0
    seeder = Address.parse(args.seeder, default_port=7700)
    opts = fleet_install.Options(
        known_hosts=args.known_hosts,
        accept_new=args.accept_new,
        identity_file=args.identity_file,
        service=args.service,
        parallel=args.parallel,
        peer_seeder=Address.parse(
            getattr(args, "peer_seeder", None) or args.seeder, default_port=7700
        ),
        cache=getattr(args, "cache", Path(".")) / "wheelhouse",
        purge=getattr(args, "purge", False),
        wait=getattr(args, "wait", fleet_install.WAIT_CONNECTED),
    )

    tls, _ = load_credential(credential_path(args.identity))

    def client() -> Any:
        return open_client(seeder, tls)

    runs = {h.name: HostRun(h.name) for h in hosts}
    began = time.monotonic()
    async with trio.open_nursery() as nursery:
        if not args.json:
            nursery.start_soon(fleet_view.show_progress, runs)
        if args.action == "install":
            await fleet_install.install_fleet(hosts, opts, client, runs)
        elif args.action == "status":
            await fleet_ops.status_fleet(hosts, opts, client, runs)
        else:
            revoker = None if args.keep_enrolled else fleet_ops.Revoker(client)
            await fleet_ops.uninstall_fleet(hosts, opts, runs, revoker)
        nursery.cancel_scope.cancel()
    failed = any(r.reason is not None for r in runs.values())
    if args.json:
        print(
            json.dumps({"hosts": [r.to_dict() for r in runs.values()], "ok": not failed}, indent=2)
        )
    elif args.action == "status":
        print(
            render.table(fleet_ops.STATUS_HEADS, [fleet_ops.status_row(r) for r in runs.values()])
        )
    else:
        print(
            fleet_view.report(
                runs, began, {"install": "installed", "uninstall": "uninstalled"}[args.action]
            )
        )
    return 1 if failed else 0
