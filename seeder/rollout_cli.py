"""The ``shoal rollout`` and ``shoal rollback`` commands: options, requests, and their output.

``rollout start`` (in :mod:`seeder.cli`, which follows it with ``--wait``), ``plan``, ``pause``,
``resume``, ``abort``, ``list``, ``show`` and ``status`` here, and ``rollback``. Wave options are
parsed and checked by the seeder (:mod:`seeder.waves`), so ``plan`` and ``start`` agree exactly.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from seeder import promote_cli, render

WithSeeder = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]

WAVE_OPTIONS = (
    "waves",
    "max_failures",
    "wave_max_failures",
    "concurrency",
    "bake",
    "gate",
    "gate_timeout",
    "spread",
    "auto_rollback",
    "min_staged",
    "stage_timeout",
    "activate_timeout",
)


def add_wave_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("waves (see README: Rollouts)")
    g.add_argument("--hosts", default="all", help="all | NAME,NAME | LABEL=VALUE[,LABEL=VALUE]")
    g.add_argument("--waves", help="cumulative shares, e.g. 1,10%%,50%%,100%% (the default)")
    g.add_argument("--max-failures", help="failed hosts allowed in the whole rollout: N or P%% (0)")
    g.add_argument("--wave-max-failures", help="failed hosts allowed per wave: N or P%%")
    g.add_argument("--concurrency", type=int, help="at most N hosts activating at once")
    g.add_argument("--bake", type=float, help="seconds to wait after each wave (0)")
    g.add_argument("--gate", help="shell command run on the seeder after each bake; 0 = go on")
    g.add_argument("--gate-timeout", type=float, help="seconds before the gate is killed (600)")
    g.add_argument("--spread", metavar="LABEL", help="spread every wave over this label's values")
    g.add_argument(
        "--auto-rollback",
        action="store_true",
        default=None,
        help="on a halt, take the switched hosts back to their previous release",
    )
    g.add_argument("--min-staged", help="share staged before wave 1 starts: P%% (100%%)")
    g.add_argument("--stage-timeout", type=float, help="seconds for every target to stage (1800)")
    g.add_argument("--activate-timeout", type=float, help="seconds per host activation (3600)")


def wave_params(args: argparse.Namespace) -> dict[str, Any]:
    """The wave options the operator gave (the seeder fills in the defaults)."""
    given = (*WAVE_OPTIONS, "force")  # --force: past promotion rules (seeder.promote_cli)
    return {name: getattr(args, name) for name in given if getattr(args, name, None) is not None}


def add_commands(
    rollout: argparse._SubParsersAction,  # type: ignore[type-arg]
    top: argparse._SubParsersAction,  # type: ignore[type-arg]
    with_seeder: WithSeeder,
) -> argparse.ArgumentParser:
    """Add every rollout subcommand but ``start``'s --wait handling; returns ``start``."""
    start = with_seeder(rollout.add_parser("start", help="roll a release out, in waves"))
    start.add_argument("release_id")
    add_wave_options(start)
    promote_cli.add_force(start)
    start.add_argument("--json", action="store_true", help="print the new rollout as JSON")

    plan = with_seeder(rollout.add_parser("plan", help="show the waves a start would run"))
    plan.add_argument("release_id")
    add_wave_options(plan)
    promote_cli.add_force(plan)
    plan.add_argument("--json", action="store_true")

    for action, text in [
        ("pause", "start no new activations until resumed"),
        ("resume", "continue a paused rollout"),
        ("abort", "stop a rollout: running hooks finish (or are killed with --now)"),
    ]:
        p = with_seeder(rollout.add_parser(action, help=text))
        p.add_argument("rollout_id")
        if action == "abort":
            p.add_argument("--now", action="store_true", help="kill running hooks too")
        p.add_argument("--json", action="store_true")

    listing = with_seeder(rollout.add_parser("list", help="recent rollouts, newest first"))
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")

    for name, text in [
        ("show", "a rollout's waves, hosts and timeline"),
        ("status", "a rollout's hosts (default: the latest rollout)"),
    ]:
        p = with_seeder(rollout.add_parser(name, help=text))
        p.add_argument("rollout_id", nargs="?" if name == "status" else None)
        p.add_argument("--json", action="store_true")
        if name == "show":
            p.add_argument("--timeline", type=int, default=1000, help="last N timeline entries")

    back = with_seeder(
        top.add_parser("rollback", help="re-activate each host's previous release, in waves")
    )
    back.add_argument("--to", metavar="RELEASE_ID", help="this release instead of the previous")
    add_wave_options(back)
    promote_cli.add_force(back)
    back.add_argument("--wait", action="store_true", help="follow it until it ends")
    back.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits")
    back.add_argument("--json", action="store_true")
    return start


