"""What ``shoal fleet install/status/uninstall`` show while they run and when they end.

On a terminal: a live table (rich), one line per host with its step, redrawn in place. Off a
terminal (a pipe, a CI log): one plain line per host and step change. At the end: a table of
every host with its outcome, a list of failures grouped by reason, and a summary line.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO

import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from seeder import render
from seeder.fleet_ops import NOTED
from seeder.fleet_steps import HostRun


def _row(run: HostRun) -> list[str]:
    took = f"{run.seconds:.1f}s" if run.seconds is not None else "-"
    notes = [*run.changes, *([state] if (state := run.info.get("revocation")) in NOTED else [])]
    note = f"{run.reason}: {run.detail}" if run.reason else ", ".join(notes)
    return [run.name, run.outcome, run.step, took, note]


HEADS = ["HOST", "RESULT", "STEP", "TIME", "DETAIL"]


def live_table(runs: dict[str, HostRun]) -> Table:
    table = Table(*HEADS, box=None, pad_edge=False)
    for run in runs.values():
        cells = _row(run)
        style = {"failed": "red", "changed": "green", "unchanged": "dim"}.get(run.outcome, "")
        table.add_row(*cells, style=style)
    counts = Counter(r.outcome for r in runs.values())
    table.caption = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    return table


async def show_progress(runs: dict[str, HostRun], out: TextIO = sys.stdout) -> None:
    """Show progress until cancelled (run it next to the work, cancel it after)."""
    if out.isatty():
        with Live(live_table(runs), console=Console(file=out), refresh_per_second=4) as live:
            try:
                while True:
                    await trio.sleep(0.25)
                    live.update(live_table(runs))
            finally:
                live.update(live_table(runs))
        return
    seen: dict[str, tuple[str, str]] = {}
    try:
        while True:
            _plain(runs, seen, out)
            await trio.sleep(0.2)
    finally:
        _plain(runs, seen, out)


def _plain(runs: dict[str, HostRun], seen: dict[str, tuple[str, str]], out: TextIO) -> None:
    for run in runs.values():
        now = (run.step, run.outcome)
        if seen.get(run.name) != now and run.state != "pending":
            seen[run.name] = now
            extra = f"  {run.reason}: {run.detail}" if run.reason else ""
            print(f"  {run.name}  {run.outcome}  {run.step}{extra}", file=out, flush=True)


def report(runs: dict[str, HostRun], began: float, verb: str) -> str:
    """The final table, the failures by reason, and ``N hosts: ...`` in one text."""
    lines = [render.table(HEADS, [_row(r) for r in runs.values()])]
    failed = [r for r in runs.values() if r.reason is not None]
    if failed:
        lines.append("")
        lines.append(f"{len(failed)} host(s) failed:")
        by_reason: dict[str, list[HostRun]] = {}
        for r in failed:
            by_reason.setdefault(str(r.reason), []).append(r)
        for reason, group in sorted(by_reason.items()):
            lines.append(f"  {reason} ({len(group)}):")
            lines += [f"    {r.name} at {r.step}: {r.detail}" for r in group]
    counts = Counter(r.outcome for r in runs.values())
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    lines.append(f"{verb} {len(runs)} host(s) in {time.monotonic() - began:.1f}s: {summary}")
    return "\n".join(lines)
