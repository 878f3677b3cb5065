"""The control-plane benchmark's report: one row per run, summarized, and the Markdown table.

Split out of :mod:`bench.control_plane` (one concept per file): the run collects what it
measured into a row (a dict, written as JSON with ``--out``); :func:`summarize` adds what the
simulated peers counted and the rollout's status document says, :func:`table` prints the rows as
bench/README.md keeps them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.bound import percentile
from bench.simpeer import SimPeer


def spread(values: list[float]) -> dict[str, float | None]:
    """The median, 99th percentile and maximum of ``values`` (each None if there are none)."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values)}


def summarize(
    row: dict[str, Any],
    sims: list[SimPeer],
    rollout_id: str,
    doc: dict[str, Any],
    t_cli: float,
    finished: bool,
    hosts: int,
) -> None:
    """Add what the peers and the status document say to ``row``, and its result."""
    created = float(doc.get("created_at") or t_cli)
    tallies = [s.tally for s in sims]
    stage = [t.stage_at[rollout_id] - created for t in tallies if rollout_id in t.stage_at]
    act = [t.activate_at[rollout_id] for t in tallies if rollout_id in t.activate_at]
    done = [t.done_at[rollout_id] for t in tallies if rollout_id in t.done_at]
    staged = [t.staged_at[rollout_id] for t in tallies if rollout_id in t.staged_at]
    # The seeder cannot activate anyone before the last host's final stage report reached it.
    staged_all = max(staged) if len(staged) == hosts else None
    row.update(
        rollout_id=rollout_id,
        state=doc.get("state"),
        received_stage=len(stage),
        received_activate=len(act),
        finished_hosts=len(done),
        stage_fanout_s=spread(stage),
        activate_fanout_s=spread([a - staged_all for a in act] if staged_all else []),
        reports_sent=sum(t.sent for t in tallies),
        reports_acked=sum(t.acked for t in tallies),
        unacked=sum(s.unacked for s in sims),
        repeats=sum(t.repeats for t in tallies),
        refused=sum(t.refused for t in tallies),
        reconnects=sum(t.reconnects for t in tallies),
        other_messages=sum(sum(t.other.values()) for t in tallies),
        errors=sorted({e for t in tallies for e in t.errors})[:5],
        seeder_steps_per_host=sorted({len(t.get("steps", [])) for t in doc.get("targets", [])}),
    )
    if finished:
        row["rollout_s"] = max(done) - created
        row["cli_to_done_s"] = max(done) - t_cli
    ok = finished and doc.get("state") == "succeeded"
    row["result"] = "ok" if ok else (
        f"state {doc.get('state')}; {len(done)}/{hosts} finished" if finished else
        f"timeout: {len(stage)}/{hosts} got Stage, {len(done)}/{hosts} finished"
    )  # fmt: skip


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


Row = dict[str, Any]
COLUMNS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("N", lambda r: str(r["hosts"])),
    ("poll s", lambda r: _fmt(r["poll_s"], "g")),
    ("register s", lambda r: _fmt(r.get("registration_s"))),
    ("idle cpu %", lambda r: _fmt(r.get("idle_cpu_pct"), ".1f")),
    ("rollout s", lambda r: _fmt(r.get("rollout_s"))),
    ("Stage p50/p99 s", lambda r: _pair(r.get("stage_fanout_s"))),
    ("Activate p50/p99 s", lambda r: _pair(r.get("activate_fanout_s"))),
    ("seeder cpu-s", lambda r: _fmt(r.get("seeder_cpu_s"), ".1f")),
    ("status s", lambda r: _fmt(r.get("status_s"), ".3f")),
    ("stall max s", lambda r: _fmt(r.get("stall_max_s"))),
    ("gen lag max s", lambda r: _fmt(r.get("generator_lag_max_s"))),
    ("poll p50/max s", lambda r: _pair(r.get("poll_latency_s"), "max") if r.get("polls") else "-"),
    ("reports/peer", lambda r: str(r.get("reports_per_peer", "-"))),
    ("gen cpu-s", lambda r: _fmt(r.get("generator_cpu_s"), ".1f")),
    ("load", lambda r: _fmt(r.get("loadavg"), ".0f")),
    ("result", lambda r: str(r["result"])),
)


def _pair(s: dict[str, float | None] | None, second: str = "p99") -> str:
    if not s or s.get("p50") is None:
        return "-"
    return f"{_fmt(s['p50'])} / {_fmt(s[second])}"


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (what bench/README.md keeps)."""
    head = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(cell(r) for _, cell in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])
