"""Activating a staged release: the CodeDeploy lifecycle, then ``current`` points at it.

Order, as in CodeDeploy: ``BeforeBlockTraffic`` → ``AfterBlockTraffic`` → ``ApplicationStop``
(these three are the *previous* release's hooks: the live release leaves traffic and stops
itself) → ``BeforeInstall`` → ``Install`` (copy ``files``, apply ``permissions``, switch
``current``) → ``AfterInstall`` → ``ApplicationStart`` → ``ValidateService`` →
``BeforeAllowTraffic`` → ``AfterAllowTraffic``. The first failure stops the sequence; if
``current`` had already switched it is switched back, so ``current`` only ever names a release
that was fully activated. Every event is reported, including events without hooks (``skipped``).

An aborted rollout starts no new activation here (reported as ``aborted``); an abort with kill
also stops the running one: its hook is killed and the activation fails as ``killed``.

Activations are journaled: a repeated Activate for the same (rollout, attempt) reports the
recorded outcome again instead of running hooks twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import trio

from common import messages as m
from common.appspec import PREVIOUS_RELEASE_EVENTS, AppSpec, load_appspec
from common.errors import ShoalError
from peer.context import PeerContext
from peer.hooks import HookOutcome, run_hook
from peer.install import apply_files, apply_permissions
from peer.retention import prune_releases
from peer.upgrade import activate_upgrade, is_upgrade, pending_rollouts

log = logging.getLogger("shoal.peer.lifecycle")

FINAL = ("succeeded", "failed")
AFTER_INSTALL = (
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
)
PASSED_ENV = ("LANG", "LC_ALL", "TZ")  # PATH, HOME and the user's identity: peer.hooks


class StepFailed(Exception):
    def __init__(self, step: str, detail: str, result: str = "failed") -> None:
        super().__init__(detail)
        self.step = step
        self.result = result  # the activation's typed result: "failed" or "killed"


async def activate(ctx: PeerContext, cmd: m.Activate) -> None:
    async with ctx.activation_lock:
        prior = ctx.journal.step(cmd.rollout_id, "activate", cmd.attempt)
        if prior is not None and prior.state in FINAL:
            ctx.reporter.step(
                cmd.rollout_id,
                "activate",
                prior.state,
                attempt=cmd.attempt,
                result=prior.result,
                detail=prior.detail,
            )
            return
        if prior is not None and (cmd.rollout_id, cmd.attempt) in pending_rollouts(ctx.prefix):
            log.info("upgrade of rollout %s is in flight; its outcome follows", cmd.rollout_id)
            return
        if prior is not None:
            ctx.reporter.step(
                cmd.rollout_id,
                "activate",
                "failed",
                attempt=cmd.attempt,
                result="interrupted",
                detail="the peer restarted during this activation; hooks are not repeated",
            )
            return
        if ctx.fence.aborted(cmd.rollout_id):
            ctx.reporter.step(
                cmd.rollout_id,
                "activate",
                "failed",
                attempt=cmd.attempt,
                result="aborted",
                detail="the rollout was aborted before this activation started; nothing ran",
            )
            return
        await _activate(ctx, cmd)


async def _activate(ctx: PeerContext, cmd: m.Activate) -> None:
    rid, report = cmd.release_id, ctx.reporter.step
    report(cmd.rollout_id, "activate", "running", attempt=cmd.attempt, detail=rid)
    staged = ctx.journal.release(rid)
    new_dir = ctx.layout.release_dir(rid)
    if staged is None or not new_dir.is_dir():
        report(
            cmd.rollout_id,
            "activate",
            "failed",
            attempt=cmd.attempt,
            result="error",
            detail=f"release {rid} is not staged on this host",
        )
        return
    if is_upgrade(staged[0]):
        await activate_upgrade(ctx, cmd, staged[0])
        return
    app = str(staged[0]["app"])
    previous = ctx.layout.current()
    prev_dir = ctx.layout.release_dir(previous) if previous else None
    switched = False
    try:
        spec = _load(new_dir, "BeforeInstall")
        prev_spec = _previous_spec(prev_dir)
        env_base = {
            "RELEASE_ID": rid,
            "RELEASE_DIR": str(new_dir),
            "PREVIOUS_RELEASE_DIR": str(prev_dir) if prev_dir else "",
            "APPLICATION_NAME": app,
            "DEPLOYMENT_ID": cmd.rollout_id,
        }
        # The stop and block-traffic hooks are the live release's own: they see it as RELEASE_*.
        stop_env = {**env_base, "RELEASE_ID": previous or "", "RELEASE_DIR": str(prev_dir or "")}
        for event in PREVIOUS_RELEASE_EVENTS:
            await _event(ctx, cmd, event, prev_spec, prev_dir, stop_env)
        await _event(ctx, cmd, "BeforeInstall", spec, new_dir, env_base)
        _stop_if_killed(ctx, cmd, "Install")
        report(cmd.rollout_id, "Install", "running", attempt=cmd.attempt)
        try:
            done = await trio.to_thread.run_sync(_install, spec, new_dir)
        except (OSError, ShoalError) as exc:
            raise StepFailed("Install", f"Install: {exc}") from None
        ctx.layout.switch_previous(previous)
        ctx.layout.switch_current(rid)
        switched = True
        report(
            cmd.rollout_id,
            "Install",
            "succeeded",
            attempt=cmd.attempt,
            result="succeeded",
            detail=f"current -> {rid}" + (f"; {len(done)} path(s) installed" if done else ""),
        )
        for event in AFTER_INSTALL:
            await _event(ctx, cmd, event, spec, new_dir, env_base)
    except StepFailed as exc:
        if switched:
            ctx.layout.switch_current(previous)
            log.warning("%s failed; current switched back to %s", exc.step, previous)
        report(
            cmd.rollout_id,
            "activate",
            "failed",
            attempt=cmd.attempt,
            result=exc.result,
            detail=str(exc),
        )
        return
    report(
        cmd.rollout_id,
        "activate",
        "succeeded",
        attempt=cmd.attempt,
        result="succeeded",
        detail=f"current -> {rid}",
    )
    prune_releases(ctx)


def _stop_if_killed(ctx: PeerContext, cmd: m.Activate, step: str) -> None:
    """Between steps: an abort with kill fails the activation before ``step`` starts."""
    if ctx.fence.kill_switch(cmd.rollout_id).is_set():
        detail = f"{step}: not started: the rollout was aborted"
        ctx.reporter.step(
            cmd.rollout_id, step, "failed", attempt=cmd.attempt, result="killed", detail=detail
        )
        raise StepFailed(step, detail, result="killed")


def _load(release_dir: Path, step: str) -> AppSpec:
    try:
        return load_appspec(release_dir)
    except ShoalError as exc:
        raise StepFailed(step, f"{step}: {exc}") from None


def _previous_spec(prev_dir: Path | None) -> AppSpec | None:
    if prev_dir is None or not prev_dir.is_dir():
        return None
    try:
        return load_appspec(prev_dir)
    except ShoalError as exc:
        log.warning("previous release's appspec is unusable, ApplicationStop skipped: %s", exc)
        return None


def _install(spec: AppSpec, release_dir: Path) -> list[str]:
    done = apply_files(spec, release_dir)
    apply_permissions(spec, done)
    return done


async def _event(
    ctx: PeerContext,
    cmd: m.Activate,
    event: str,
    spec: AppSpec | None,
    release_dir: Path | None,
    env_base: Mapping[str, str],
) -> None:
    """Run every hook of one lifecycle event, in order; StepFailed on the first failure."""
    report = ctx.reporter.step
    _stop_if_killed(ctx, cmd, event)
    hooks = spec.hooks.get(event, ()) if spec is not None else ()
    if not hooks or release_dir is None:
        report(
            cmd.rollout_id,
            event,
            "succeeded",
            attempt=cmd.attempt,
            result="skipped",
            detail="no hooks",
        )
        return
    report(cmd.rollout_id, event, "running", attempt=cmd.attempt)
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.update(env_base, LIFECYCLE_EVENT=event)

    async def on_line(text: str) -> None:
        ctx.reporter.line(cmd.rollout_id, event, text)

    for hook in hooks:
        result = await run_hook(
            release_dir / hook.location,
            cwd=release_dir,
            env=env,
            timeout=hook.timeout,
            runas=hook.runas,
            on_line=on_line,
            name=event,
            kill=ctx.fence.kill_switch(cmd.rollout_id),
        )
        if result.outcome is not HookOutcome.SUCCEEDED:
            report(
                cmd.rollout_id,
                event,
                "failed",
                attempt=cmd.attempt,
                result=result.outcome.value,
                detail=result.detail,
                exit_code=result.exit_code,
                output=result.output,
            )
            killed = result.outcome is HookOutcome.KILLED
            raise StepFailed(event, result.detail, result="killed" if killed else "failed")
        last = result
    report(
        cmd.rollout_id,
        event,
        "succeeded",
        attempt=cmd.attempt,
        result="succeeded",
        detail=last.detail,
        exit_code=last.exit_code,
        output=last.output,
    )
