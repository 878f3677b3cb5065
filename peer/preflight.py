"""Preflight on a host: could this release be staged and activated here? Changes nothing.

Answers the seeder's :class:`~common.messages.Preflight` with one :class:`~common.preflight.Check`
per item, in four kinds:

- ``disk``: free space on the data directory against what staging needs (the download plus the
  unpacked tree; nothing for a release that is already staged).
- ``hooks``: every hook script of the new release exists and is executable (the staged copy when
  there is one, else the archive's facts the seeder sent), and its ``#!`` interpreter exists
  here; and the hooks of the live release that will run first (block traffic, stop) are usable.
- ``runas``: every ``runas`` user exists, the peer may switch to it, and it can reach the
  release directories (no parent closed to it).
- ``files``: every ``files`` destination is a writable directory, or could be created.

The checks are plain blocking functions of a directory layout (tested with a temp dir); the
async shell runs them in a worker thread and queues the answer for the seeder.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from pathlib import Path

import trio

from common import messages as m
from common.appspec import PREVIOUS_RELEASE_EVENTS, load_appspec
from common.errors import RemoteProtocolError, ShoalError
from common.preflight import Check, HookFacts, ReleaseFacts, interpreter_line
from peer.context import PeerContext
from peer.hooks import script_problem
from peer.layout import Layout
from peer.runas import reach_problem, runas_problem

log = logging.getLogger("shoal.peer.preflight")


async def preflight(ctx: PeerContext, cmd: m.Preflight) -> None:
    try:
        facts = ReleaseFacts.from_dict(cmd.release)
    except RemoteProtocolError as exc:
        checks = [Check("request", False, f"the seeder's request is malformed: {exc}")]
    else:
        staged = ctx.journal.release(facts.release_id) is not None
        try:
            checks = await trio.to_thread.run_sync(run_checks, facts, ctx.layout, staged)
        except (OSError, ShoalError) as exc:  # one bad check must not take the daemon down
            log.exception("preflight %s failed", cmd.check_id)
            checks = [Check("request", False, f"the checks failed on this host: {exc}")]
    ctx.replies.send_nowait(
        m.PreflightResult(
            check_id=cmd.check_id, host=ctx.name, checks=[c.to_dict() for c in checks]
        )
    )


def run_checks(facts: ReleaseFacts, layout: Layout, staged: bool) -> list[Check]:
    """Every check for ``facts`` on the host laid out at ``layout``, changing nothing."""
    new_dir = layout.release_dir(facts.release_id)
    staged = staged and new_dir.is_dir()
    hooks = hook_checks(facts.hooks, new_dir if staged else None)
    live, live_users = live_hook_checks(layout, facts.release_id)
    users = [h.runas for h in facts.hooks if h.runas] + live_users
    return [
        disk_check(facts, layout, staged),
        *(hooks + live or [Check("hooks", True, "the release has no hooks")]),
        *runas_checks(users, layout.release_dir(facts.release_id).parent),
        *file_checks(facts.destinations),
    ]


def disk_check(facts: ReleaseFacts, layout: Layout, staged: bool) -> Check:
    if staged:
        return Check("disk", True, f"{facts.release_id} is already staged: needs nothing")
    archive = layout.download_dir(facts.release_id) / str(facts.manifest.get("archive", ""))
    # A partial download counts by the blocks it holds: a preallocated file is sparse.
    have = archive.stat().st_blocks * 512 if archive.is_file() else 0
    download = facts.download_size - min(have, facts.download_size)
    needed = download + facts.unpacked_size
    try:
        free = shutil.disk_usage(layout.root).free
    except OSError as exc:
        return Check("disk", False, f"cannot read free space of {layout.root}: {exc.strerror}")
    verdict = "enough" if free >= needed else "not enough"
    return Check(
        "disk",
        free >= needed,
        f"{verdict}: needs {_size(needed)} (download {_size(download)} + unpacked "
        f"{_size(facts.unpacked_size)}), {_size(free)} free in {layout.root}",
    )


def hook_checks(hooks: tuple[HookFacts, ...], staged_dir: Path | None) -> list[Check]:
    """The new release's scripts: on disk when staged, else as the archive holds them."""
    out = []
    for hook in hooks:
        name = f"{hook.event}: {hook.location}"
        if staged_dir is not None:
            problem = script_problem(staged_dir / hook.location)
            interpreter = _interpreter_of(staged_dir / hook.location)
        else:
            problem = _archive_problem(hook)
            interpreter = hook.interpreter
        if problem is None and interpreter:
            problem = interpreter_problem(interpreter)
        out.append(Check("hooks", problem is None, f"{name} {problem or 'is ready'}"))
    return out


