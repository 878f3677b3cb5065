"""``shoal-peer``: the per-server daemon."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from common.addr import Address, parse_ip
from common.bundle import Bundle
from common.cli import add_override_option
from common.errors import ConfigError, ShoalError
from common.lifetime import run_until_signalled
from common.logs import setup_logging
from common.torrent import parse_overrides
from peer import identity
from peer.daemon import PeerConfig, run_peer
from peer.space import RESERVE, UNPACK_RATIO


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
    run.add_argument(
        "--name", help="host name; must be the one its certificate names (default: that one)"
    )
    run.add_argument(
        "--bundle", type=Path, help="install this enrollment bundle into DATA_DIR/identity first"
    )
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
    add_override_option(run)
    enroll = sub.add_parser("enroll", help="install an enrollment bundle (from `shoal enroll`)")
    enroll.add_argument("--bundle", type=Path, required=True)
    enroll.add_argument("--data-dir", type=Path, required=True)
    return parser


def _enroll(args: argparse.Namespace) -> int:
    bundle = Bundle.read(args.bundle)
    directory = identity.install(bundle, args.data_dir.resolve())
    print(f"host {bundle.name} enrolled: identity in {directory}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "enroll":
            return _enroll(args)
        data_dir = args.data_dir.resolve()
        if args.bundle is not None:
            identity.install(Bundle.read(args.bundle), data_dir)
        name = identity.load(data_dir).name
        if args.name is not None and args.name != name:
            raise ConfigError(
                f"--name {args.name} differs from the host its certificate names ({name})"
            )
        config = PeerConfig(
            seeder=Address.parse(args.seeder, default_port=7700),
            data_dir=data_dir,
            name=name,
            bind=parse_ip(args.bind),
            torrent_port=args.torrent_port,
            labels=parse_labels(args.labels),
            keep_releases=args.keep,
            min_free=args.min_free,
            unpack_ratio=args.unpack_ratio,
            torrent_settings=parse_overrides(args.torrent_setting),
        )
        trio.run(run_until_signalled, lambda: run_peer(config))
    except ShoalError as exc:
        print(f"shoal-peer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
