"""``shoal-peer join``: its options and output (the work is in :mod:`peer.join`)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

import trio

from common.addr import Address
from common.crypto.tokens import JoinToken
from common.errors import ConfigError, ShoalError
from common.labels import parse_labels
from peer.join import RETRY_FOR, JoinOptions, join

TOKEN_ENV = "SHOAL_JOIN_TOKEN"


def add_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("join", help="enroll this host with a join token (see `shoal token`)")
    p.add_argument("--seeder", required=True, help="the seeder's control HOST:PORT")
    p.add_argument(
        "--token", help=f"the join token (default: ${TOKEN_ENV}, which keeps it out of ps)"
    )
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--name", default=socket.gethostname(), help="host name (default: hostname)")
    p.add_argument("--labels", default="", help="k=v,k=v (the token's labels win on a clash)")
    p.add_argument("--join-port", type=int, help="the join port (default: control port + 3)")
    p.add_argument(
        "--retry-for",
        type=float,
        default=RETRY_FOR,
        metavar="SECONDS",
        help="redial a join port that fails before the request is sent (seeder restarting, or"
        f" at its connection cap) for this long; 0: once (default: {RETRY_FOR:g})",
    )
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    try:
        text = args.token or os.environ.get(TOKEN_ENV, "")
        if not text:
            raise ConfigError(f"pass --token TOKEN or set ${TOKEN_ENV}")
        opts = JoinOptions(
            seeder=Address.parse(args.seeder, default_port=7700),
            token=JoinToken.parse(text),
            data_dir=args.data_dir.absolute(),
            name=args.name,
            labels=parse_labels(args.labels),
            join_port=args.join_port,
            retry_for=max(0.0, args.retry_for),
        )
        result = trio.run(join, opts)
    except ShoalError as exc:
        print(f"shoal-peer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    elif result.joined:
        labels = ",".join(f"{k}={v}" for k, v in sorted(result.labels.items())) or "none"
        print(f"joined as {result.name} (labels: {labels}): {result.identity}")
        print(f"start the daemon with: shoal-peer run --data-dir {args.data_dir}")
    else:
        print(f"already enrolled as {result.name} ({result.identity}/host.crt); nothing to do")
    return 0
