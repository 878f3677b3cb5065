"""``shoal seeder init``, ``shoal admin cert|list|revoke``, ``shoal enroll``, ``shoal hosts
revoke``: the seeder's identity and who it trusts.

``init`` works on the data directory (before any seeder runs); the others ask the running
seeder (admin credential needed), so a remote admin can enroll hosts and issue certificates.
The key pair of a new certificate is made here and only its public key is sent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.addr import Address
from common.bundle import Bundle
from common.crypto import certs
from common.durations import parse_duration
from common.errors import ConfigError
from seeder import render
from seeder.authority import default_hosts, init_identity
from seeder.client import SeederClient

WithSeeder = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def add_init(seeder: Any) -> None:
    """``shoal seeder init`` under the ``seeder`` group."""
    init = seeder.add_parser("init", help="create the seeder's CA, certificates and signing key")
    init.add_argument("--data-dir", type=Path, required=True)
    init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME|IP",
        help="a name or IP the seeder is reached at (repeatable; default: this hostname,"
        " localhost, 127.0.0.1 and ::1); the --listen IP is always added",
    )
    init.add_argument("--listen", help="the control HOST:PORT the seeder will listen on")
    init.add_argument("--json", action="store_true")


def add_commands(sub: Any, with_seeder: WithSeeder, hosts: argparse.ArgumentParser) -> None:
    """``admin cert|list|revoke``, ``enroll`` and ``hosts revoke``."""
    admin = sub.add_parser("admin", help="operator certificates").add_subparsers(
        dest="action", required=True
    )
    cert = with_seeder(admin.add_parser("cert", help="issue an operator certificate (admin)"))
    cert.add_argument("name")
    cert.add_argument("--role", required=True, choices=certs.OPERATOR_ROLES)
    cert.add_argument("--out", type=Path, required=True, help="credential file to write (new)")
    cert.add_argument("--ttl", default="90d", help="lifetime, e.g. 90d, 12h (default: 90d)")
    cert.add_argument("--json", action="store_true")
    listing = with_seeder(admin.add_parser("list", help="every operator certificate (admin)"))
    listing.add_argument("--json", action="store_true")
    revoke_op = with_seeder(
        admin.add_parser("revoke", help="refuse an operator's certificates from now on (admin)")
    )
    revoke_op.add_argument("name")
    revoke_op.add_argument("--json", action="store_true")

    enroll = with_seeder(sub.add_parser("enroll", help="make a host's bundle (admin)"))
    enroll.add_argument("name")
    enroll.add_argument("--labels", default="", help="k=v,k=v recorded for the host")
    enroll.add_argument("--out", type=Path, required=True, help="bundle file to write (new)")
    enroll.add_argument("--ttl", default="365d", help="lifetime (default: 365d)")
    enroll.add_argument("--json", action="store_true")

    actions = hosts.add_subparsers(dest="hosts_action")
    revoke = with_seeder(
        actions.add_parser("revoke", help="refuse a host's certificate from now on (admin)")
    )
    revoke.add_argument("name")
    revoke.add_argument("--json", action="store_true")


def run_init(args: argparse.Namespace) -> int:
    listen = Address.parse(args.listen, default_port=7700).host if args.listen else None
    listen = None if listen in ("0.0.0.0", "::") else listen  # not a name a client dials
    hosts = list(dict.fromkeys([*args.host, *([listen] if listen else [])])) or default_hosts()
    directory = init_identity(args.data_dir.resolve(), hosts, dt.datetime.now(dt.UTC))
    info = {
        "identity": str(directory),
        "admin_credential": str(directory / "admin.pem"),
        "hosts": hosts,
    }
    _emit(
        info,
        args.json,
        lambda i: (
            f"seeder identity created in {i['identity']} (certificate for {', '.join(hosts)})\n"
            f"admin credential: {i['admin_credential']}"
            f" (export SHOAL_IDENTITY={i['admin_credential']})"
        ),
    )
    return 0


async def run(client: SeederClient, args: argparse.Namespace) -> int | None:
    """Run one of this module's commands; None if ``args`` is another command."""
    if args.command == "admin" and args.action == "cert":
        _check_new(args.out)
        key = certs.generate_key()
        answer = await client.call(
            "admin.cert",
            name=args.name,
            role=args.role,
            public_key=certs.public_pem(key.public_key()),
            ttl=parse_duration(args.ttl).total_seconds(),
        )
        cert, ca = certs.load_certificate(answer["cert"]), certs.load_certificate(answer["ca"])
        certs.write_private(args.out, certs.Credential(cert, key, ca).to_pem())
        _emit(
            _summary(answer, args.out),
            args.json,
            lambda i: f"wrote {i['file']}: {i['role']} {i['name']}, valid until {i['not_after']}",
        )
        return 0
    if args.command == "admin" and args.action == "list":
        listed = (await client.call("admin.list"))["certificates"]
        _emit(listed, args.json, _operators_text)
        return 0
    if args.command == "admin" and args.action == "revoke":
        answer = await client.call("admin.revoke", name=args.name)
        _emit(answer, args.json, _revoked_text)
        return 0
    if args.command == "enroll":
        _check_new(args.out)
        labels = _parse_labels(args.labels)
        bundle, answer = await enroll_host(client, args.name, labels, parse_duration(args.ttl))
        certs.write_private(args.out, bundle.to_json())
        _emit(
            {**_summary(answer, args.out), "labels": bundle.labels},
            args.json,
            lambda i: (
                f"wrote {i['file']}: host {i['name']}, valid until {i['not_after']}; copy it to"
                f" the host and run `shoal-peer enroll --bundle FILE --data-dir DIR`"
            ),
        )
        return 0
    if args.command == "hosts" and getattr(args, "hosts_action", None) == "revoke":
        answer = await client.call("hosts.revoke", name=args.name)
        _emit(
            answer,
            args.json,
            lambda a: (
                f"revoked host {a['name']}: {len(a['revoked'])} certificate(s),"
                f" {a['disconnected']} live connection(s) closed"
            ),
        )
        return 0
    return None


