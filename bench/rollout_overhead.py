"""Control overhead of a real rollout on N namespaced hosts: what is neither transfer nor hooks.

    sudo .venv/bin/python -m bench.rollout_overhead --hosts 16 --runs 3 [--src TREE]

Builds the namespace testbed (:mod:`bench.netns`), runs the real seeder in host 0 and
``shoal-peer`` in hosts 1..N (both from ``--src``, default this tree), and rolls out ``--runs``
successive releases of an app with a hook on every lifecycle event (each hook sleeps
``--hook-ms``). From the step reports' own timestamps (all namespaces share one clock) it splits
the time from the rollout's creation until the last host activated along the critical path:

- staging phase, creation → last host staged: that host's ``download`` (the transfer, as the peer
  measured it), its ``verify`` + ``unpack`` (local work), and the rest (the control plane: Stage
  delivery, report round trips, the phase decision);
- activation phase, last staged → last activated: that host's hooks (each from the moment the
  hook script started, noted by the hook itself, to its final step report), its ``Install``
  (local work), and the rest (control: Activate delivery, report round trips, the gaps between
  hooks).

It prints both ``overhead = total - transfer - hooks`` (the issue's definition, which still holds
verify, unpack and Install) and ``control = overhead - local work``, per run and as min/median/max.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.cleanup import NetnsError
from bench.identity import BenchIdentity, prepare
from bench.netns import Host, Testbed, netns_available
from bench.swarm import BT_PORT, CONTROL_PORT, TRACKER_PORT, cpu_seconds
from common.appspec import LIFECYCLE_EVENTS
from seeder.samplerepo import commit_all

POLL_EVERY = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="python -m bench.rollout_overhead", description=doc.split("\n")[0]
    )
    p.add_argument("--hosts", type=int, default=16)
    p.add_argument("--runs", type=int, default=3, help="successive rollouts (one release each)")
    p.add_argument("--rate-mbit", type=float, default=25.0, help="every link, both ways")
    p.add_argument("--size-mb", type=float, default=5.0, help="release payload (MB)")
    p.add_argument("--hook-ms", type=int, default=0, help="how long every hook sleeps")
    p.add_argument(
        "--src",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="source tree whose seeder, peers and CLI run (default: this one)",
    )
    p.add_argument("--start-args", default="", help="extra options for `shoal rollout start`")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one rollout may take")
    p.add_argument("--out", type=Path, help="JSON of every run")
    args = p.parse_args(argv)
    if args.hosts < 1 or args.runs < 1:
        p.error("--hosts and --runs must be at least 1")
    if not (args.src / "seeder" / "cli.py").is_file():
        p.error(f"--src {args.src} is not a shoal source tree (no seeder/cli.py)")
    args.src = args.src.resolve()
    return args


class Shoal:
    """The real ``shoal`` CLI of the tree under test, run inside the seeder's namespace."""

    def __init__(self, host: Host, src: Path, ident: BenchIdentity) -> None:
        self.host = host
        self.env = {**ident.env, "PYTHONPATH": str(src)}
        self.cwd = host.workdir
        self.control = f"{host.ip}:{CONTROL_PORT}"

    def __call__(self, *args: str, timeout: float = 300.0) -> str:
        argv = [sys.executable, "-m", "seeder.cli", *args, "--seeder", self.control]
        out = self.host.run(argv, timeout=timeout, check=False, env=self.env, cwd=self.cwd)
        if out.returncode != 0:
            tail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-8:])
            raise SystemExit(f"shoal {' '.join(args)} failed ({out.returncode}): {tail}")
        return str(out.stdout)


# The start is taken first; the data dir is derived without forking (RELEASE_DIR is
# <data>/releases/<id>), so what is counted as the hook's run time is the hook's.
HOOK = """#!/bin/sh
started="$(date +%s.%N)"
data_dir="${RELEASE_DIR%/*}"
echo "$DEPLOYMENT_ID $LIFECYCLE_EVENT $started" >> "${data_dir%/*}/hook-starts.log"
"""
DOWNLOAD_TOOK = re.compile(r" in (\d+(?:\.\d+)?)s\b")


def make_repo(root: Path, size: int, hook_ms: int) -> Path:
    """An app of ``size`` random bytes with one hook per lifecycle event, sleeping ``hook_ms``.

    Every hook first notes when it started (the seeder keeps only each step's final report, so
    a hook's start is not in the status), then sleeps.
    """
    repo = root / "overhead-app"
    (repo / "hooks").mkdir(parents=True)
    sleep = f"sleep {hook_ms / 1000:.3f}\n" if hook_ms else ""
    for event in LIFECYCLE_EVENTS:
        hook = repo / "hooks" / f"{event}.sh"
        hook.write_text(f"{HOOK}{sleep}exit 0\n")
        hook.chmod(0o755)
    (repo / "appspec.yml").write_text(
        "version: 0.0\nos: linux\nhooks:\n"
        + "".join(f"  {e}:\n    - location: hooks/{e}.sh\n" for e in LIFECYCLE_EVENTS)
    )
    (repo / "payload.bin").write_bytes(os.urandom(size))
    (repo / "VERSION").write_text("0\n")
    commit_all(repo, "overhead app")
    return repo