async def run(client: Any, args: argparse.Namespace) -> int | None:
    """Run a rollout/rollback command; None if it is ``start`` (the caller handles it)."""
    if args.command == "rollback":
        r = (
            await client.call("rollback.start", hosts=args.hosts, to=args.to, **wave_params(args))
        )["rollout"]
        if args.json and not args.wait:
            _emit(r, True, str)
            return 0
        print(f"rollback {r['rollout_id']} started on {len(r['targets'])} host(s)", flush=True)
        print(plan_text(r) + verdict_suffix(r))
        if not args.wait:
            print(r["rollout_id"])
            return 0
        args.started_id = r["rollout_id"]
        return None
    action = args.action
    if action == "start":
        return None
    if action == "plan":
        result = await client.call(
            "rollout.plan", release_id=args.release_id, hosts=args.hosts, **wave_params(args)
        )
        _emit(result["plan"], args.json, lambda p: plan_text(p) + verdict_suffix(p, planned=True))
    elif action in ("pause", "resume", "abort"):
        params: dict[str, Any] = {"rollout_id": args.rollout_id}
        if action == "abort":
            params["now"] = args.now
        r = (await client.call(f"rollout.{action}", **params))["rollout"]
        _emit(r, args.json, lambda r: f"rollout {r['rollout_id']} {r['state']}")
    elif action == "list":
        items = (await client.call("rollout.list", limit=args.limit))["rollouts"]
        _emit(items, args.json, list_text)
    elif action == "show":
        r = (
            await client.call(
                "rollout.show", rollout_id=args.rollout_id, timeline_limit=args.timeline
            )
        )["rollout"]
        _emit(r, args.json, show_text)
    else:
        r = (await client.call("rollout.status", rollout_id=args.rollout_id))["rollout"]
        _emit(r, args.json, render.rollout)
    return 0


def plan_text(p: dict[str, Any]) -> str:
    lines = []
    for wave in p["waves"]:
        hosts = wave["hosts"]
        shown = ", ".join(hosts[:8]) + (f" and {len(hosts) - 8} more" if len(hosts) > 8 else "")
        lines.append(f"wave {wave['index']}: {len(hosts)} host(s): {shown}")
    budget = p.get("budget", p)
    lines.append(
        f"failure budget: {budget['max_failures']} host(s) in all"
        + (
            f", per wave {budget['wave_max_failures']}"
            if any(b is not None for b in budget["wave_max_failures"])
            else ""
        )
        + f"; wave 1 starts once {budget['min_staged']} host(s) are staged"
    )
    return "\n".join(lines)


def list_text(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["rollout_id"],
            r["kind"],
            r["release_id"],
            r["state"],
            r.get("forced_by") or "-",
            str(r["targets"]),
            str(r["waves"]),
            _when(r["created_at"]),
            r["error"][:60],
        ]
        for r in items
    ]
    heads = [
        *("ROLLOUT", "KIND", "RELEASE", "STATE", "FORCED BY"),
        *("HOSTS", "WAVES", "STARTED", "ERROR"),
    ]
    return render.table(heads, rows)


def show_text(r: dict[str, Any]) -> str:
    out = [render.rollout(r), "", plan_text(r) + verdict_suffix(r), "", "timeline:"]
    for e in r["timeline"]:
        data = {k: v for k, v in e.items() if k not in ("seq", "at", "kind", "output")}
        text = " ".join(f"{k}={v}" for k, v in data.items() if v not in ("", None, []))
        out.append(f"  {_when(e['at'])}  {e['kind']:<8} {text}")
    return "\n".join(out)


def verdict_suffix(r: dict[str, Any], *, planned: bool = False) -> str:
    text = promote_cli.verdict_text(r.get("promotion"), planned=planned)
    return "\n" + text if text else ""


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def _emit(data: Any, as_json: bool, fmt: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if as_json else fmt(data))
