"""``shoal-peer``: the per-server daemon."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import trio

from common.addr import Address, parse_ip
from common.bundle import Bundle
from common.cli import add_override_option
from common.errors import ConfigError, ShoalError
from common.labels import parse_labels
from common.lifetime import run_until_signalled
from common.logs import setup_logging
from common.torrent import parse_overrides
from peer import identity, join_cli, service_cli, settings
from peer.config import FileConfig, load_config
from peer.prefix import detect_prefix, running_version
from peer.reload import render as render_reload
from peer.reload import request_reload
from peer.restart import RestartRequest, reexec
from peer.space import RESERVE, UNPACK_RATIO
from peer.upgrade import HEALTH_TIMEOUT


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
    parser.add_argument("--log-level", help="DEBUG, INFO (the default), WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the peer daemon in the foreground")
    run.add_argument(
        "--config", type=Path, help="YAML file of these options (README); options given win"
    )
    run.add_argument(
        "--seeder", help="the seeder's control HOST:PORT (default: the one `join` recorded)"
    )
    run.add_argument("--data-dir", type=Path, help="(required, here or in --config)")
    run.add_argument(
        "--name", help="host name; must be the one its certificate names (default: that one)"
    )
    run.add_argument(
        "--bundle", type=Path, help="install this enrollment bundle into DATA_DIR/identity first"
    )
    run.add_argument(
        "--bind", help="this host's IP for BitTorrent (default: as joined, else 127.0.0.1)"
    )
    run.add_argument("--torrent-port", type=int, help="default: 6881")
    run.add_argument("--labels", help="k=v,k=v")
    run.add_argument("--keep", type=int, help="releases to keep on disk (default: 5)")
    run.add_argument(
        "--min-free",
        type=_size,
        help="bytes staging always leaves free on the data disk (default 64M; K/M/G suffixes)",
    )
    run.add_argument(
        "--unpack-ratio",
        type=float,
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
        help=f"seconds a new shoal version has to connect to the seeder before it is rolled"
        f" back (default: {HEALTH_TIMEOUT:.0f})",
    )
    add_override_option(run)
    sub.add_parser("version", help="print the shoal version this shoal-peer runs")
    reload = sub.add_parser(
        "reload", help="make the running daemon re-read its config (labels, log level live)"
    )
    reload.add_argument("--data-dir", type=Path, help="the daemon's data directory")
    reload.add_argument("--config", type=Path, help="or its config file (it names data_dir)")
    reload.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (10)")
    reload.add_argument("--json", action="store_true")
    enroll = sub.add_parser("enroll", help="install an enrollment bundle (from `shoal enroll`)")
    enroll.add_argument("--bundle", type=Path, required=True)
    enroll.add_argument("--data-dir", type=Path, required=True)
    join_cli.add_command(sub)
    service_cli.add_commands(sub)
    return parser


def _enroll(args: argparse.Namespace) -> int:
    bundle = Bundle.read(args.bundle)
    directory = identity.install(bundle, args.data_dir.resolve())
    print(f"host {bundle.name} enrolled: identity in {directory}")
    return 0


def _peer_config(args: argparse.Namespace) -> Any:
    """The run options: the command line's, then the config file's, then the defaults."""
    file = load_config(args.config) if args.config else None

    def pick(option: str, key: str, default: Any) -> Any:
        given = getattr(args, option)
        if given is not None:
            return given
        return file.get(key) if file is not None and file.get(key) is not None else default

    data_dir_given = pick("data_dir", "data_dir", None)
    if data_dir_given is None:
        raise ConfigError("shoal-peer run needs --data-dir (or --config FILE)")
    data_dir = Path(data_dir_given).resolve()
    if args.bundle is not None:
        identity.install(Bundle.read(args.bundle), data_dir)
    name = identity.load(data_dir).name
    wanted = pick("name", "name", None)
    if wanted is not None and wanted != name:
        raise ConfigError(f"name {wanted} differs from the host its certificate names ({name})")
    joined = settings.load(data_dir)
    seeder = pick("seeder", "seeder", None) or (joined.seeder if joined else None)
    if seeder is None:
        raise ConfigError("pass --seeder HOST:PORT (or enroll with `shoal-peer join` first)")
    bind = pick("bind", "bind", None) or (joined.bind if joined else "") or "127.0.0.1"
    labels = parse_labels(args.labels) if args.labels is not None else None
    min_free = pick("min_free", "min_free", RESERVE)
    prefix = pick("prefix", "prefix", None)
    from peer.daemon import PeerConfig  # not loaded for `join`: it starts faster

    return PeerConfig(
        seeder=Address.parse(str(seeder), default_port=7700),
        data_dir=data_dir,
        name=name,
        bind=parse_ip(bind),
        torrent_port=pick("torrent_port", "torrent_port", 6881),
        labels=labels if labels is not None else dict(file.get("labels") or {}) if file else {},
        keep_releases=pick("keep", "keep", 5),
        min_free=_size(min_free) if isinstance(min_free, str) else min_free,
        unpack_ratio=float(pick("unpack_ratio", "unpack_ratio", UNPACK_RATIO)),
        torrent_settings=parse_overrides(args.torrent_setting),
        prefix=Path(prefix).resolve() if prefix is not None else detect_prefix(),
        upgrade_timeout=float(pick("upgrade_timeout", "upgrade_timeout", HEALTH_TIMEOUT)),
    )


def _log_level(args: argparse.Namespace, file: FileConfig | None) -> str:
    level = args.log_level or (file.get("log_level") if file is not None else None) or "INFO"
    return str(level).upper()


def _without_bundle(argv: list[str]) -> list[str]:
    """The arguments a restart runs with: the bundle is installed already (and may be gone)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--bundle":
            skip = True
        elif not arg.startswith("--bundle="):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(running_version())
        return 0
    if args.command != "run":
        setup_logging(args.log_level or "INFO")
    if args.command == "join":
        return join_cli.run(args)
    try:
        if args.command == "enroll":
            return _enroll(args)
        if args.command == "reload":
            return _reload(args)
        if args.command != "run":
            return service_cli.run(args)
        config = _peer_config(args)
        setup_logging(_log_level(args, load_config(args.config) if args.config else None))
        from peer.daemon import run_peer
        from peer.reload import Reloads

        def reparse() -> tuple[Any, str]:
            """The config as a restart would see it now (the file read again, the same flags,
            no bundle to install)."""
            again = argparse.Namespace(**{**vars(args), "bundle": None})
            try:
                new = _peer_config(again)
            except argparse.ArgumentTypeError as exc:
                raise ConfigError(str(exc)) from None
            return new, _log_level(args, load_config(args.config) if args.config else None)

        restart = RestartRequest()
        trio.run(
            run_until_signalled,
            lambda: run_peer(
                config, restart=restart, reloads=lambda ctx: Reloads(ctx, reparse, config)
            ),
        )
    except (ShoalError, argparse.ArgumentTypeError) as exc:
        print(f"shoal-peer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if restart.version is not None and config.prefix is not None:
        return reexec(config.prefix, _without_bundle(argv))
    return 0


def _reload(args: argparse.Namespace) -> int:
    data_dir = args.data_dir
    if data_dir is None and args.config is not None:
        data_dir = Path(str(load_config(args.config).get("data_dir")))
    if data_dir is None:
        raise ConfigError("say which daemon: --data-dir DIR, or --config FILE (its data_dir)")
    result = request_reload(data_dir.resolve(), timeout=args.timeout)
    print(json.dumps(result, sort_keys=True) if args.json else render_reload(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
