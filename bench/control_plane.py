"""The control-plane load generator: one real seeder, N simulated peers, instant hooks.

    python -m bench.control_plane --hosts 100,500,1000,2000,5000 [--poll 0,0.25]
        [--src TREE] [--start-args "--waves 100%"] [--out results.json]

For every N it makes a seeder identity (CA, admin credential) as ``shoal seeder init`` does,
starts a real ``shoal seeder run`` process from the source tree ``--src`` (default: this one; it
must speak mutual TLS), builds a release of a tiny git repo with the real ``shoal release
build``, issues a host certificate for every simulated peer (in-process, timed as ``certs_s``),
registers N simulated peers (:mod:`bench.simpeer`) from as many 127.x source addresses over
mutual TLS, measures the seeder's
idle CPU, runs ``shoal rollout start RELEASE --hosts all [START_ARGS]`` and waits until every
peer's final report is acked. Then it asks ``rollout.status`` a few times. With ``--poll S`` a
second client polls ``rollout.status`` every S seconds during the rollout, as the old
``start --wait`` did (every 0.25 s). CPU is read from /proc/<seeder pid>. Everything is bounded in
time, and the seeder process (its process group) is stopped at the end of each run. The seeder
process is :mod:`bench.seeder_process`; the rows and their table are
:mod:`bench.control_plane_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.control_plane_report import spread, summarize, table
from bench.seeder_process import BenchError, Seeder
from bench.simpeer import (
    Milestones,
    SimPeer,
    activate_steps,
    host_credentials,
    sim_address,
    stage_steps,
)
from common.addr import Address
from common.appspec import LIFECYCLE_EVENTS, AppSpec, parse_appspec
from common.errors import RemoteError, ShoalError
from common.tls import ClientTLS
from seeder.client import SeederClient, open_client
from seeder.localfleet import free_port
from seeder.samplerepo import commit_all

FDS_PER_HOST = 2  # the simulated peer's socket, plus slack; the seeder holds the other end
FDS_SPARE = 256
FINAL_STATES = ("succeeded", "failed", "aborted", "halted")
HOOK = "#!/bin/sh\nexit 0\n"
STATUS_METHODS = ("rollout.status", "rollout.show")
PROBE_EVERY = 0.5
LAG_TICK = 0.1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="python -m bench.control_plane", description=doc.split("\n")[0]
    )
    p.add_argument("--hosts", default="100,500,1000", help="comma-separated N values")
    p.add_argument("--poll", default="0", help="comma-separated status poll intervals (0: none)")
    p.add_argument(
        "--src",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="source tree whose seeder and CLI are measured (default: this one)",
    )
    p.add_argument("--python", default=sys.executable, help="interpreter for seeder and CLI")
    p.add_argument("--start-args", default="", help="extra options for `shoal rollout start`")
    p.add_argument("--idle-seconds", type=float, default=6.0, help="idle CPU window")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one rollout may take")
    p.add_argument("--register-timeout", type=float, default=300.0)
    p.add_argument("--connect-concurrency", type=int, default=200, help="connects in flight")
    p.add_argument("--status-repeats", type=int, default=3)
    p.add_argument("--out", type=Path, help="write every row as JSON here")
    p.add_argument("--logs", type=Path, help="keep the seeder's logs here")
    args = p.parse_args(argv)
    try:
        args.hosts = [int(v) for v in args.hosts.split(",") if v.strip()]
        args.poll = [float(v) for v in args.poll.split(",") if v.strip()]
    except ValueError as exc:
        p.error(f"--hosts and --poll take comma-separated numbers: {exc}")
    if not args.hosts or min(args.hosts) < 1:
        p.error("--hosts needs at least one N >= 1")
    if not (args.src / "seeder" / "cli.py").is_file():
        p.error(f"--src {args.src} is not a shoal source tree (no seeder/cli.py)")
    args.src = args.src.resolve()
    return args


def raise_fd_limit(hosts: int) -> int:
    """Raise the soft open-files limit for N connections here and in the seeder (inherited)."""
    need = hosts * FDS_PER_HOST + FDS_SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return soft
    if hard != resource.RLIM_INFINITY and hard < need:
        raise BenchError(
            f"{hosts} simulated peers need {need} open files, but the hard limit is {hard}; "
            f"raise it (ulimit -Hn {need}, or LimitNOFILE= for a service) or lower --hosts"
        )
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    except (ValueError, OSError) as exc:
        raise BenchError(f"cannot raise the open-files limit to {need}: {exc}") from exc
    return need


def make_repo(root: Path) -> tuple[Path, AppSpec]:
    """A tiny app whose appspec has one hook for every lifecycle event (never run here)."""
    repo = root / "bench-app"
    (repo / "hooks").mkdir(parents=True)
    text = "version: 0.0\nos: linux\nhooks:\n" + "".join(
        f"  {e}:\n    - location: hooks/{e}.sh\n      timeout: 30\n" for e in LIFECYCLE_EVENTS
    )
    (repo / "appspec.yml").write_text(text)
    for event in LIFECYCLE_EVENTS:
        (repo / "hooks" / f"{event}.sh").write_text(HOOK)
        (repo / "hooks" / f"{event}.sh").chmod(0o755)
    commit_all(repo, "control-plane bench app")
    return repo, parse_appspec(text)


async def status(client: SeederClient, rollout_id: str) -> tuple[dict[str, Any], float, int]:
    """The rollout's status document, the seconds the seeder took to answer, its JSON size."""
    for method in STATUS_METHODS:
        started = time.perf_counter()
        try:
            result = await client.call(method, rollout_id=rollout_id)
        except RemoteError as exc:
            if exc.code == "unknown_method":
                continue
            raise
        took = time.perf_counter() - started
        doc = result.get("rollout", result)
        return doc, took, len(json.dumps(doc))
    raise BenchError(f"the seeder answers none of {', '.join(STATUS_METHODS)}")


