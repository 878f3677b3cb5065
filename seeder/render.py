"""Human-readable output of the CLI: host tables, rollout results, progress lines."""

from __future__ import annotations

import time
from typing import Any


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def hosts(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            h["name"],
            h.get("env") or "-",
            h["address"],
            "up" if h["connected"] else "down",
            h["current"] or "-",
            h.get("version") or "-",
            h["state"] or "-",
            h["step"] or "-",
            ",".join(f"{k}={v}" for k, v in sorted(h["labels"].items())) or "-",
            _ago(h["last_seen"]),
            h["error"] or "",
        ]
        for h in items
    ]
    heads = [
        "HOST",
        "ENV",
        "ADDRESS",
        "LINK",
        "CURRENT",
        "SHOAL",
        "STATE",
        "STEP",
        "LABELS",
        "SEEN",
        "ERROR",
    ]
    return table(heads, rows)


def rollout(r: dict[str, Any]) -> str:
    head = f"rollout {r['rollout_id']}  release {r['release_id']}  state {r['state']}"
    if r["error"]:
        head += f"\n  {r['error']}"
    rows = [
        [
            t["host"],
            t["state"],
            t["step"] or "-",
            " ".join(f"{k}={v}" for k, v in t["exit_codes"].items()) or "-",
            t["error"] or "",
        ]
        for t in r["targets"]
    ]
    out = head + "\n" + table(["HOST", "STATE", "STEP", "EXIT CODES", "ERROR"], rows)
    for t in r["targets"]:
        if t["output"]:
            out += f"\n--- last output of {t['host']} ---\n" + "\n".join(t["output"][-10:])
    return out


def summary(r: dict[str, Any], elapsed: float) -> str:
    counts: dict[str, int] = {}
    for t in r["targets"]:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return f"rollout {r['rollout_id']} {r['state']}: {parts} in {elapsed:.1f}s"


def progress_line(host: str, state: str, step: str) -> str:
    return f"  {host:<20} {state:<11} {step}"


PREFLIGHT_CHECKS = ("disk", "hooks", "runas", "files")


def preflight(result: dict[str, Any]) -> str:
    """One row per host (each kind of check: ok, FAIL, or - when not answered), then problems."""
    rows, problems = [], []
    for h in result["hosts"]:
        kinds = []
        for kind in PREFLIGHT_CHECKS:
            mine = [c for c in h["checks"] if c.get("check") == kind]
            kinds.append("-" if not mine else "ok" if all(c.get("ok") for c in mine) else "FAIL")
        rows.append([h["host"], h["status"], *kinds])
        failed = [c for c in h["checks"] if not c.get("ok")]
        problems += [f"  {h['host']}: {c.get('check')}: {c.get('detail')}" for c in failed]
        if not h["checks"]:
            problems.append(f"  {h['host']}: {h['detail']}")
    heads = ["HOST", "STATUS", *(k.upper() for k in PREFLIGHT_CHECKS)]
    ready = sum(1 for h in result["hosts"] if h["ok"])
    out = table(heads, rows) + f"\n{ready} of {len(rows)} host(s) ready for {result['release_id']}"
    return out + ("\nproblems:\n" + "\n".join(problems) if problems else "")


def _ago(ts: float) -> str:
    if not ts:
        return "-"
    secs = max(0.0, time.time() - ts)
    return f"{secs:.0f}s ago" if secs < 120 else f"{secs / 60:.0f}m ago"