async def enroll_host(
    client: SeederClient, name: str, labels: dict[str, str], lifetime: dt.timedelta | None = None
) -> tuple[Bundle, dict[str, Any]]:
    """Enroll host ``name`` through the seeder: its bundle (with a key made here), and the
    seeder's answer."""
    key = certs.generate_key()
    params: dict[str, Any] = {"ttl": lifetime.total_seconds()} if lifetime else {}
    answer = await client.call(
        "hosts.enroll",
        name=name,
        labels=labels,
        public_key=certs.public_pem(key.public_key()),
        **params,
    )
    bundle = Bundle(
        name=answer["name"],
        labels=dict(answer["labels"]),
        ca=bytes(answer["ca"]),
        cert=bytes(answer["cert"]),
        key=certs.key_pem(key),
        release_signing_pub=bytes(answer["release_signing_pub"]),
    )
    return bundle, answer


def _operators_text(listed: list[dict[str, Any]]) -> str:
    rows = [
        [c["name"], c["role"], c["serial"], c["not_after"][:19], c["state"], _day(c["revoked_at"])]
        for c in listed
    ]
    return render.table(["NAME", "ROLE", "SERIAL", "NOT AFTER", "STATE", "REVOKED"], rows)


def _day(iso: str | None) -> str:
    return "-" if iso is None else iso[:19]


def _revoked_text(answer: dict[str, Any]) -> str:
    if not answer["revoked"]:
        return f"operator {answer['name']}: every certificate was revoked already"
    return (
        f"revoked operator {answer['name']}: {len(answer['revoked'])} certificate(s),"
        f" {answer['disconnected']} live connection(s) closed"
    )


def _summary(answer: dict[str, Any], out: Path) -> dict[str, Any]:
    keys = ("name", "role", "serial", "not_after")
    return {**{k: answer[k] for k in keys}, "file": str(out)}


def _check_new(out: Path) -> None:
    """Refuse before asking the seeder anything: the file must be new, its directory exist."""
    if out.exists():
        raise ConfigError(f"--out {out} already exists; not overwriting it")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: no directory {out.parent}")


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"label {part!r} is not KEY=VALUE")
        labels[key.strip()] = value.strip()
    return labels


def _emit(data: Any, as_json: bool, fmt: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if as_json else fmt(data))