async def prober(control: Address, tls: ClientTLS, out: list[float]) -> None:
    """How long the seeder takes to answer a trivial request (``seeder.stats``), every
    ``PROBE_EVERY`` s: its worst answer is how long its event loop stalled, at least."""
    async with open_client(control, tls) as client:
        while True:
            started = time.perf_counter()
            await client.call("seeder.stats")
            out.append(time.perf_counter() - started)
            await trio.sleep(PROBE_EVERY)


async def own_lag(out: list[float]) -> None:
    """How late this process's own loop wakes from a short sleep: if the generator stalls, the
    probes above (sent from here) stall too, and this says so."""
    while True:
        started = trio.current_time()
        await trio.sleep(LAG_TICK)
        out.append(trio.current_time() - started - LAG_TICK)


async def poller(
    client: SeederClient, rollout_id: str, every: float, out: list[float], first: trio.Event
) -> None:
    """Poll the status every ``every`` seconds, like the old ``start --wait``, until cancelled
    (on a connection made before the rollout starts: its handshake is not in the rollout)."""
    while True:
        _, took, _ = await status(client, rollout_id)
        out.append(took)
        first.set()
        await trio.sleep(every)


async def run_one(args: argparse.Namespace, hosts: int, poll: float) -> dict[str, Any]:
    raise_fd_limit(hosts)
    row: dict[str, Any] = {"hosts": hosts, "poll_s": poll, "src": str(args.src),
                           "start_args": args.start_args, "result": "incomplete"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="shoal-cp-") as tmp:
        workdir = Path(tmp)
        seeder = Seeder(
            args.src, args.python, workdir, Address("127.0.0.1", free_port("127.0.0.1"))
        )
        try:
            await seeder.start()
            await _measure(args, seeder, hosts, poll, row)
        finally:
            await seeder.stop()
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                dest = args.logs / f"seeder-n{hosts}-poll{poll:g}.log"
                dest.write_bytes(seeder.log.read_bytes())
    return row


