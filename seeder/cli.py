"""``shoal``: the seeder service and the coordinator CLI.

Every command that talks to a running seeder takes ``--seeder HOST:PORT``, defaulting to the
``SHOAL_SEEDER`` environment variable, then ``127.0.0.1:7700``, and ``--identity FILE`` (the
operator's credential), defaulting to ``SHOAL_IDENTITY``. Errors print one line naming the
problem and exit non-zero.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from common.addr import Address, parse_ip
from common.cli import add_override_option
from common.errors import ConfigError, ShoalError
from common.lifetime import run_until_signalled
from common.logs import setup_logging
from common.torrent import torrent_hashes
from seeder import (
    app_cli,
    fleet_cli,
    follow,
    identity_cli,
    limits_cli,
    promote_cli,
    release_cli,
    render,
    rollout_cli,
    token_cli,
    upgrade_cli,
)
from seeder.client import connect_client, credential_path, load_credential, open_client
from seeder.swarms import DEFAULT_INTERVAL

DEFAULT_SEEDER = "127.0.0.1:7700"


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
        p.add_argument(
            "--identity",
            metavar="FILE",
            help="your credential (certificate, key, CA) (default: $SHOAL_IDENTITY)",
        )
        return p

    seeder = sub.add_parser("seeder", help="run or query the seeder service").add_subparsers(
        dest="action", required=True
    )
    identity_cli.add_init(seeder)
    stats = with_seeder(seeder.add_parser("stats", help="bytes the seeder has sent"))
    stats.add_argument("--json", action="store_true")
    run = seeder.add_parser("run", help="run the seeder in the foreground")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument(
        "--listen", default=DEFAULT_SEEDER, help="control HOST:PORT (default: %(default)s)"
    )
    run.add_argument(
        "--tracker-listen", help="tracker IP:PORT (default: listen IP, control port + 1)"
    )
    run.add_argument(
        "--torrent-listen", help="BitTorrent IP:PORT (default: listen IP, control port + 2)"
    )
    run.add_argument("--join-listen", help="join IP:PORT (default: listen IP, control port + 3)")
    run.add_argument(
        "--tracker-interval",
        type=_whole(1),
        default=DEFAULT_INTERVAL,
        help="seconds between announces the tracker asks for; it forgets a peer after 3"
        " (default: %(default)s)",
    )
    run.add_argument("--piece-size", type=int, default=0, help="torrent piece size in bytes")
    run.add_argument(
        "--no-slices",
        action="store_true",
        help="let peers fetch any piece from the seeder (default: each its own slice)",
    )
    run.add_argument(
        "--keep-releases",
        type=_whole(0),
        default=5,
        help="releases kept seeded besides those a rollout or a host's current/previous needs",
    )
    add_override_option(run)
    limits_cli.add_options(run)

    release = sub.add_parser("release", help="build and list releases").add_subparsers(
        dest="action", required=True
    )
    release_cli.add_commands(release, with_seeder)
    export = with_seeder(release.add_parser("torrent", help="export a release's .torrent"))
    export.add_argument("release_id")
    export.add_argument("--out", type=Path, help="write it to FILE (default: binary to stdout)")
    export.add_argument(
        "--v1",
        action="store_true",
        help="a v1-only copy, for clients that read no v2 or hybrid torrent (the seeder seeds it)",
    )
    export.add_argument(
        "--allow",
        type=_ip,
        action="append",
        metavar="IP",
        help="let the machine at IP download it from the seeder (a tracker key for IP goes "
        "into the exported announce URL); repeat for a machine with several addresses",
    )
    export.add_argument(
        "--allow-for",
        type=_seconds,
        default=3600.0,
        help="seconds the --allow grant lasts (default 3600)",
    )
    export.add_argument("--json", action="store_true")
    fetch = with_seeder(
        release.add_parser("fetch", help="download a release through the swarm and verify it")
    )
    fetch.add_argument("release_id")
    fetch.add_argument("--to", type=Path, required=True, help="empty or new directory")
    fetch.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the swarm (600)"
    )
    fetch.add_argument(
        "--bind", help="IP to download from (default: the one that reaches the seeder)"
    )
    fetch.add_argument("--json", action="store_true")

    app_cli.add_commands(sub, with_seeder)
    rollout = sub.add_parser("rollout", help="start and watch rollouts").add_subparsers(
        dest="action", required=True
    )
    start = rollout_cli.add_commands(rollout, sub, with_seeder)
    start.add_argument("--wait", action="store_true", help="follow it until it ends (as watch)")
    start.add_argument("--timeout", type=_seconds, default=3600.0, help="seconds --wait waits")
    watch = with_seeder(rollout.add_parser("watch", help="follow a rollout live until it ends"))
    watch.add_argument("rollout_id", nargs="?", help="default: the latest rollout")
    watch.add_argument("--timeout", type=_seconds, default=3600.0, help="seconds to watch at most")
    watch.add_argument("--json", action="store_true", help="the events as JSON lines")
    pre = with_seeder(
        rollout.add_parser("preflight", help="check that target hosts could take a release")
    )
    pre.add_argument("release_id")
    pre.add_argument("--hosts", default="all", help="all | NAME,NAME | LABEL=VALUE")
    pre.add_argument(
        "--timeout", type=_seconds, default=10.0, help="seconds to wait for answers (default: 10)"
    )
    pre.add_argument("--json", action="store_true")

    hosts = with_seeder(sub.add_parser("hosts", help="list known hosts"))
    hosts.add_argument("--json", action="store_true")
    identity_cli.add_commands(sub, with_seeder, hosts)
    promote_cli.add_env_filter(hosts)
    promote_cli.add_env_commands(sub, with_seeder)
    logs = with_seeder(sub.add_parser("logs", help="a host's hook output"))
    logs.add_argument("host")
    logs.add_argument("--rollout", dest="rollout_id", help="default: the host's latest rollout")
    logs.add_argument("--follow", action="store_true", help="then print new lines as they come")
    logs.add_argument("--json", action="store_true", help="one JSON object per line")

    token_cli.add_commands(sub, with_seeder)
    fleet_cli.add_commands(sub, with_seeder)
    upgrade = upgrade_cli.add_upgrade(sub.choices["fleet"], with_seeder)
    upgrade.add_argument("--wait", action="store_true", help="follow it until it ends (as watch)")
    upgrade.add_argument("--timeout", type=_seconds, default=3600.0, help="seconds --wait waits")
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
    except BaseExceptionGroup as group:  # raised inside a nursery (seeder run, the live view)
        if _only(group, KeyboardInterrupt):
            return 130
        inner = _only_error(group)
        if isinstance(inner, ShoalError):
            print(f"shoal: error: {inner}", file=sys.stderr)
            return 1
        if _only(group, ShoalError):
            print(f"shoal: error: {group.exceptions[0]}", file=sys.stderr)
            return 1
        raise


def _only(group: BaseExceptionGroup[BaseException], kind: type[BaseException]) -> bool:
    rest = group.split(kind)[1]
    return rest is None


def _only_error(exc: BaseException) -> BaseException:
    """The one exception at the bottom of nested single-exception groups (else the group)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def dispatch(args: argparse.Namespace) -> int:
    if args.command == "seeder" and args.action == "run":
        from common.torrent import parse_overrides
        from seeder.service import SeederConfig, run_seeder

        config = SeederConfig(
            data_dir=args.data_dir.resolve(),
            listen=Address.parse(args.listen),
            torrent_listen=_opt_addr(args.torrent_listen, 0),
            tracker_listen=_opt_addr(args.tracker_listen, 0),
            join_listen=_opt_addr(args.join_listen, 0),
            tracker_interval=args.tracker_interval,
            piece_size=args.piece_size,
            slices=not args.no_slices,
            keep_releases=args.keep_releases,
            torrent_settings=parse_overrides(args.torrent_setting),
            limits=limits_cli.limits_from(args),
        )
        await run_until_signalled(lambda: run_seeder(config))
        return 0
    if args.command == "seeder" and args.action == "init":
        return identity_cli.run_init(args)
    if args.command == "demo":
        from seeder.demo import run_demo

        return await run_demo(peers=args.peers)
    if args.command == "fleet" and args.action != "upgrade":
        return await fleet_cli.run(args)
    tls, _ = load_credential(credential_path(args.identity))
    async with open_client(Address.parse(args.seeder, default_port=7700), tls) as client:
        if (code := await identity_cli.run(client, args)) is not None:
            return code
        if args.command == "app":
            return await app_cli.run(client, args)
        if args.command == "seeder":
            totals = await client.call("seeder.stats")
            _emit(totals, args.json, lambda t: f"uploaded {t['uploaded']} bytes of payload")
        elif args.command == "env":
            return await promote_cli.env_list(client, args)
        elif args.command == "hosts":
            items = (await client.call("hosts.list", **promote_cli.env_filter(args)))["hosts"]
            _emit(items, args.json, render.hosts)
        elif args.command == "release" and args.action in ("build", "list", "show"):
            return await release_cli.run(client, args)
        elif args.command == "release" and args.action == "torrent":
            kind = "v1" if args.v1 else "hybrid"
            grant = {"allow": args.allow, "allow_for": args.allow_for} if args.allow else {}
            result = await client.call(
                "release.torrent", release_id=args.release_id, kind=kind, **grant
            )
            _export_torrent(result, args)
        elif args.command == "release" and args.action == "fetch":
            await _fetch(client, args)
        elif args.command == "token":
            return await token_cli.run(client, args)
        elif args.command == "logs":
            return await follow.show_logs(
                client,
                args.host,
                args.rollout_id,
                follow=args.follow,
                as_json=args.json,
                reconnect=_redialer(args),
            )
        elif args.command == "rollout" and args.action == "watch":
            return await follow.watch_rollout(
                client,
                args.rollout_id,
                mode=follow.choose_mode(args.json),
                wait_for=args.timeout,
                reconnect=_redialer(args),
            )
        elif args.command == "fleet" and args.action == "upgrade":
            args.release_id = await upgrade_cli.build_upgrade_release(client, args)
            return await _start(client, args)
        elif args.command == "rollout" and args.action == "preflight":
            checked = await client.call(
                "rollout.preflight",
                release_id=args.release_id,
                hosts=args.hosts,
                timeout=args.timeout,
            )
            _emit(checked, args.json, render.preflight)
            return 0 if checked["ok"] else 1
        elif (code := await rollout_cli.run(client, args)) is not None:
            return code
        else:
            return await _start(client, args)
    return 0