def live_hook_checks(layout: Layout, new_release: str) -> tuple[list[Check], list[str]]:
    """The live release's own block-traffic and stop hooks, which run first; and their users."""
    current = layout.current()
    if current is None or current == new_release:
        return [], []
    live_dir = layout.release_dir(current)
    try:
        spec = load_appspec(live_dir)
    except ShoalError as exc:
        return [
            Check("hooks", False, f"live release {current}: its hooks would not run: {exc}")
        ], []
    out, users = [], []
    for event in PREVIOUS_RELEASE_EVENTS:
        for hook in spec.hooks.get(event, ()):
            script = live_dir / hook.location
            problem = script_problem(script)
            interpreter = _interpreter_of(script) if problem is None else ""
            problem = problem or (interpreter_problem(interpreter) if interpreter else None)
            detail = f"live release {current} {event}: {hook.location} {problem or 'is ready'}"
            out.append(Check("hooks", problem is None, detail))
            if hook.runas:
                users.append(hook.runas)
    return out, users


def runas_checks(users: list[str], releases: Path | None = None) -> list[Check]:
    """Each user exists, may be switched to, and (given ``releases``) can reach that directory."""
    if not users:
        return [Check("runas", True, "no hook sets runas")]
    out = []
    for user in dict.fromkeys(users):
        problem = runas_problem(user)
        if problem is None and releases is not None:
            problem = reach_problem(releases, user)
        out.append(Check("runas", problem is None, problem or f"user {user!r} is usable"))
    return out


def file_checks(destinations: tuple[str, ...]) -> list[Check]:
    if not destinations:
        return [Check("files", True, "the release installs no files")]
    return [_destination_check(d) for d in dict.fromkeys(destinations)]


def _destination_check(destination: str) -> Check:
    try:
        return _probe_destination(destination)
    except OSError as exc:
        return Check("files", False, f"{destination} cannot be checked: {exc.strerror or exc}")


def _probe_destination(destination: str) -> Check:
    path = Path(destination)
    probe = path
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():
            return Check("files", False, f"{destination}: {probe} is a dangling symlink")
        probe = probe.parent
    if not probe.is_dir():
        return Check("files", False, f"{destination}: {probe} exists and is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = (
            "is not writable" if probe == path else f"cannot be created ({probe} is not writable)"
        )
        return Check("files", False, f"{destination} {what} by this peer")
    verdict = "is writable" if probe == path else f"can be created (in {probe})"
    return Check("files", True, f"{destination} {verdict}")


def interpreter_problem(line: str) -> str | None:
    """Why the ``#!`` line's interpreter (``/usr/bin/env NAME`` looked up on PATH) is missing."""
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    if not words:
        return None
    program = words[0]
    if not os.access(program, os.X_OK) or not os.path.isfile(program):
        return f"needs the interpreter {program}, which is not installed here"
    if os.path.basename(program) == "env":
        args = [w for w in words[1:] if not w.startswith("-")]
        if args and shutil.which(args[0]) is None:
            return f"needs {args[0]} (via {program}), which is not on PATH here"
    return None


def _archive_problem(hook: HookFacts) -> str | None:
    if not hook.present:
        return "is not a file in the release"
    if not hook.executable:
        return "is not executable in the release archive (no x permission)"
    return None


def _interpreter_of(script: Path) -> str:
    try:
        with script.open("rb") as f:
            head = f.readline(256)
    except OSError:
        return ""
    return interpreter_line(head)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
