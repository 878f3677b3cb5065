"""The CLI of environments and promotion: ``shoal app set NAME --promote FROM:TO``, ``--force``
on ``rollout start``/``plan`` and ``rollback``, the promotion verdict in their output, and
``shoal hosts --env E``.

``--promote`` *replaces* the app's rules with exactly the ones given (all ``--promote`` options
together, each a comma-separated list), so what an operator types is what holds; ``--promote ''``
clears them. ``--no-promote FROM:TO`` removes single rules and keeps the others.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

WithSeeder = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force",
        action="store_true",
        default=None,
        help="go ahead even where a promotion rule is not met (recorded with who you are)",
    )


def add_promote_options(p: argparse.ArgumentParser) -> None:
    """The promotion options of ``shoal app set`` (:mod:`seeder.app_cli`)."""
    g = p.add_argument_group("promotion rules (see README: Environments and promotion)")
    g.add_argument(
        "--promote",
        action="append",
        metavar="FROM:TO[,FROM:TO]",
        help="the app's promotion rules, replacing the old ones: a release must succeed on FROM"
        " before it rolls out to TO (repeatable; '' clears them)",
    )
    g.add_argument(
        "--no-promote",
        action="append",
        metavar="FROM:TO",
        help="remove this rule, keep the others (repeatable)",
    )


def wants_rules(args: argparse.Namespace) -> bool:
    return args.promote is not None or args.no_promote is not None


def add_env_commands(top: argparse._SubParsersAction, with_seeder: WithSeeder) -> None:  # type: ignore[type-arg]
    env = top.add_parser("env", help="environments: hosts by env label, and promotion rules")
    sub = env.add_subparsers(dest="action", required=True)
    listing = with_seeder(sub.add_parser("list", help="every env: hosts, live releases, rules"))
    listing.add_argument("--json", action="store_true")


async def env_list(client: Any, args: argparse.Namespace) -> int:
    envs = (await client.call("env.list"))["envs"]
    _emit(envs, args.json, envs_text)
    return 0


def envs_text(envs: list[dict[str, Any]]) -> str:
    from seeder.render import table

    rows = []
    for e in envs:
        live = ", ".join(f"{rel} ({n})" for rel, n in e["releases"].items())
        rules = ", ".join(f"{r['app']}:{r['rule']}" for r in e["rules_in"])
        rows.append(
            [
                e["env"] or "(none)",
                str(len(e["hosts"])),
                str(e["connected"]),
                live or "-",
                rules or "-",
            ]
        )
    return table(["ENV", "HOSTS", "UP", "LIVE (HOSTS)", "RULES INTO IT (APP:FROM:TO)"], rows)


def add_env_filter(hosts: argparse.ArgumentParser) -> None:
    hosts.add_argument("--env", help="only the hosts whose env label is ENV ('': no env label)")


def env_filter(args: argparse.Namespace) -> dict[str, Any]:
    return {} if args.env is None else {"env": args.env}


async def app_set(client: Any, args: argparse.Namespace, settings: dict[str, Any]) -> int:
    """``app set NAME --promote ...`` / ``--no-promote ...``: one request, nothing else changed
    (``settings``: the app's other options given, refused alongside rules)."""
    from common.errors import ConfigError

    if any(k != "name" for k in settings) or args.clear_build:
        raise ConfigError(
            "app set: change promotion rules in a command of their own, not together with the"
            " app's other settings"
        )
    if args.promote is not None and args.no_promote is not None:
        raise ConfigError("app set: --promote replaces every rule; do not combine --no-promote")
    if args.promote is not None:
        params: dict[str, Any] = {"promote": list(args.promote)}
    else:
        params = {"remove": list(args.no_promote)}
    view = await client.call("app.promotion.set", app=args.name, **params)
    _emit(view, args.json, lambda v: f"app {v['app']}: {rules_text(v['promote'])}")
    return 0


def rules_text(rules: list[str]) -> str:
    if not rules:
        return "no promotion rules"
    return "promotion rules " + ", ".join(rules)


def verdict_text(promotion: dict[str, Any] | None, *, planned: bool = False) -> str:
    """The promotion lines of ``rollout plan``/``start``/``show`` ("" where no rule applied)."""
    if not promotion or not promotion.get("checks"):
        return ""
    if promotion["ok"]:
        head = "promotion: allowed"
    elif promotion.get("forced") and planned:
        head = "promotion: --force would override rule(s) " + ", ".join(promotion["overridden"])
    elif promotion.get("forced"):
        head = (
            f"promotion: FORCED by {promotion['by']} ({promotion['role']}) over rule(s) "
            + ", ".join(promotion["overridden"])
        )
    else:
        head = "promotion: REFUSED (--force overrides it)"
    lines = [head]
    for c in promotion["checks"]:
        mark = "ok" if c["ok"] else "NOT MET"
        lines.append(f"  rule {c['rule']} (app {promotion['app']}): {mark}: {c['reason']}")
    return "\n".join(lines)


def _emit(data: Any, as_json: bool, fmt: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if as_json else fmt(data))
