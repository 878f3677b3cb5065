"""``shoal release build``, ``release list`` and ``release show``: releases by application.

``build`` follows the build as it runs (``release.build.follow``): each build step's output
line is printed to stderr as ``[step] line`` while it comes, then the release id is the last
line on stdout. ``--json`` prints only the result (its ``log`` holds the lines).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from common.errors import RemoteError
from seeder import render

WithSeeder = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def add_commands(release: argparse._SubParsersAction, with_seeder: WithSeeder) -> None:  # type: ignore[type-arg]
    build = with_seeder(release.add_parser("build", help="build a release of an application"))
    build.add_argument("app", help="a registered application (`shoal app list`)")
    build.add_argument(
        "--ref", help="branch, tag, or full or short commit id (default: the app's branch)"
    )
    build.add_argument("--json", action="store_true")
    listing = with_seeder(release.add_parser("list", help="releases, newest first"))
    listing.add_argument("--app", help="only this application's releases")
    listing.add_argument("--limit", type=int, default=100, help="the newest N (default 100)")
    listing.add_argument("--json", action="store_true")
    show = with_seeder(release.add_parser("show", help="a release's manifest, build log, rollouts"))
    show.add_argument("release_id")
    show.add_argument("--json", action="store_true")


async def run(client: Any, args: argparse.Namespace) -> int:
    if args.action == "build":
        return await _build(client, args)
    if args.action == "list":
        params: dict[str, Any] = {"limit": args.limit} | ({"app": args.app} if args.app else {})
        rows = (await client.call("release.list", **params))["releases"]
        _emit(rows, args.json, list_text)
    else:
        _emit(await client.call("release.show", release_id=args.release_id), args.json, show_text)
    return 0


async def _build(client: Any, args: argparse.Namespace) -> int:
    params = {"app": args.app} | ({"ref": args.ref} if args.ref is not None else {})
    _, events = await client.subscribe("release.build.follow", **params)
    result: dict[str, Any] = {}
    async for event in events:
        if event.kind == "output" and not args.json:
            print(f"[{event.data['step']}] {event.data['line']}", file=sys.stderr, flush=True)
        elif event.kind == "end":
            result = dict(event.data)
    if not result.get("ok"):
        raise RemoteError(str(result.get("error_code", "")), str(result.get("error", "")))
    result.pop("ok")
    mf = result["release"]
    if args.json:
        _emit(result, True, str)
        return 0
    for warning in result.get("warnings", []):
        print(f"shoal: warning: {warning}", file=sys.stderr)
    print(
        f"{'built' if result['created'] else 'already built'}: {mf['app']} "
        f"{mf['version']} ({result['resolved']['kind']} {result['resolved']['ref']}) commit "
        f"{mf['commit'][:12]} {mf['size']} bytes infohash {mf['infohash'][:16]}"
    )
    print(mf["release_id"])
    return 0


def _live(live: dict[str, int]) -> str:
    return ", ".join(f"{env or '(no env)'}:{n}" for env, n in sorted(live.items())) or "-"


def list_text(rows: list[dict[str, Any]]) -> str:
    table = [
        [
            r["release_id"],
            r["ref"] or "-",
            r["commit"][:12],
            r["subject"][:40],
            r["author"].split(" <")[0][:20],
            _when(r["built_at"]),
            str(r["size"]),
            _live(r["live"]),
        ]
        for r in rows
    ]
    heads = ["RELEASE", "REF", "COMMIT", "SUBJECT", "AUTHOR", "BUILT", "SIZE", "LIVE"]
    return render.table(heads, table)


def show_text(result: dict[str, Any]) -> str:
    r, mf = result["release"], result["manifest"]
    out = [
        f"release {r['release_id']}",
        f"  app {r['app']}  version {r['version']}  ref {r['ref'] or '-'}",
        f"  commit {r['commit']}  {r['subject']}",
        f"  author {r['author'] or '-'}  built {_when(r['built_at'])} by {r['built_by'] or '-'}",
        f"  size {mf['size']}  digest {mf['digest']}  infohash {mf['infohash']}",
        f"  live on {_live(r['live'])}",
    ]
    build = result["build"]
    if build:
        steps = [f"{s}: {build[s]}" for s in ("before_build", "build", "after_build") if build[s]]
        out.append(f"  build settings from {build['from']}" + (": " if steps else ""))
        out += [f"    {s}" for s in steps]
    out.append("manifest:")
    out += [f"  {k}: {v}" for k, v in sorted(mf.items())]
    out.append("build log:" if result["log"] else "build log: (no build steps)")
    out += [f"  [{e['step']}] {e['line']}" for e in result["log"]]
    out.append("rollouts:" if result["rollouts"] else "rollouts: none")
    out += [
        f"  {x['rollout_id']}  {x['kind']}  {x['state']}  {x['targets']} host(s)  "
        f"{_when(x['created_at'])}"
        for x in result["rollouts"]
    ]
    return "\n".join(out)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def _emit(data: Any, as_json: bool, fmt: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if as_json else fmt(data))
