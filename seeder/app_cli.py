"""``shoal app``: register applications, change their settings, list what can be released.

``add``, ``set``, ``list``, ``show``, ``remove`` and ``refs``. A repository URL that carries a
password is refused here, before anything is sent to the seeder (credentials are the seeder's
own). Options that change an app's settings are added by :func:`add_setting_options`;
other settings (promotion rules) add theirs next to it, in ``set``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from common.errors import ShoalError
from seeder import promote_cli, render
from seeder.applications import check_repo_url

WithSeeder = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def _repo(text: str) -> str:
    try:
        return check_repo_url(text)
    except ShoalError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_setting_options(p: argparse.ArgumentParser, *, adding: bool) -> None:
    """The options of ``app add`` and ``app set`` that decide how the app is built."""
    p.add_argument(
        "--repo",
        type=_repo,
        required=adding,
        help="git URL (https://, ssh://, git@host:path, file://) or absolute path on the seeder",
    )
    p.add_argument(
        "--branch", help="the branch `app refs` lists commits of (default: the remote's default)"
    )
    p.add_argument("--subdir", help="the repository directory that is the release (default: root)")
    g = p.add_argument_group("build steps (override the repository's shoal.yml; see README)")
    g.add_argument("--before-build", metavar="CMD", help="shell command run first")
    g.add_argument("--build", metavar="CMD", help="shell command, e.g. 'npm ci && npm run build'")
    g.add_argument("--after-build", metavar="CMD", help="shell command run last")
    g.add_argument("--step-timeout", type=float, metavar="S", help="seconds per step (600)")
    g.add_argument("--include", action="append", metavar="GLOB", help="archive only these paths")
    g.add_argument("--exclude", action="append", metavar="GLOB", help="leave these paths out")


def add_commands(top: argparse._SubParsersAction, with_seeder: WithSeeder) -> None:  # type: ignore[type-arg]
    app = top.add_parser("app", help="applications the seeder builds releases of")
    sub = app.add_subparsers(dest="action", required=True)

    add = with_seeder(sub.add_parser("add", help="register an application and mirror its repo"))
    add.add_argument("name")
    add_setting_options(add, adding=True)
    add.add_argument("--json", action="store_true")

    change = with_seeder(sub.add_parser("set", help="change an application's settings"))
    change.add_argument("name")
    add_setting_options(change, adding=False)
    change.add_argument("--clear-build", action="store_true", help="drop every build setting")
    promote_cli.add_promote_options(change)
    change.add_argument("--json", action="store_true")

    with_seeder(sub.add_parser("list", help="registered applications")).add_argument(
        "--json", action="store_true"
    )
    for name, text in [("show", "one application's settings"), ("remove", "forget an app")]:
        p = with_seeder(sub.add_parser(name, help=text))
        p.add_argument("name")
        p.add_argument("--json", action="store_true")

    refs = with_seeder(sub.add_parser("refs", help="branches, tags and commits, after a fetch"))
    refs.add_argument("name")
    refs.add_argument("--branches", action="store_true", help="branches and their heads")
    refs.add_argument("--tags", action="store_true", help="tags, newest first")
    refs.add_argument("--commits", type=int, metavar="N", help="the latest N commits of --branch")
    refs.add_argument("--branch", help="whose commits (default: the app's branch)")
    refs.add_argument("--json", action="store_true")


def setting_params(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the operator gave, as the seeder's ``app.add``/``app.set`` take them."""
    params: dict[str, Any] = {"name": args.name}
    for key in ("repo", "branch", "subdir"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    build: dict[str, Any] = {}
    for key in ("before_build", "build", "after_build", "include", "exclude"):
        if getattr(args, key) is not None:
            build[key] = getattr(args, key)
    if args.step_timeout is not None:
        build["timeout"] = args.step_timeout
    if build:
        params["build"] = build
    return params


async def run(client: Any, args: argparse.Namespace) -> int:
    action = args.action
    if action == "add":
        result = await client.call("app.add", **setting_params(args))
        _emit(
            result,
            args.json,
            lambda r: (
                f"{'added' if r['created'] else 'unchanged'}: " + show_text({"app": r["app"]})
            ),
        )
    elif action == "set" and promote_cli.wants_rules(args):
        return await promote_cli.app_set(client, args, setting_params(args))
    elif action == "set":
        params = setting_params(args)
        if args.clear_build:
            params["clear_build"] = True
        result = await client.call("app.set", **params)
        _emit(result, args.json, lambda r: show_text({"app": r["app"]}))
    elif action == "list":
        apps = (await client.call("app.list"))["apps"]
        _emit(apps, args.json, list_text)
    elif action == "show":
        _emit(await client.call("app.show", name=args.name), args.json, show_text)
    elif action == "remove":
        result = await client.call("app.remove", name=args.name)
        _emit(result, args.json, lambda r: f"removed {r['removed']} (its releases are kept)")
    else:
        params = {"name": args.name}
        wanted = [w for w in ("branches", "tags") if getattr(args, w)]
        if args.commits is not None:
            wanted.append("commits")
            params["commits"] = args.commits
        if args.branch:
            params["branch"] = args.branch
        result = await client.call("app.refs", **params)
        shown = wanted or ["branches", "tags", "commits"]
        if args.json:
            keep = {*shown, *(f"{k}_total" for k in shown), "app", "branch"}
            _emit({k: v for k, v in result.items() if k in keep}, True, str)
        else:
            print(refs_text(result, shown))
    return 0


def list_text(apps: list[dict[str, Any]]) -> str:
    rows = [[a["name"], a["repo"], a["branch"], a["subdir"] or "."] for a in apps]
    return render.table(["APP", "REPO", "BRANCH", "SUBDIR"], rows)


def show_text(result: dict[str, Any]) -> str:
    a = result["app"]
    build = a["build"]
    lines = [f"{a['name']}: {a['repo']} branch {a['branch']} subdir {a['subdir'] or '.'}"]
    steps = [s for s in ("before_build", "build", "after_build") if build[s]]
    lines += [f"  {step}: {build[step]}" for step in steps]
    if steps:
        lines.append(f"  step timeout: {build['timeout']:g}s")
    lines += [f"  {key}: {', '.join(build[key])}" for key in ("include", "exclude") if build[key]]
    if len(lines) == 1:
        lines.append("  build settings: from the repository's shoal.yml, if it has one")
    if "releases" in result:
        lines.append(f"  releases: {len(result['releases'])}")
    if "promote" in result:
        lines.append(f"  {promote_cli.rules_text(result['promote'])}")
    return "\n".join(lines)


def refs_text(result: dict[str, Any], shown: list[str]) -> str:
    def row(name: str, e: dict[str, Any], when: float) -> list[str]:
        released = ", ".join(e.get("releases", [])) or "-"
        return [name, e["short"], _when(when), e["subject"][:50], released]

    out = []
    if "branches" in shown:
        rows = [row(b["name"], b, b["committed_at"]) for b in result["branches"]]
        out.append(render.table(["BRANCH", "COMMIT", "DATE", "SUBJECT", "RELEASES"], rows))
    if "tags" in shown:
        rows = [row(t["name"], t, t["tagged_at"]) for t in result["tags"]]
        out.append(render.table(["TAG", "COMMIT", "DATE", "SUBJECT", "RELEASES"], rows))
    if "commits" in shown:
        rows = [[c["short"], c["author"][:20], *row("", c, c["authored_at"])[2:]]
                for c in result["commits"]]  # fmt: skip
        heads = ["COMMIT", "AUTHOR", "DATE", "SUBJECT", "RELEASES"]
        out.append(f"latest commits of {result['branch']}:\n" + render.table(heads, rows))
    return "\n\n".join(out)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts else "-"


def _emit(data: Any, as_json: bool, fmt: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if as_json else fmt(data))
