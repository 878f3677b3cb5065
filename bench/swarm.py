"""The swarm benchmark: shoal against the physical limit and against an SFTP fan-out.

    python -m bench.swarm --hosts 16 --rate-mbit 25 --size-mb 50 --baseline sftp --out r.json

Builds a testbed of N+1 hosts (Linux network namespaces on a bridge, links shaped with tc), runs
the real seeder in host 0 and ``shoal-peer`` in every other host, builds a release of S MB of
incompressible content, rolls it out with ``shoal rollout start`` and reads back, from the
seeder, when every host finished staging (downloaded + verified + unpacked). Everything is driven
through shoal's own commands. The last line of output is the headline:

    ratio_to_bound=<max/T*> egress_over_size=<seeder payload bytes/F> speedup_vs_sftp=<sftp/shoal>
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.bound import client_server_bound, p2p_bound, percentiles
from bench.cleanup import NetnsError
from bench.identity import prepare
from bench.netns import Host, Testbed, netns_available, slow_host_rates
from seeder.samplerepo import commit_all

CONTROL_PORT = 7700
TRACKER_PORT = 7701
BT_PORT = 6881
APPSPEC = "version: 0.0\nos: linux\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.swarm", description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=4, help="downloading hosts (N)")
    p.add_argument("--rate-mbit", type=float, default=25.0, help="every host's link, both ways")
    p.add_argument("--size-mb", type=float, default=10.0, help="release size (MB, 10^6 bytes)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per link")
    p.add_argument("--seeder-rate-mbit", type=float, help="the seeder's link (default: rate)")
    p.add_argument("--slow-fraction", type=float, default=0.0, help="share of slow hosts")
    p.add_argument("--slow-rate-mbit", type=float, help="their rate (default: rate / 4)")
    p.add_argument("--queue-ms", type=float, default=50.0, help="shaped queue per link (ms)")
    p.add_argument("--baseline", choices=["sftp", "none"], default="none")
    p.add_argument("--piece-size", type=int, default=0, help="torrent piece size (0 = auto)")
    p.add_argument("--seeder-arg", action="append", default=[], help="extra seeder option")
    p.add_argument("--seeder-setting", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--peer-setting", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, help="JSON results (a PNG CDF plot goes next to it)")
    p.add_argument("--logs", type=Path, help="copy the daemons' logs here before cleaning up")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds the rollout may take")
    return p.parse_args(argv)


def shoal(host: Host, *args: str, timeout: float = 120.0) -> str:
    """Run the real ``shoal`` CLI inside a host's namespace; its stdout."""
    out = host.run([sys.executable, "-m", "seeder.cli", *args], timeout=timeout, check=False)
    if out.returncode != 0:
        tail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-12:])
        raise SystemExit(f"shoal {' '.join(args)} failed ({out.returncode}): {tail}")
    return str(out.stdout)


