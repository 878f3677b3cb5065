"""Enrolling N hosts with one join token: what an operator's loop over 500 hosts costs.

    .venv/bin/python -m bench.enroll --hosts 50 --runs 3 [--parallel 1] [--out FILE.json]

Each run starts a fresh seeder on loopback (``LocalFleet``: ``seeder init``, ``seeder run``),
makes one token with ``shoal token create --uses N``, then enrolls N hosts with the real
``shoal-peer join`` command, one process per host, ``--parallel`` at a time (1: a plain loop).
Per host it times the whole command (interpreter start-up, key generation, both TLS connections,
certificate issue, files written) and, inside the same runs, the exchange alone: an in-process
``peer.join.join`` for N more hosts, which leaves out the interpreter start-up. It prints each
run's wall time and per-host min / median / max, then min / median / max over the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from common.crypto.tokens import JoinToken
from peer.join import JoinOptions, join
from seeder.localfleet import LocalFleet


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.enroll", description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=50, help="hosts enrolled per run (50)")
    p.add_argument("--runs", type=int, default=3, help="fresh seeders, one after another (3)")
    p.add_argument("--parallel", type=int, default=1, help="joins at once (1: a loop)")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.hosts < 1 or args.runs < 1 or args.parallel < 1:
        p.error("--hosts, --runs and --parallel must be at least 1")
    return args


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _fmt(s: dict[str, float], unit: str = "s") -> str:
    return f"{s['min']:.3f} / {s['median']:.3f} / {s['max']:.3f} {unit}"


async def one_run(root: Path, hosts: int, parallel: int) -> dict[str, Any]:
    fleet = LocalFleet(root)
    try:
        await fleet.start_seeder()
        made = fleet.cli("token", "create", "--uses", str(2 * hosts), "--ttl", "1h")
        if made.returncode != 0:
            raise SystemExit(f"token create failed: {made.stderr.strip()}")
        token = made.stdout.strip()
        per_host: list[float] = []
        limit = trio.CapacityLimiter(parallel)

        async def enroll(i: int) -> None:
            async with limit:
                started = time.monotonic()
                out = await trio.to_thread.run_sync(fleet.join, f"host-{i:04d}", token)
                per_host.append(time.monotonic() - started)
            if out.returncode != 0:
                raise SystemExit(f"host-{i:04d}: join failed: {out.stderr.strip()}")

        wall_started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for i in range(hosts):
                nursery.start_soon(enroll, i)
        wall = time.monotonic() - wall_started

        assert fleet.control is not None
        exchange: list[float] = []
        parsed = JoinToken.parse(token)
        for i in range(hosts):
            opts = JoinOptions(fleet.control, parsed, root / "inproc" / str(i), f"inproc-{i:04d}")
            started = time.monotonic()
            await join(opts)
            exchange.append(time.monotonic() - started)
        listing = fleet.cli("token", "list", "--json")
        (record,) = json.loads(listing.stdout)
        if record["uses_left"] != 0:
            raise SystemExit(f"expected every use taken, {record['uses_left']} left")
    finally:
        await fleet.stop_all()
    return {"wall_s": wall, "per_host_s": per_host, "exchange_s": exchange}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="shoal-bench-enroll-") as tmp:
            result = await one_run(Path(tmp), args.hosts, args.parallel)
        runs.append(result)
        print(
            f"run {run + 1}: {args.hosts} hosts in {result['wall_s']:.2f} s wall"
            f" ({args.parallel} at a time); per host (shoal-peer join) min/median/max"
            f" {_fmt(spread(result['per_host_s']))}; exchange alone (in-process)"
            f" {_fmt(spread(result['exchange_s']))}",
            flush=True,
        )
    summary = {
        "hosts": args.hosts,
        "parallel": args.parallel,
        "runs": args.runs,
        "wall_s": spread([r["wall_s"] for r in runs]),
        "per_host_median_s": spread([statistics.median(r["per_host_s"]) for r in runs]),
        "exchange_median_s": spread([statistics.median(r["exchange_s"]) for r in runs]),
        "hosts_per_minute": spread([60 * args.hosts / r["wall_s"] for r in runs]),
    }
    print(f"over {args.runs} run(s), min / median / max:")
    print(f"  wall time for {args.hosts} hosts:      {_fmt(summary['wall_s'])}")
    print(f"  per-host median (shoal-peer join): {_fmt(summary['per_host_median_s'])}")
    print(f"  per-host median (exchange alone):  {_fmt(summary['exchange_median_s'])}")
    print(f"  hosts enrolled per minute:         {_fmt(summary['hosts_per_minute'], '')}")
    return {"summary": summary, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = trio.run(main_async, args)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
