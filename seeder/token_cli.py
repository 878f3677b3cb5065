"""The ``shoal token`` commands: create, list and revoke join tokens (see README: Enrollment)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from common.durations import parse_duration
from common.errors import ConfigError
from common.labels import parse_labels
from seeder import render

WithSeeder = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def duration(text: str) -> float:
    """An argparse type: ``90``, ``90s``, ``15m``, ``1h``, ``2d`` -> seconds."""
    try:
        return parse_duration(text).total_seconds()
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(top: argparse._SubParsersAction, with_seeder: WithSeeder) -> None:  # type: ignore[type-arg]
    token = top.add_parser("token", help="join tokens for enrolling hosts").add_subparsers(
        dest="action", required=True
    )
    create = with_seeder(token.add_parser("create", help="make a join token (admin)"))
    create.add_argument(
        "--ttl", type=duration, default=3600.0, help="how long it is valid: 30m, 1h, 2d (1h)"
    )
    create.add_argument("--uses", type=int, default=1, help="how many hosts it enrolls (1)")
    create.add_argument("--labels", default="", help="k=v,k=v every host joining with it gets")
    create.add_argument(
        "--name-pattern", metavar="GLOB", help="joining host names must match, e.g. 'web-*'"
    )
    create.add_argument("--json", action="store_true")
    listing = with_seeder(token.add_parser("list", help="join tokens and what is left of them"))
    listing.add_argument("--json", action="store_true")
    revoke = with_seeder(token.add_parser("revoke", help="make a join token unusable at once"))
    revoke.add_argument("token_id")
    revoke.add_argument("--json", action="store_true")


async def run(client: Any, args: argparse.Namespace) -> int:
    if args.action == "create":
        made = await client.call(
            "token.create",
            ttl=args.ttl,
            uses=args.uses,
            labels=parse_labels(args.labels),
            name_pattern=args.name_pattern or "",
        )
        if args.json:
            print(json.dumps(made, indent=2, sort_keys=True))
            return 0
        labels = ",".join(f"{k}={v}" for k, v in sorted(made["labels"].items()))
        pattern = made["name_pattern"]
        limits = (f", labels {labels}" if labels else "") + (
            f", names {pattern!r}" if pattern else ""
        )
        print(
            f"join token {made['token_id']}: {made['uses']} use(s){limits},"
            f" expires {_when(made['expires_at'])}; on each new host run:\n"
            f"  shoal-peer join --seeder {args.seeder} --token TOKEN --data-dir DIR [--name NAME]",
            file=sys.stderr,
        )
        print(made["token"])
    elif args.action == "list":
        tokens = (await client.call("token.list"))["tokens"]
        _emit(tokens, args.json, list_text)
    else:
        revoked = (await client.call("token.revoke", token_id=args.token_id))["token"]
        _emit(revoked, args.json, lambda t: f"join token {t['token_id']} revoked")
    return 0


def list_text(tokens: list[dict[str, Any]]) -> str:
    rows = [
        [
            t["token_id"],
            t["state"],
            f"{t['uses'] - t['uses_left']}/{t['uses']}",
            _when(t["expires_at"]),
            ",".join(f"{k}={v}" for k, v in sorted(t["labels"].items())) or "-",
            t["name_pattern"] or "*",
            t["created_by"] or "-",
        ]
        for t in tokens
    ]
    heads = ["TOKEN", "STATE", "USED", "EXPIRES", "LABELS", "NAMES", "BY"]
    return render.table(heads, rows)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _emit(data: Any, as_json: bool, fmt: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if as_json else fmt(data))