async def _measure(
    args: argparse.Namespace, seeder: Seeder, hosts: int, poll: float, row: dict[str, Any]
) -> None:
    repo, spec = make_repo(seeder.workdir)
    await seeder.cli("app", "add", "bench", "--repo", str(repo))
    built = await seeder.cli("release", "build", "bench", "--ref", "main")
    release_id = built.strip().splitlines()[-1]
    per_peer = len(stage_steps(release_id)) + len(activate_steps(spec, release_id, None))
    row["reports_per_peer"] = per_peer
    milestones = Milestones(hosts)
    names = [f"sim{i:05d}" for i in range(hosts)]
    t_certs = time.perf_counter()
    tls = await trio.to_thread.run_sync(
        host_credentials, seeder.identity, names, seeder.workdir / "sim-certs"
    )
    row["certs_s"] = time.perf_counter() - t_certs
    sims = [SimPeer(name, sim_address(i), seeder.control, spec, milestones, tls[name])
            for i, name in enumerate(names)]  # fmt: skip
    limit = trio.CapacityLimiter(args.connect_concurrency)
    gen_cpu0 = _own_cpu()
    async with trio.open_nursery() as nursery:
        started = time.time()
        for sim in sims:
            nursery.start_soon(sim.run, limit)
        with trio.move_on_after(args.register_timeout):
            await milestones.all_registered.wait()
        row["registration_s"] = time.time() - started
        if not milestones.all_registered.is_set():
            row["result"] = f"only {milestones.registered}/{hosts} registered"
            nursery.cancel_scope.cancel()
            return
        cpu0 = seeder.cpu()
        await trio.sleep(args.idle_seconds)
        row["idle_cpu_pct"] = 100 * (seeder.cpu() - cpu0) / args.idle_seconds
        seeder.check_alive()

        polls: list[float] = []
        row["loadavg"] = os.getloadavg()[0]  # the machine's load when the rollout started
        probes: list[float] = []
        lags: list[float] = []
        async with (
            open_client(seeder.control, seeder.tls) as poll_client,
            trio.open_nursery() as side,
        ):
            side.start_soon(prober, seeder.control, seeder.tls, probes)
            side.start_soon(own_lag, lags)
            cpu0, t_cli = seeder.cpu(), time.time()
            extra = shlex.split(args.start_args)
            out = await seeder.cli("rollout", "start", release_id, "--hosts", "all", *extra)
            row["cli_start_s"] = time.time() - t_cli
            rollout_id = out.strip().splitlines()[-1].strip()
            first_poll = trio.Event()
            if poll > 0:
                side.start_soon(poller, poll_client, rollout_id, poll, polls, first_poll)
            with trio.move_on_after(args.timeout):
                await milestones.wait_done(rollout_id)
            # A small rollout can end before the first poll returns: let that one poll finish,
            # so the row always says what a poll cost under this load.
            if poll > 0:
                with trio.move_on_after(30):
                    await first_poll.wait()
            side.cancel_scope.cancel()
        row["seeder_cpu_s"] = seeder.cpu() - cpu0
        finished = milestones.done[rollout_id] >= hosts
        async with open_client(seeder.control, seeder.tls) as client:
            doc, took, size = await status(client, rollout_id)
            with trio.move_on_after(60):
                while finished and doc.get("state") not in FINAL_STATES:
                    await trio.sleep(0.1)
                    doc, took, size = await status(client, rollout_id)
            latencies = [took]
            for _ in range(args.status_repeats - 1):
                latencies.append((await status(client, rollout_id))[1])
        nursery.cancel_scope.cancel()
    row["generator_cpu_s"] = _own_cpu() - gen_cpu0
    summarize(row, sims, rollout_id, doc, t_cli, finished, hosts)
    row["status_s"] = statistics.median(latencies)
    row["status_max_s"] = max(latencies)
    row["status_bytes"] = size
    row["stall_max_s"] = max(probes, default=None)
    row["generator_lag_max_s"] = max(lags, default=None)
    row["polls"] = len(polls)
    row["poll_latency_s"] = spread(polls)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (N, poll) row; SIGTERM or SIGINT stops the run cleanly (the seeder included)."""
    rows: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    print(f"bench.control_plane: signal {signum}, stopping", file=sys.stderr)
                    rows.append({"hosts": 0, "poll_s": 0, "result": f"stopped by signal {signum}"})
                    nursery.cancel_scope.cancel()

        nursery.start_soon(stop_on_signal)
        await _rows(args, rows)
        nursery.cancel_scope.cancel()
    return rows


async def _rows(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    for hosts in args.hosts:
        for poll in args.poll:
            row = await run_one(args, hosts, poll)
            rows.append(row)
            print(f"N={hosts} poll={poll:g}: {row['result']} {json.dumps(row)}", flush=True)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(rows, indent=2, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        raise_fd_limit(max(args.hosts))
        rows = trio.run(run_all, args)
    except ShoalError as exc:
        print(f"bench.control_plane: {exc}", file=sys.stderr)
        return 2
    print(table(rows))
    return 0 if all(r["result"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
