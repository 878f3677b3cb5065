"""The fleet-onboarding benchmark: ``shoal fleet install`` on N namespaced hosts over real SSH.

    python -m bench.fleet_install --hosts 16 --runs 3 [--parallel 50] [--out r.json]

Each run builds a fresh testbed (N+1 network namespaces, unshaped links), starts one OpenSSH
``sshd`` per host with its own host key, runs the seeder in host 0, and times, through the real
CLI in host 0: a fresh install of every host (connect, probe, upload of the ~25 MB wheelhouse,
virtualenv, config, start, wait until the seeder shows the host connected), then the same
command again, which must change nothing. Per run it prints the wall time and the per-host
min / median / max of both; at the end the spread of the wall times over the runs. The
wheelhouse is built once before the first run (its build time is printed on its own: the seeder
namespace has no route to a package index).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from bench.netns import Testbed, netns_available
from bench.sftp import _keygen, sshd_available, sshd_fleet
from seeder.localfleet import LocalFleet
from seeder.wheelhouse import Target, build_bundle

PYTHON = "/usr/bin/python3"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fleet_install", description=__doc__)
    p.add_argument("--hosts", type=int, default=16)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--parallel", type=int, default=50)
    p.add_argument("--work", type=Path, default=Path("/tmp/shoal-bench-fleet"))
    p.add_argument("--out", type=Path, help="JSON results")
    return p.parse_args(argv)


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def _fmt(s: dict[str, float]) -> str:
    return f"{s['min']:.2f} / {s['median']:.2f} / {s['max']:.2f} s"


def _inventory(bed: Testbed, key: Path) -> str:
    lines = [
        "all:",
        "  vars:",
        "    ansible_user: root",
        f"    ansible_ssh_private_key_file: {key}",
    ]
    lines += [f"    ansible_python_interpreter: {PYTHON}", "    shoal_service: none", "  hosts:"]
    for h in bed.peers:
        lines += [
            f"    {h.name}:",
            f"      ansible_host: {h.ip}",
            f"      shoal_prefix: {h.workdir}/opt/shoal",
            f"      shoal_data_dir: {h.workdir}/var/shoal-peer",
            f"      shoal_config: {h.workdir}/etc/peer.yml",
        ]
    return "\n".join(lines) + "\n"


def _install(
    local: LocalFleet, inv: Path, known: Path, cache: Path, parallel: int
) -> dict[str, Any]:
    began = time.monotonic()
    out = local.cli(
        "fleet", "install", "--inventory", str(inv), "--known-hosts", str(known),
        "--cache", str(cache), "--service", "none", "--parallel", str(parallel), "--json",
        timeout=1800,
    )  # fmt: skip
    wall = time.monotonic() - began
    try:
        doc = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise SystemExit(
            f"fleet install crashed ({out.returncode}): {out.stderr[-2000:]}"
        ) from None
    failed = {h["host"]: (h["reason"], h["detail"]) for h in doc["hosts"] if h["reason"]}
    if failed:
        raise SystemExit(f"fleet install failed on {len(failed)} host(s): {failed}")
    steps = sorted({s for h in doc["hosts"] for s in h["steps"]})
    return {
        "wall": wall,
        "per_host": spread([float(h["seconds"]) for h in doc["hosts"]]),
        "outcomes": sorted({h["outcome"] for h in doc["hosts"]}),
        "step_median": {
            s: statistics.median(float(h["steps"].get(s, 0.0)) for h in doc["hosts"]) for s in steps
        },
    }


async def one_run(args: argparse.Namespace, index: int, cache: Path) -> dict[str, Any]:
    work = args.work / f"run{index}"
    work.mkdir(parents=True, exist_ok=True)
    with Testbed(args.hosts, None) as bed:
        key = work / "id_ed25519"
        if not key.exists():
            _keygen(key)
        with sshd_fleet(bed, bed.peers, key.with_suffix(".pub")) as host_keys:
            known = work / "known_hosts"
            known.write_text(
                "".join(
                    f"{h.ip} {' '.join(host_keys[h.name].read_text().split()[:2])}\n"
                    for h in bed.peers
                )
            )
            inv = work / "inventory.yml"
            inv.write_text(_inventory(bed, key))
            local = LocalFleet(work / "fleet", seeder_ip=bed.seeder.ip, netns=bed.seeder.netns)
            try:
                await local.start_seeder()
                fresh = await trio.to_thread.run_sync(
                    _install, local, inv, known, cache, args.parallel
                )
                again = await trio.to_thread.run_sync(
                    _install, local, inv, known, cache, args.parallel
                )
            finally:
                await local.stop_all()
    if again["outcomes"] != ["unchanged"]:
        raise SystemExit(f"the re-run changed hosts: {again['outcomes']}")
    print(
        f"run {index}: fresh install wall {fresh['wall']:.2f} s, per host {_fmt(fresh['per_host'])}"
        f" | re-run wall {again['wall']:.2f} s, per host {_fmt(again['per_host'])}",
        flush=True,
    )
    for label, res in (("fresh", fresh), ("re-run", again)):
        parts = ", ".join(f"{k} {v:.1f}" for k, v in res["step_median"].items() if v >= 0.05)
        print(f"  {label} per-step median (s): {parts}", flush=True)
    return {"fresh": fresh, "rerun": again}


def host_target() -> Target:
    """What the hosts' interpreter is (the namespaces run this machine's system Python)."""
    probe = "import platform as p, sys; print(*sys.version_info[:2], p.machine(), p.libc_ver()[1])"
    major, minor, machine, glibc = subprocess.run(
        [PYTHON, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    return Target(f"{major}.{minor}", machine, glibc)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cache = args.work / "cache"
    began = time.monotonic()
    bundle = await trio.to_thread.run_sync(build_bundle, cache / "wheelhouse", host_target())
    print(f"wheelhouse {bundle.install_id}: {bundle.size / 1e6:.1f} MB, {len(bundle.wheels)}"
          f" wheels, ready in {time.monotonic() - began:.1f} s", flush=True)  # fmt: skip
    runs = [await one_run(args, i, cache) for i in range(1, args.runs + 1)]
    result = {
        "hosts": args.hosts,
        "parallel": args.parallel,
        "bundle_bytes": bundle.size,
        "runs": runs,
        "fresh_wall": spread([r["fresh"]["wall"] for r in runs]),
        "rerun_wall": spread([r["rerun"]["wall"] for r in runs]),
        "fresh_per_host_median": spread([r["fresh"]["per_host"]["median"] for r in runs]),
        "rerun_per_host_median": spread([r["rerun"]["per_host"]["median"] for r in runs]),
    }
    print(
        f"{args.hosts} hosts, {args.runs} runs (min / median / max):\n"
        f"  fresh install  wall {_fmt(result['fresh_wall'])}, per-host median"
        f" {_fmt(result['fresh_per_host_median'])}\n"
        f"  re-run         wall {_fmt(result['rerun_wall'])}, per-host median"
        f" {_fmt(result['rerun_per_host_median'])}",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for reason in (netns_available(), sshd_available()):
        if reason:
            print(f"cannot run: {reason}", file=sys.stderr)
            return 2
    result = trio.run(run, args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