async def _start(client: Any, args: argparse.Namespace) -> int:
    """``rollout start`` (and ``rollback --wait``): start it, then follow it with ``--wait``."""
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
        if not args.json:
            print(f"rollout {r['rollout_id']} started on {len(r['targets'])} host(s)", flush=True)
            print(rollout_cli.plan_text(r) + rollout_cli.verdict_suffix(r), flush=True)
    if not args.wait:
        print(r["rollout_id"])
        return 0
    return await follow.watch_rollout(
        client,
        r["rollout_id"],
        mode=follow.choose_mode(args.json),
        wait_for=args.timeout,
        reconnect=_redialer(args),
    )


def _ip(text: str) -> str:
    """An argparse type: an IP address."""
    try:
        return parse_ip(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive, finite number of seconds")
    return value


def _redialer(args: argparse.Namespace) -> follow.Connect:
    """How a follower dials the seeder again after losing it."""
    address = Address.parse(args.seeder, default_port=7700)
    tls, _ = load_credential(credential_path(args.identity))
    return lambda: connect_client(address, tls)


def _export_torrent(result: dict[str, Any], args: argparse.Namespace) -> None:
    """Write the .torrent to --out (atomically) or, binary-safe, to stdout."""
    torrent = bytes(result["torrent"])
    mf = result["release"]
    info: dict[str, Any] = {
        "release_id": mf["release_id"],
        "kind": result["kind"],
        "bytes": len(torrent),
        "infohash": mf["infohash"],
        "info_hashes": torrent_hashes(torrent),
    }
    if "allowed" in result:  # --allow: who may download it from the seeder, until when
        info["allowed"] = result["allowed"]
    if args.out is None:
        if args.json:
            info["torrent_base64"] = base64.b64encode(torrent).decode()
            _emit(info, True, None)
            return
        if sys.stdout.isatty():
            raise ConfigError("a .torrent is binary: pass --out FILE or redirect stdout")
        sys.stdout.flush()
        sys.stdout.buffer.write(torrent)
        sys.stdout.buffer.flush()
        return
    out: Path = args.out
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", delete=False) as f:
            f.write(torrent)
        os.replace(f.name, out)
    except OSError as exc:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(f.name)
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
    info["file"] = str(out)
    _emit(info, args.json, lambda i: f"wrote {i['file']}: {i['release_id']}, {i['bytes']} bytes")


async def _fetch(client: Any, args: argparse.Namespace) -> None:
    from seeder.fetch import check_destination, fetch_release

    dest: Path = args.to.absolute()
    check_destination(dest)  # before asking the seeder anything
    if not args.timeout > 0:  # NaN too
        raise ConfigError(f"--timeout {args.timeout} must be a positive number of seconds")
    bind = parse_ip(args.bind) if args.bind else client.channel.stream.socket.getsockname()[0]
    # the seeder's full seed admits this machine's address for the fetch (a closed swarm)
    info = await client.call(
        "release.fetch", release_id=args.release_id, address=bind, timeout=args.timeout
    )
    steps = [0]

    def progress(fraction: float) -> None:
        if not args.json and int(fraction * 10) > steps[0]:
            steps[0] = int(fraction * 10)
            print(f"{fraction:.0%}", file=sys.stderr, flush=True)

    fetched = await fetch_release(
        info, dest, bind=bind, patience=args.timeout, on_progress=progress
    )
    _emit(
        fetched.to_dict(),
        args.json,
        lambda f: (
            f"fetched {f['release_id']}: {f['archive']} ({f['size']} bytes, digest"
            f" verified) in {f['seconds']:.1f}s"
        ),
    )


def _whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


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