def make_release_repo(root: Path, size: int) -> Path:
    repo = root / "bench-app"
    repo.mkdir()
    with (repo / "payload.bin").open("wb") as f:
        left = size
        while left > 0:
            chunk = os.urandom(min(left, 1 << 20))
            f.write(chunk)
            left -= len(chunk)
    (repo / "appspec.yml").write_text(APPSPEC)
    commit_all(repo, "bench payload")
    return repo


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU seconds of processes (and their reaped children), from /proc: ``user`` and
    ``system`` of the first pid (the seeder) and of the others (the peers)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = dict.fromkeys(("seeder_user", "seeder_system", "peers_user", "peers_system"), 0.0)
    for n, pid in enumerate(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        user, system, cuser, csystem = (int(v) / tick for v in fields[11:15])
        who = "seeder" if n == 0 else "peers"
        out[f"{who}_user"] += user + cuser
        out[f"{who}_system"] += system + csystem
    return out


def tx_bytes(host: Host) -> int:
    out = host.run(["cat", "/sys/class/net/eth0/statistics/tx_bytes"], timeout=10)
    return int(out.stdout)


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = int(args.size_mb * 1_000_000)
    slow = (
        slow_host_rates(args.hosts, args.slow_fraction, args.slow_rate_mbit or args.rate_mbit / 4)
        if args.slow_fraction
        else {}
    )
    with Testbed(
        args.hosts,
        args.rate_mbit,
        seeder_rate_mbit=args.seeder_rate_mbit,
        host_rates=dict(slow),
        queue_ms=args.queue_ms,
        delay_ms=args.delay_ms,
    ) as bed:
        seeder = bed.seeder
        repo = make_release_repo(seeder.workdir, size)
        control = f"{seeder.ip}:{CONTROL_PORT}"
        settings = [a for kv in args.seeder_setting for a in ("--torrent-setting", kv)]
        settings += args.seeder_arg
        logs = bed.workdir / "logs"
        logs.mkdir()
        ident = prepare(
            seeder.workdir / "data", seeder.ip, [h.name for h in bed.peers], bed.workdir / "pki"
        )
        os.environ.update(ident.env)  # every `shoal` run below presents the admin credential
        procs = [
            seeder.popen(
                [
                    sys.executable,
                    "-m",
                    "seeder.cli",
                    "seeder",
                    "run",
                    "--data-dir",
                    str(seeder.workdir / "data"),
                    "--listen",
                    control,
                    "--torrent-listen",
                    f"{seeder.ip}:{BT_PORT}",
                    "--tracker-listen",
                    f"{seeder.ip}:{TRACKER_PORT}",
                    "--piece-size",
                    str(args.piece_size),
                    *settings,
                ],
                stdout=(logs / "seeder.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        ]
        peer_settings = [a for kv in args.peer_setting for a in ("--torrent-setting", kv)]
        for h in bed.peers:
            procs.append(
                h.popen(
                    [
                        sys.executable,
                        "-m",
                        "peer.cli",
                        "run",
                        "--seeder",
                        control,
                        "--name",
                        h.name,
                        "--bind",
                        h.ip,
                        "--torrent-port",
                        str(BT_PORT),
                        "--data-dir",
                        str(h.workdir / "peer"),
                        *ident.peer_args(h.name),
                        *peer_settings,
                    ],
                    stdout=(logs / f"{h.name}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        wait_connected(seeder, control, len(bed.peers), procs)
        built = shoal(
            seeder,
            "release",
            "build",
            str(repo),
            "--ref",
            "main",
            "--app",
            "bench",
            "--seeder",
            control,
            timeout=300,
        )
        release_id = built.strip().splitlines()[-1]
        manifest = next(
            r
            for r in json.loads(shoal(seeder, "release", "list", "--json", "--seeder", control))
            if r["release_id"] == release_id
        )
        archive = seeder.workdir / "data" / "releases" / release_id / manifest["archive"]
        before = stats(seeder, control), tx_bytes(seeder), cpu_seconds([p.pid for p in procs])
        started = time.time()
        shoal(
            seeder,
            "rollout",
            "start",
            release_id,
            "--wait",
            "--timeout",
            str(args.timeout),
            "--seeder",
            control,
            timeout=args.timeout + 60,
        )
        status = json.loads(shoal(seeder, "rollout", "status", "--json", "--seeder", control))
        time.sleep(1.5)  # libtorrent folds transfers into its totals about once a second
        after = stats(seeder, control), tx_bytes(seeder), cpu_seconds([p.pid for p in procs])
        wall = time.time() - started
        staged = staged_times(status)
        result: dict[str, Any] = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "release": manifest,
            "size_bytes": manifest["size"],
            "rollout": status["rollout_id"],
            "hosts": {
                h.name: {
                    "ip": h.ip,
                    "up_mbit": h.up_mbit,
                    "down_mbit": h.down_mbit,
                    "staged_s": staged[h.name]["stage"],
                    "steps_s": staged[h.name],
                    "download": next(
                        s["detail"]
                        for t in status["targets"]
                        if t["host"] == h.name
                        for s in t["steps"]
                        if s["step"] == "download" and s["state"] == "succeeded"
                    ),
                }
                for h in bed.peers
            },
            "seeder_payload_bytes": after[0] - before[0],
            "seeder_wire_bytes": after[1] - before[1],
            "cpu_seconds": sum(after[2].values()) - sum(before[2].values()),
            "cpu_split": {k: after[2][k] - before[2][k] for k in after[2]},
            "rollout_wall_s": wall,
        }
        if args.baseline == "sftp":
            from bench.sftp import run_sftp_baseline

            result["sftp"] = run_sftp_baseline(bed, archive)
        result["bounds"] = bounds(bed, manifest["size"])
        if args.logs:
            shutil.copytree(logs, args.logs, dirs_exist_ok=True)
    return result


def wait_connected(seeder: Host, control: str, n: int, procs: list[Any]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = seeder.run(
            [sys.executable, "-m", "seeder.cli", "hosts", "--json", "--seeder", control],
            check=False,
            timeout=30,
        )
        if out.returncode == 0 and sum(h["connected"] for h in json.loads(out.stdout)) == n:
            return
        if any(p.poll() is not None for p in procs):
            raise SystemExit("a shoal daemon exited during start-up; see the testbed logs")
        time.sleep(0.5)
    raise SystemExit(f"not all {n} peers connected within 60 s")


def stats(seeder: Host, control: str) -> int:
    """Payload bytes the seeder (all its sessions) has uploaded: ``shoal seeder stats``."""
    return int(
        json.loads(shoal(seeder, "seeder", "stats", "--json", "--seeder", control))["uploaded"]
    )


def staged_times(status: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per host, seconds from the rollout's start until each step ended ('stage' = staged),
    and until its download began ('download_started': the start-up latency)."""
    out = {}
    for t in status["targets"]:
        ends = {
            s["step"]: s["at"] - status["created_at"]
            for s in t["steps"]
            if s["state"] == "succeeded"
        }
        if "stage" not in ends:
            raise SystemExit(f"host {t['host']} never staged: {t['state']} {t['error']}")
        # The store keeps each step's last state only: the download's start is its end minus
        # the time the peer says it took ("<n> bytes in <s>s, ...").
        took = [
            re.search(r" bytes in ([\d.]+)s", str(s["detail"]))
            for s in t["steps"]
            if s["step"] == "download" and s["state"] == "succeeded"
        ]
        if took and took[0] and "download" in ends:
            ends["download_started"] = ends["download"] - float(took[0][1])
        out[t["host"]] = ends
    return out


def bounds(bed: Testbed, size: int) -> dict[str, float]:
    mbit = 1e6
    seeder_up = (bed.seeder.up_mbit or 0) * mbit
    ups = [(h.up_mbit or 0) * mbit for h in bed.peers]
    downs = [(h.down_mbit or 0) * mbit for h in bed.peers]
    return {
        "t_star": p2p_bound(size, seeder_up, ups, downs),
        "client_server": client_server_bound(size, seeder_up, downs),
    }


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one run (stored in the JSON as ``summary``)."""
    size = result["size_bytes"]
    times = [h["staged_s"] for h in result["hosts"].values()]
    pct = percentiles(times)
    t_star = result["bounds"]["t_star"]
    downloaded = percentiles([h["steps_s"]["download"] for h in result["hosts"].values()])
    began = [h["steps_s"].get("download_started") for h in result["hosts"].values()]
    summary: dict[str, Any] = {
        "downloaded_p50_s": downloaded["p50"],
        "downloaded_max_s": downloaded["max"],
        "downloaded_to_bound": downloaded["max"] / t_star,
        "p50_s": pct["p50"],
        "p99_s": pct["p99"],
        "max_s": pct["max"],
        "t_star_s": t_star,
        "client_server_s": result["bounds"]["client_server"],
        "ratio_to_bound": pct["max"] / t_star,
        "p50_to_bound": pct["p50"] / t_star,
        "egress_over_size": result["seeder_payload_bytes"] / size,
        "wire_egress_over_size": result["seeder_wire_bytes"] / size,
        "cpu_s_per_gb": result["cpu_seconds"] / (len(times) * size / 1e9),
    }
    if all(b is not None for b in began):
        summary["start_p50_s"] = percentiles([float(b) for b in began if b is not None])["p50"]
        summary["start_max_s"] = max(float(b) for b in began if b is not None)
    groups: dict[float, list[float]] = {}
    for h in result["hosts"].values():
        groups.setdefault(h["down_mbit"] or 0.0, []).append(h["staged_s"])
    if len(groups) > 1:  # mixed link rates: does the slow group drag the fast one?
        summary["by_rate"] = {}
        for mbit, group in sorted(groups.items(), reverse=True):
            own = size * 8 / (mbit * 1e6)  # the group's own limit: F / its download rate
            summary["by_rate"][f"{mbit:g}"] = {
                "hosts": len(group),
                "max_s": max(group),
                "own_bound_s": own,
                "ratio": max(group) / own,
            }
    if "sftp" in result:
        summary["sftp_max_s"] = result["sftp"]["max"]
        summary["speedup_vs_sftp"] = result["sftp"]["max"] / pct["max"]
    return summary


def report(result: dict[str, Any]) -> str:
    """The printed summary; the last line holds the three headline ratios."""
    size, summary = result["size_bytes"], result["summary"]
    gb = len(result["hosts"]) * size / 1e9
    lines = [
        f"release {size / 1e6:.1f} MB to {len(result['hosts'])} hosts",
        f"shoal staged: p50 {summary['p50_s']:.2f}s p99 {summary['p99_s']:.2f}s "
        f"max {summary['max_s']:.2f}s",
        f"downloaded: p50 {summary['downloaded_p50_s']:.2f}s max {summary['downloaded_max_s']:.2f}s"
        f" = {summary['downloaded_to_bound']:.3f} x T*",
        f"bounds: T* {summary['t_star_s']:.2f}s, client-server {summary['client_server_s']:.2f}s",
        f"start-up (rollout created -> download running): p50 {summary.get('start_p50_s', 0):.2f}s"
        f" max {summary.get('start_max_s', 0):.2f}s",
        f"seeder sent {result['seeder_payload_bytes'] / 1e6:.1f} MB payload "
        f"({result['seeder_wire_bytes'] / 1e6:.1f} MB on the wire)",
        f"cpu {result['cpu_seconds']:.1f}s for {gb:.2f} GB delivered "
        f"({summary['cpu_s_per_gb']:.1f} cpu-s/GB; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in result.get("cpu_split", {}).items())
        + ")",
    ]
    for mbit, group in summary.get("by_rate", {}).items():
        lines.append(
            f"hosts at {mbit} Mbit/s: {group['hosts']}, max {group['max_s']:.2f}s = "
            f"{group['ratio']:.2f} x their own F/d {group['own_bound_s']:.2f}s"
        )
    speedup = "n/a"
    if "sftp" in result:
        speedup = f"{summary['speedup_vs_sftp']:.2f}"
        sftp = result["sftp"]
        lines.append(f"sftp fan-out: p50 {sftp['p50']:.2f}s max {sftp['max']:.2f}s")
    lines.append(
        f"ratio_to_bound={summary['ratio_to_bound']:.3f} "
        f"egress_over_size={summary['egress_over_size']:.3f} speedup_vs_sftp={speedup}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if reason := netns_available():
        print(f"bench.swarm: cannot build the testbed: {reason}", file=sys.stderr)
        return 2
    try:
        result = run(args)
    except NetnsError as exc:
        print(f"bench.swarm: {exc}", file=sys.stderr)
        return 2
    result["summary"] = summarize(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True))
        from bench.plot import plot_cdf

        series = {"shoal": [h["staged_s"] for h in result["hosts"].values()]}
        if "sftp" in result:
            series["sftp"] = list(result["sftp"]["hosts"].values())
        plot_cdf(
            series,
            result["bounds"]["t_star"],
            result["bounds"]["client_server"],
            args.out.with_suffix(".png"),
            f"{len(result['hosts'])} hosts, {result['size_bytes'] / 1e6:.0f} MB, "
            f"{args.rate_mbit:g} Mbit/s",
        )
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
