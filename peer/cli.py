"""``shoal-peer``: the per-server daemon."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

import trio

from common.addr import Address, parse_ip
from common.cli import add_override_option
from common.errors import ConfigError, ShoalError
from common.lifetime import run_until_signalled
from common.logs import setup_logging
from common.torrent import parse_overrides
from peer.config import apply_config, read_config
from peer.daemon import PeerConfig, run_peer
from peer.prefix import detect_prefix, running_version
from peer.reload import Reloads, request_reload
from peer.reload import render as render_reload
from peer.restart import RestartRequest, reexec
from peer.space import RESERVE, UNPACK_RATIO
from peer.upgrade import HEALTH_TIMEOUT


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ConfigError(f"label {part!r} is not KEY=VALUE")
        labels[key] = value
    return labels


def _size(text: str) -> int:
    """``123``, ``64K``, ``64M``, ``2G`` -> bytes (binary multiples)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    body, unit = (text[:-1], units[text[-1].upper()]) if text[-1:].upper() in units else (text, 1)
    try:
        value = int(body) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 500M)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal-peer", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the peer daemon in the foreground")
    run.add_argument("--seeder", required=True, help="the seeder's control HOST:PORT")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument("--name", default=socket.gethostname(), help="host name (default: hostname)")
    run.add_argument("--bind", default="127.0.0.1", help="this host's IP for BitTorrent")
    run.add_argument("--torrent-port", type=int, default=6881)
    run.add_argument("--labels", default="", help="k=v,k=v")
    run.add_argument("--keep", type=int, default=5, help="releases to keep on disk")
    run.add_argument(
        "--min-free",
        type=_size,
        default=RESERVE,
        help="bytes staging always leaves free on the data disk (default 64M; K/M/G suffixes)",
    )
    run.add_argument(
        "--unpack-ratio",
        type=float,
        default=UNPACK_RATIO,
        help="unpacked size / archive size assumed by the space check (default 3)",
    )
    run.add_argument(
        "--prefix",
        type=Path,
        help="install prefix this peer runs from (PREFIX/versions/<v>, PREFIX/current), which"
        " shoal upgrades switch (default: detected from the running interpreter)",
    )
    run.add_argument(
        "--upgrade-timeout",
        type=float,
        default=HEALTH_TIMEOUT,
        help="seconds a new shoal version has to connect to the seeder before it is rolled back"
        " (default: %(default)s)",
    )
    add_override_option(run)
    run.add_argument(
        "--config",
        type=Path,
        help="YAML file of these options (keys as the long options); flags given here win",
    )
    sub.add_parser("version", help="print the shoal version this shoal-peer runs")
    reload = sub.add_parser(
        "reload", help="make the running daemon re-read its config (labels, log level live)"
    )
    reload.add_argument("--data-dir", type=Path, help="the daemon's data directory")
    reload.add_argument("--config", type=Path, help="or its config file (which names data-dir)")
    reload.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (10)")
    reload.add_argument("--json", action="store_true")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, with ``run --config FILE``'s values as defaults the flags override."""
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    if argv[:1] == ["run"] or "run" in argv:
        known, _ = pre.parse_known_args(argv[argv.index("run") + 1 :])
        if known.config is not None:
            apply_config(parser, _subparser(parser, "run"), known.config)
    return parser.parse_args(argv)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise AssertionError(name)


def peer_config(args: argparse.Namespace) -> PeerConfig:
    prefix = args.prefix.resolve() if args.prefix is not None else detect_prefix()
    return PeerConfig(
        seeder=Address.parse(args.seeder, default_port=7700),
        data_dir=args.data_dir.resolve(),
        name=args.name,
        bind=parse_ip(args.bind),
        torrent_port=args.torrent_port,
        labels=parse_labels(args.labels),
        keep_releases=args.keep,
        min_free=args.min_free,
        unpack_ratio=args.unpack_ratio,
        torrent_settings=parse_overrides(args.torrent_setting),
        prefix=prefix,
        upgrade_timeout=args.upgrade_timeout,
    )


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The run options as plain values, to tell what a reload changed."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        if args.command == "version":
            print(running_version())
            return 0
        if args.command == "reload":
            return _reload(args)
        setup_logging(args.log_level)
        config = peer_config(args)
    except ShoalError as exc:
        print(f"shoal-peer: error: {exc}", file=sys.stderr)
        return 1

    def reparse() -> tuple[dict[str, Any], dict[str, str], str]:
        new = parse_args(argv)
        return _options(new), peer_config(new).labels, str(new.log_level)

    restart = RestartRequest()
    try:
        trio.run(
            run_until_signalled,
            lambda: run_peer(
                config,
                restart=restart,
                reloads=lambda ctx: Reloads(ctx, reparse, _options(args)),
            ),
        )
    except ShoalError as exc:
        print(f"shoal-peer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if restart.version is not None and config.prefix is not None:
        return reexec(config.prefix, argv)
    return 0


def _reload(args: argparse.Namespace) -> int:
    data_dir = args.data_dir
    if data_dir is None and args.config is not None:
        values = read_config(args.config, {"data_dir"} | set(()))
        data_dir = Path(values["data_dir"]) if "data_dir" in values else None
    if data_dir is None:
        raise ConfigError("say which daemon: --data-dir DIR, or --config FILE naming data-dir")
    result = request_reload(data_dir.resolve(), timeout=args.timeout)
    print(json.dumps(result, sort_keys=True) if args.json else render_reload(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
