"""Interleaved A/B runs of the swarm benchmark: the spread of each variant, side by side.

    python -m bench.ab --runs 5 --variant 'base=main' --variant 'new=.' \\
        -- --hosts 16 --rate-mbit 25 --size-mb 50

A variant is ``NAME=REV [extra bench.swarm options]``: REV is a git revision of this repository
(exported with ``git archive`` into a temporary directory, read-only for the repository) or ``.``
for the working tree as it is. Runs alternate between the variants (A B A B ...), so the load of
a shared machine falls on all of them alike. Prints one line per run, then min / median / max of
each headline figure per variant; ``--out`` keeps every run's summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIGURES = (
    ("ratio_to_bound", "staged/T*"),
    ("downloaded_to_bound", "downloaded/T*"),
    ("egress_over_size", "egress/F"),
    ("cpu_s_per_gb", "cpu-s/GB"),
    ("fast_ratio", "fast/own F/d"),
    ("start_max_s", "start-up max s"),
)


@dataclass
class Variant:
    name: str
    rev: str
    extra: list[str]
    tree: Path = ROOT
    runs: list[dict[str, Any]] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    words = shlex.split(text)
    head, sep, rev = words[0].partition("=") if words else ("", "", "")
    if not sep or not head or not rev:
        raise SystemExit(f"--variant {text!r}: expected 'NAME=REV [options]'")
    return Variant(head, rev, words[1:])


def export(rev: str, into: Path) -> Path:
    """The tree of ``rev`` as plain files under ``into`` (``git archive``: no worktree)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise SystemExit(f"cannot export {rev!r}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """The figures compared between variants, from one run's summary."""
    out = {key: float(summary[key]) for key, _ in FIGURES if key in summary}
    by_rate = summary.get("by_rate")
    if by_rate:
        fastest = max(by_rate, key=float)
        out["fast_ratio"] = float(by_rate[fastest]["ratio"])
    return out


def run_once(variant: Variant, swarm_args: list[str], out: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "bench.swarm", *swarm_args, *variant.extra, "--out", str(out)]
    env_path = str(variant.tree)
    proc = subprocess.run(
        cmd,
        cwd=variant.tree,
        env={**_environ(), "PYTHONPATH": env_path},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"{variant.name}: bench.swarm failed: {' | '.join(tail)}")
    return headline(json.loads(out.read_text())["summary"])


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def table(variants: list[Variant]) -> str:
    lines = ["figure (min / median / max)  " + "  ".join(f"{v.name:>24}" for v in variants)]
    for key, label in FIGURES:
        cells = []
        for v in variants:
            values = [r[key] for r in v.runs if key in r]
            cells.append(f"{spread(values) if values else '-':>24}")
        if any(c.strip() != "-" for c in cells):
            lines.append(f"{label:<28} " + "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    own, swarm_args = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5, help="runs of each variant")
    p.add_argument("--variant", action="append", required=True, help="'NAME=REV [options]'")
    p.add_argument("--out", type=Path, help="every run's headline figures, as JSON")
    args = p.parse_args(own)
    variants = [parse_variant(v) for v in args.variant]
    if len({v.name for v in variants}) != len(variants):
        raise SystemExit("variant names must differ")
    with tempfile.TemporaryDirectory(prefix="shoal-ab-") as tmp:
        for v in variants:
            if v.rev != ".":
                v.tree = export(v.rev, Path(tmp) / v.name)
        for i in range(args.runs):
            for v in variants:
                figures = run_once(v, swarm_args, Path(tmp) / f"{v.name}-{i}.json")
                v.runs.append(figures)
                shown = " ".join(f"{k}={x:.3f}" for k, x in figures.items())
                print(f"run {i + 1} {v.name}: {shown}", flush=True)
    print(table(variants))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "swarm_args": swarm_args,
            "variants": {
                v.name: {"rev": v.rev, "extra": v.extra, "runs": v.runs} for v in variants
            },
        }
        args.out.write_text(json.dumps(data, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