def new_version(repo: Path, run: int, size: int) -> None:
    """A new release: fresh payload bytes, so nothing of it is on any host yet."""
    (repo / "payload.bin").write_bytes(os.urandom(size))
    (repo / "VERSION").write_text(f"{run}\n")
    commit_all(repo, f"overhead run {run}")


HookStarts = dict[str, dict[str, float]]  # host -> lifecycle event -> when its hook started


def hook_starts(bed: Testbed, rollout_id: str) -> HookStarts:
    """What the hooks of one rollout noted in every host's ``hook-starts.log``."""
    out: HookStarts = {}
    for h in bed.peers:
        log = h.workdir / "peer" / "hook-starts.log"
        lines = log.read_text().splitlines() if log.exists() else []
        for line in lines:
            rid, event, at = line.split()
            if rid == rollout_id:
                out.setdefault(h.name, {}).setdefault(event, float(at))
    return out


def breakdown(status: dict[str, Any], starts: HookStarts) -> dict[str, Any]:
    """Split creation → last activated along the critical path (see the module docstring).

    The status holds each step once, with the time of its final report. A host runs its steps
    one after the other, so a step that follows another began when that one's report was made:
    verify and unpack are the gaps after download and verify, Install the gap after
    BeforeInstall. A hook's run time is from its own start note to its final report. The
    transfer is the download time the peer itself measured (the report's detail).
    """
    created = float(status["created_at"])
    hosts: dict[str, dict[str, dict[str, Any]]] = {}
    for t in status["targets"]:
        steps = {str(s["step"]): s for s in t["steps"]}
        for need in ("stage", "download", "unpack", "activate"):
            if steps.get(need, {}).get("state") != "succeeded":
                raise SystemExit(f"host {t['host']}: no successful {need} report ({t['state']})")
        hosts[t["host"]] = steps

    def at(host: str, step: str) -> float:
        return float(hosts[host][step]["at"])

    last_staged = max(hosts, key=lambda h: at(h, "stage"))
    last_active = max(hosts, key=lambda h: at(h, "activate"))
    a, b = last_staged, last_active
    took = DOWNLOAD_TOOK.search(str(hosts[a]["download"].get("detail", "")))
    if took is None:
        raise SystemExit(f"cannot read the download time from {hosts[a]['download']['detail']!r}")
    hooked = {e: t for e, t in starts.get(b, {}).items() if e in hosts[b]}
    out: dict[str, float] = {
        "total_s": at(b, "activate") - created,
        "staging_s": at(a, "stage") - created,
        "activation_s": at(b, "activate") - at(a, "stage"),
        "transfer_s": float(took[1]),
        "stage_local_s": at(a, "unpack") - at(a, "download"),
        "hooks_s": sum(at(b, e) - t for e, t in hooked.items()),
        "install_s": at(b, "Install") - at(b, "BeforeInstall") if "Install" in hosts[b] else 0.0,
        "first_download_done_s": min(at(h, "download") for h in hosts) - created,
        "hooks_run": float(len(hooked)),
    }
    out["staging_control_s"] = out["staging_s"] - out["transfer_s"] - out["stage_local_s"]
    out["activation_control_s"] = out["activation_s"] - out["hooks_s"] - out["install_s"]
    # of which: until that host's first hook started (Activate delivery and the phase change)
    first_hook = min(hooked.values(), default=at(b, "activate"))
    out["until_first_hook_s"] = first_hook - at(a, "stage")
    out["overhead_s"] = out["total_s"] - out["transfer_s"] - out["hooks_s"]
    out["control_s"] = out["staging_control_s"] + out["activation_control_s"]
    return {**out, "last_staged_host": a, "last_activated_host": b}


def start_daemons(
    bed: Testbed, src: Path, logs: Path, ident: BenchIdentity
) -> list[subprocess.Popen[Any]]:
    seeder, env = bed.seeder, {**os.environ, "PYTHONPATH": str(src)}
    control = f"{seeder.ip}:{CONTROL_PORT}"
    procs = [
        seeder.popen(
            [sys.executable, "-m", "seeder.cli", "seeder", "run",
             "--data-dir", str(seeder.workdir / "data"), "--listen", control,
             "--torrent-listen", f"{seeder.ip}:{BT_PORT}",
             "--tracker-listen", f"{seeder.ip}:{TRACKER_PORT}"],
            stdout=(logs / "seeder.log").open("wb"), stderr=subprocess.STDOUT,
            env=env, cwd=seeder.workdir,
        )
    ]  # fmt: skip
    for h in bed.peers:
        procs.append(
            h.popen(
                [sys.executable, "-m", "peer.cli", "run", "--seeder", control, "--name", h.name,
                 "--bind", h.ip, "--torrent-port", str(BT_PORT),
                 "--data-dir", str(h.workdir / "peer"), *ident.peer_args(h.name)],
                stdout=(logs / f"{h.name}.log").open("wb"), stderr=subprocess.STDOUT,
                env=env, cwd=h.workdir,
            )
        )  # fmt: skip
    return procs


