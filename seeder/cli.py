"""``shoal``: the seeder service and the coordinator CLI.

Every command that talks to a running seeder takes ``--seeder HOST:PORT``, defaulting to the
``SHOAL_SEEDER`` environment variable, then ``127.0.0.1:7700``. Errors print one line naming the
problem and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

from common.addr import Address
from common.cli import add_override_option
from common.errors import ShoalError
from common.lifetime import run_until_signalled
from common.logs import setup_logging
from seeder import render, rollout_cli
from seeder.client import open_client

DEFAULT_SEEDER = "127.0.0.1:7700"
FINAL = ("succeeded", "failed", "halted", "aborted")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_seeder(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--seeder",
            default=os.environ.get("SHOAL_SEEDER", DEFAULT_SEEDER),
            help="control address of the seeder (default: $SHOAL_SEEDER or %(default)s)",
        )
        return p

    seeder = sub.add_parser("seeder", help="run or query the seeder service").add_subparsers(
        dest="action", required=True
    )
    stats = with_seeder(seeder.add_parser("stats", help="bytes the seeder has sent"))
    stats.add_argument("--json", action="store_true")
    run = seeder.add_parser("run", help="run the seeder in the foreground")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument("--listen", default=DEFAULT_SEEDER, help="control HOST:PORT")
    run.add_argument("--torrent-listen", help="BitTorrent IP:PORT (default: listen IP, any port)")
    run.add_argument("--tracker-listen", help="tracker IP:PORT (default: listen IP, any port)")
    run.add_argument("--piece-size", type=int, default=0, help="torrent piece size in bytes")
    run.add_argument(
        "--no-slices",
        action="store_true",
        help="let peers fetch any piece from the seeder (default: each its own slice)",
    )
    add_override_option(run)

    release = sub.add_parser("release", help="build and list releases").add_subparsers(
        dest="action", required=True
    )
    build = with_seeder(release.add_parser("build", help="build a release from a git ref"))
    build.add_argument("repo", type=Path)
    build.add_argument("--ref", required=True)
    build.add_argument("--app", help="application name (default: the repository's dir name)")
    with_seeder(release.add_parser("list", help="list releases")).add_argument(
        "--json", action="store_true"
    )

    rollout = sub.add_parser("rollout", help="start and watch rollouts").add_subparsers(
        dest="action", required=True
    )
    start = rollout_cli.add_commands(rollout, sub, with_seeder)
    start.add_argument("--wait", action="store_true", help="follow it until it ends")
    start.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits")

    with_seeder(sub.add_parser("hosts", help="list known hosts")).add_argument(
        "--json", action="store_true"
    )

    demo = sub.add_parser("demo", help="a seeder and peers on loopback, one full rollout")
    demo.add_argument("--peers", type=int, default=3)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, quiet=args.command not in ("seeder", "demo"))
    try:
        return trio.run(dispatch, args)
    except ShoalError as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return 1
    except ExceptionGroup as group:  # e.g. the seeder's store refused its data dir at start-up
        ours, rest = group.split(ShoalError)
        if ours is None or rest is not None:
            raise
        for leaf in _leaves(ours):
            print(f"shoal: error: {leaf}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def dispatch(args: argparse.Namespace) -> int:
    if args.command == "seeder" and args.action == "run":
        from common.torrent import parse_overrides
        from seeder.service import SeederConfig, run_seeder

        config = SeederConfig(
            data_dir=args.data_dir.resolve(),
            listen=Address.parse(args.listen),
            torrent_listen=_opt_addr(args.torrent_listen, 0),
            tracker_listen=_opt_addr(args.tracker_listen, 0),
            piece_size=args.piece_size,
            slices=not args.no_slices,
            torrent_settings=parse_overrides(args.torrent_setting),
        )
        await run_until_signalled(lambda: run_seeder(config))
        return 0
    if args.command == "demo":
        from seeder.demo import run_demo

        return await run_demo(peers=args.peers)
    async with open_client(Address.parse(args.seeder, default_port=7700)) as client:
        if args.command == "seeder":
            totals = await client.call("seeder.stats")
            _emit(totals, args.json, lambda t: f"uploaded {t['uploaded']} bytes of payload")
        elif args.command == "hosts":
            items = (await client.call("hosts.list"))["hosts"]
            _emit(items, args.json, render.hosts)
        elif args.command == "release" and args.action == "build":
            result = await client.call(
                "release.build", repo=str(args.repo.resolve()), ref=args.ref, app=args.app
            )
            mf = result["release"]
            print(
                f"{'built' if result['created'] else 'already built'}: {mf['app']} "
                f"{mf['version']} commit {mf['commit'][:12]} {mf['size']} bytes "
                f"infohash {mf['infohash'][:16]}"
            )
            print(mf["release_id"])
        elif args.command == "release":
            items = (await client.call("release.list"))["releases"]
            _emit(items, args.json, lambda rs: "\n".join(r["release_id"] for r in rs))
        elif (code := await rollout_cli.run(client, args)) is not None:
            return code
        else:
            return await _start(client, args)
    return 0


async def _start(client: Any, args: argparse.Namespace) -> int:
    started = trio.current_time()
    if args.command == "rollback":  # already started and announced by rollout_cli
        r = (await client.call("rollout.status", rollout_id=args.started_id))["rollout"]
    else:
        params = rollout_cli.wave_params(args)
        r = (
            await client.call(
                "rollout.start", release_id=args.release_id, hosts=args.hosts, **params
            )
        )["rollout"]
        if args.json and not args.wait:
            _emit(r, True, str)
            return 0
        print(f"rollout {r['rollout_id']} started on {len(r['targets'])} host(s)", flush=True)
        print(rollout_cli.plan_text(r), flush=True)
    if not args.wait:
        print(r["rollout_id"])
        return 0
    seen: dict[str, tuple[str, str]] = {}
    with trio.move_on_after(args.timeout) as scope:
        while True:
            r = (await client.call("rollout.status", rollout_id=r["rollout_id"]))["rollout"]
            for t in r["targets"]:
                now = (t["state"], t["step"])
                if seen.get(t["host"]) != now:
                    seen[t["host"]] = now
                    print(render.progress_line(t["host"], *now), flush=True)
            if r["state"] in FINAL:
                break
            await trio.sleep(0.25)
    print(render.rollout(r))
    if scope.cancelled_caught:
        print(f"gave up waiting after {args.timeout:.0f}s; the rollout goes on", file=sys.stderr)
        return 1
    print(render.summary(r, trio.current_time() - started))
    return 0 if r["state"] == "succeeded" else 1


def _leaves(group: BaseExceptionGroup[ShoalError]) -> list[BaseException]:
    return [
        leaf
        for exc in group.exceptions
        for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]


def _emit(data: Any, as_json: bool, fmt: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if as_json else fmt(data))


def _opt_addr(text: str | None, default_port: int) -> Address | None:
    return None if text is None else Address.parse(text, default_port=default_port)


if __name__ == "__main__":
    sys.exit(main())
