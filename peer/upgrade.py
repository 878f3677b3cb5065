"""Activating a shoal upgrade release: shoal ships shoal.

An upgrade release (manifest ``kind: shoal``) holds a wheelhouse instead of an app. Activating it
runs these steps, journaled and reported like hooks:

- ``ShoalInstall``: install the version from the release's wheels into ``PREFIX/versions/<v>/``;
- ``ShoalCheck``: the new version's ``shoal-peer version`` runs and names itself (a version that
  cannot even import is refused here, before anything switched);
- ``ShoalSwitch``: write the plan (``PREFIX/upgrade.json``), switch ``PREFIX/current``;
- ``ShoalRestart``: close every session cleanly and restart into ``current`` (see
  :mod:`peer.restart`). The *new* daemon reports it ``succeeded``, and the activation with it, once
  it is connected to the seeder; if it never gets there the launcher rolls back and the *old*
  daemon, started again, reports both ``failed`` with the launcher's reason.

The journal, unsent reports, staged releases and their seeding live in the data directory, which
both versions share: the restarted daemon re-sends what was not acknowledged and seeds again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from common import messages as m
from common.install_layout import installed_manifest
from peer import launcher
from peer.context import PeerContext
from peer.prefix import Prefix, UpgradeError, running_install_id, running_version

log = logging.getLogger("shoal.peer.upgrade")

HEALTH_TIMEOUT = 120.0  # seconds a new version has to connect to the seeder
MAX_STARTS = 3  # failed starts of a new version before the launcher rolls back
WHEELS = "wheels"  # the wheelhouse's directory inside an upgrade release
META = "shoal-upgrade.json"  # its description: version, install_id, wheels (name -> sha256)


def is_upgrade(manifest: dict[str, Any]) -> bool:
    return manifest.get("kind") == "shoal"


async def activate_upgrade(ctx: PeerContext, cmd: m.Activate, manifest: dict[str, Any]) -> None:
    """The upgrade's activation (the caller has reported ``activate`` running)."""
    rollout, attempt = cmd.rollout_id, cmd.attempt

    def report(step: str, state: str, detail: str = "", result: str = "") -> None:
        ctx.reporter.step(
            rollout, step, state, attempt=attempt, detail=detail, result=result or state
        )

    version = str(manifest["version"])
    step = "ShoalInstall"
    release_dir = ctx.layout.release_dir(cmd.release_id)
    try:
        meta = _read_meta(release_dir)
        new_id = str(meta["install_id"])
        if ctx.prefix is None:
            raise UpgradeError(
                "this peer does not run from a shoal install prefix (PREFIX/versions/<version>/"
                " and PREFIX/current): start it with --prefix, or install it with"
                " `shoal fleet install`"
            )
        prefix = Prefix(ctx.prefix)
        prefix.check_layout()
        now = running_version()
        if running_install_id() == new_id and prefix.current() == new_id:
            for skipped in ("ShoalInstall", "ShoalCheck", "ShoalSwitch", "ShoalRestart"):
                report(skipped, "succeeded", f"already running shoal {version}", "skipped")
            report("activate", "succeeded", f"already running shoal {version}")
            return
        report(step, "running", f"shoal {now} -> {version}")
        marker = installed_manifest(dict(meta["wheels"]))
        done = await prefix.install(new_id, version, release_dir / WHEELS, marker)
        report(step, "succeeded", done, "succeeded")
        step = "ShoalCheck"
        report(step, "running")
        report(step, "succeeded", await prefix.check(new_id, version), "succeeded")
        step = "ShoalSwitch"
        report(step, "running")
        prefix.install_launcher()
        previous = prefix.current() or running_install_id()
        if previous is None or not prefix.installed(previous):
            raise UpgradeError(
                f"no installed version to come back to ({prefix.root}/current names none)"
            )
        plan = {
            "rollout_id": rollout,
            "attempt": attempt,
            "release_id": cmd.release_id,
            "from_version": previous,
            "to_version": new_id,
            "package_version": version,
            "health_timeout": ctx.upgrade_timeout,
            "max_starts": MAX_STARTS,
            "at": time.time(),
        }
        _clear(prefix.root)
        launcher.write_json(prefix.root / launcher.PLAN, plan)
        prefix.switch(new_id)
    except (UpgradeError, OSError, KeyError, TypeError, ValueError) as exc:
        detail = f"{step}: {exc}"
        report(step, "failed", detail, "failed")
        report("activate", "failed", detail, "failed")
        return
    report(step, "succeeded", f"current -> versions/{new_id} (was {previous})", "succeeded")
    report("ShoalRestart", "running", f"restarting into shoal {version} (pid {os.getpid()})")
    log.warning("shoal %s installed and switched to; restarting into it", version)
    ctx.restart.request(version)


