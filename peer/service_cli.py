"""``shoal-peer start|stop|status|supervise``: the daemon without systemd (``--service none``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.install_layout import LOGFILE, PIDFILE
from peer import supervise
from peer.config import load_config


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    start = sub.add_parser("start", help="start the daemon in the background, supervised")
    start.add_argument("--config", type=Path, required=True, help="the peer's YAML config")
    start.add_argument("--pidfile", type=Path, help=f"default: DATA_DIR/{PIDFILE}")
    start.add_argument("--log", type=Path, help=f"daemon output (default: DATA_DIR/{LOGFILE})")
    for name, text in (
        ("stop", "stop the background daemon (SIGTERM; it journals what it interrupts)"),
        ("status", "exit 0 if the background daemon runs, 3 if not"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--pidfile", type=Path, help=f"default: DATA_DIR/{PIDFILE} of --config")
        p.add_argument("--config", type=Path, help="the peer's YAML config (for its data dir)")
    sv = sub.add_parser("supervise", help="(internal) the supervisor `start` runs")
    sv.add_argument("--config", type=Path, required=True)
    sv.add_argument("--pidfile", type=Path, required=True)


def _pidfile(args: argparse.Namespace) -> Path:
    if args.pidfile is not None:
        return Path(args.pidfile).absolute()
    if args.config is None:
        raise argparse.ArgumentTypeError(f"shoal-peer {args.command}: give --pidfile or --config")
    return Path(load_config(args.config).get("data_dir")).absolute() / PIDFILE


def run(args: argparse.Namespace) -> int:
    if args.command == "supervise":
        supervise.supervise(args.config.absolute(), args.pidfile.absolute())
        return 0
    pidfile = _pidfile(args)
    if args.command == "start":
        config = args.config.absolute()
        data_dir = Path(load_config(config).get("data_dir")).absolute()
        log = args.log.absolute() if args.log else data_dir / LOGFILE
        running = supervise.start(config, pidfile, log)
        print(f"shoal-peer running, supervisor pid {running.pid}")
        return 0
    if args.command == "stop":
        print("stopped" if supervise.stop(pidfile) else "not running")
        return 0
    found = supervise.read_pid(pidfile)
    print(f"running, supervisor pid {found.pid}" if found else "not running")
    return 0 if found else 3