def wait_connected(shoal: Shoal, n: int, procs: list[subprocess.Popen[Any]]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a shoal daemon exited during start-up; see the testbed logs")
        try:
            hosts = json.loads(shoal("hosts", "--json", timeout=30))
        except SystemExit:
            hosts = []  # the seeder is not listening yet
        if sum(h["connected"] for h in hosts) == n:
            return
        time.sleep(0.5)
    raise SystemExit(f"not all {n} peers connected within 60 s")


def one_rollout(
    bed: Testbed, shoal: Shoal, release_id: str, args: argparse.Namespace
) -> dict[str, Any]:
    out = shoal("rollout", "start", release_id, "--hosts", "all", *shlex.split(args.start_args))
    rollout_id = out.strip().splitlines()[-1].strip()
    deadline = time.monotonic() + args.timeout
    while True:
        time.sleep(POLL_EVERY)
        status = json.loads(shoal("rollout", "status", rollout_id, "--json"))
        if status["state"] in ("succeeded", "failed", "aborted", "halted"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"rollout {rollout_id} still {status['state']} after {args.timeout}s")
    if status["state"] != "succeeded":
        raise SystemExit(f"rollout {rollout_id} ended {status['state']}: {status.get('error')}")
    starts = hook_starts(bed, rollout_id)
    return {"rollout_id": rollout_id, "release_id": release_id, **breakdown(status, starts)}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    size = int(args.size_mb * 1_000_000)
    results = []
    with Testbed(args.hosts, args.rate_mbit) as bed:
        logs = bed.workdir / "logs"
        logs.mkdir()
        repo = make_repo(bed.seeder.workdir, size, args.hook_ms)
        seeder = bed.seeder
        ident = prepare(
            seeder.workdir / "data", seeder.ip, [h.name for h in bed.peers], bed.workdir / "pki"
        )
        procs = start_daemons(bed, args.src, logs, ident)
        shoal = Shoal(seeder, args.src, ident)
        wait_connected(shoal, args.hosts, procs)
        for i in range(args.runs):
            if i:
                new_version(repo, i, size)
            built = shoal("release", "build", str(repo), "--ref", "main", "--app", "overhead")
            cpu0 = _seeder_cpu(procs[0].pid)
            result = one_rollout(bed, shoal, built.strip().splitlines()[-1], args)
            result["seeder_cpu_s"] = _seeder_cpu(procs[0].pid) - cpu0  # includes the polls
            results.append(result)
            print(f"run {i + 1}: {line(result)}", flush=True)
    return results


def line(r: dict[str, Any]) -> str:
    return (
        f"total {r['total_s']:.2f}s = transfer {r['transfer_s']:.2f} + hooks {r['hooks_s']:.2f}"
        f" + verify/unpack/Install {r['stage_local_s'] + r['install_s']:.2f}"
        f" + control {r['control_s']:.2f} (staging {r['staging_control_s']:.2f},"
        f" activation {r['activation_control_s']:.2f}, of which {r['until_first_hook_s']:.2f}"
        f" before the first hook); overhead {r['overhead_s']:.2f}s"
    )


KEYS = ("total_s", "transfer_s", "hooks_s", "stage_local_s", "install_s", "staging_control_s",
        "activation_control_s", "until_first_hook_s", "control_s", "overhead_s",
        "first_download_done_s")  # fmt: skip


def summary(results: list[dict[str, Any]]) -> str:
    rows = ["| figure | min | median | max |", "|---|---|---|---|"]
    for key in KEYS:
        values = [r[key] for r in results]
        rows.append(
            f"| {key} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f} |"
        )
    return "\n".join(rows)


def _seeder_cpu(pid: int) -> float:
    used = cpu_seconds([pid])
    return used["seeder_user"] + used["seeder_system"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if reason := netns_available():
        print(f"bench.rollout_overhead: cannot build the testbed: {reason}", file=sys.stderr)
        return 2
    try:
        results = run(args)
    except NetnsError as exc:
        print(f"bench.rollout_overhead: {exc}", file=sys.stderr)
        return 2
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(
        f"{args.hosts} hosts, {args.runs} run(s), {args.size_mb:g} MB at {args.rate_mbit:g} Mbit/s"
    )
    print(summary(results))
    overhead = [r["overhead_s"] for r in results]
    print(f"overhead_median={statistics.median(overhead):.3f} max={max(overhead):.3f} target=2.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