def pending_rollouts(prefix: Path | None) -> set[tuple[str, int]]:
    """The (rollout, attempt) of an upgrade still in flight: its steps are not 'interrupted'
    (this module reports them once the outcome is known)."""
    if prefix is None:
        return set()
    plan = launcher.read_json(prefix / launcher.PLAN)
    if plan is None:
        return set()
    return {(str(plan.get("rollout_id")), int(plan.get("attempt", 1)))}


def recover(ctx: PeerContext) -> None:
    """At start-up: report an upgrade the launcher rolled back, or one that never restarted."""
    if ctx.prefix is None:
        return
    root = ctx.prefix
    plan = launcher.read_json(root / launcher.PLAN)
    if plan is None:
        return
    me = running_install_id()
    if _is_new(plan):
        return  # the new version: it reports once connected (connected() below)
    result = launcher.read_json(root / launcher.RESULT)
    if result is not None:
        reason = str(result.get("reason", "the new version did not come back"))
    else:
        # The old version runs again without a rollback: it stopped before the restart.
        reason = f"the peer stopped before it restarted into shoal {plan.get('to_version')}"
        current = launcher.current_version(root)
        if me is not None and current != me and (root / "versions" / me).is_dir():
            launcher.switch_current(root, me)
    _finish(ctx, plan, "failed", f"ShoalRestart: {reason}", result="rolled_back")
    log.error("upgrade to shoal %s failed: %s", plan.get("to_version"), reason)


def connected(ctx: PeerContext) -> None:
    """Connected to the seeder: a new version in flight is healthy; it reports the upgrade."""
    if ctx.prefix is None:
        return
    root = ctx.prefix
    plan = launcher.read_json(root / launcher.PLAN)
    if plan is None or not _is_new(plan):
        return
    launcher.write_json(root / launcher.HEALTHY, {"version": running_version(), "pid": os.getpid()})
    detail = (
        f"now running shoal {running_version()} from versions/{plan['to_version']}"
        f" (was {plan.get('from_version')})"
    )
    _finish(ctx, plan, "succeeded", detail, result="succeeded")
    log.info("upgrade done: %s", detail)


def _is_new(plan: dict[str, Any]) -> bool:
    """Whether this process is the version the plan upgrades to."""
    me = running_install_id()
    if me is not None:
        return me == plan.get("to_version")
    return running_version() == plan.get("package_version")


def _read_meta(release_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((release_dir / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UpgradeError(f"the release has no readable {META}: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("wheels"), dict):
        raise UpgradeError(f"the release's {META} is malformed")
    return meta


def _finish(ctx: PeerContext, plan: dict[str, Any], state: str, detail: str, result: str) -> None:
    rollout, attempt = str(plan["rollout_id"]), int(plan.get("attempt", 1))
    for step in ("ShoalRestart", "activate"):
        ctx.reporter.step(rollout, step, state, attempt=attempt, result=result, detail=detail)
    assert ctx.prefix is not None
    _clear(ctx.prefix)


def _clear(root: Path) -> None:
    for name in (launcher.PLAN, launcher.HEALTHY, launcher.RESULT):
        (root / name).unlink(missing_ok=True)
