"""Promotion between environments with a real seeder, real peers and real hooks, through the real
``shoal`` CLI: a release refused on prod, a failed (and a tolerated-failure) staging rollout that
does not count, a staging rollout that does, then prod allowed; ``rollback --to`` checked too, and
``--force`` recorded with who forced it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from seeder.localfleet import LocalFleet
from tests.conftest import commit_version, make_app_repo

pytestmark = pytest.mark.integration

HOSTS = {"stg-1": "staging", "stg-2": "staging", "prod-1": "prod"}


def run(fleet: LocalFleet, *args: str) -> subprocess.CompletedProcess[str]:
    return fleet.cli(*args, timeout=180)


def ok_json(fleet: LocalFleet, *args: str) -> Any:
    out = run(fleet, *args, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def refused(fleet: LocalFleet, *args: str) -> str:
    out = run(fleet, *args)
    assert out.returncode == 1, out.stdout + out.stderr
    return out.stderr


def waited(fleet: LocalFleet, code: int, *args: str) -> str:
    """Start a rollout with --wait; its id (the rollouts listed, newest first)."""
    out = run(fleet, "rollout", "start", *args, "--waves", "100%", "--wait")
    assert out.returncode == code, out.stdout + out.stderr
    return str(ok_json(fleet, "rollout", "list")[0]["rollout_id"])


@pytest.mark.slow
async def test_promotion_from_staging_to_prod(fleet: LocalFleet, tmp_path: Path) -> None:
    with trio.fail_after(300):
        repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
        await fleet.start_seeder()
        for i, (name, env) in enumerate(HOSTS.items()):
            await fleet.start_peer(name, f"127.0.71.{i + 2}", labels=f"env={env},zone=a")
        async with fleet.client() as client:
            await fleet.wait_connected(client, list(HOSTS))
        r1 = await trio.to_thread.run_sync(fleet.build_release, repo)
        await trio.to_thread.run_sync(_promotion_story, fleet, repo, r1)


def _promotion_story(fleet: LocalFleet, repo: Path, r1: str) -> None:
    # env is first-class in `shoal hosts`
    staging = ok_json(fleet, "hosts", "--env", "staging")
    assert [(h["name"], h["env"]) for h in staging] == [("stg-1", "staging"), ("stg-2", "staging")]
    table = run(fleet, "hosts", "--env", "prod").stdout.splitlines()
    assert table[0].split()[:2] == ["HOST", "ENV"] and table[1].split()[:2] == ["prod-1", "prod"]
    assert len(table) == 2

    # rules belong to registered apps (fleet.build_release registered "web")
    assert "no application named 'nope'" in refused(
        fleet, "app", "set", "nope", "--promote", "staging:prod"
    )
    # a cycle is refused, a chain is kept, a single rule removed, other settings kept apart
    assert "cycle" in refused(fleet, "app", "set", "web", "--promote", "staging:prod,prod:staging")
    rules = ok_json(
        fleet, "app", "set", "web", "--promote", "qa:staging", "--promote", "staging:prod"
    )
    assert rules["promote"] == ["qa:staging", "staging:prod"]
    assert ok_json(fleet, "app", "set", "web", "--no-promote", "qa:staging")["promote"] == [
        "staging:prod"
    ]
    assert "in a command of their own" in refused(
        fleet, "app", "set", "web", "--promote", "staging:prod", "--branch", "dev"
    )
    assert ok_json(fleet, "app", "show", "web")["promote"] == ["staging:prod"]
    assert "promotion rules staging:prod" in run(fleet, "app", "show", "web").stdout
    who = rules["updated_by"]
    assert who  # the caller's name, as the seeder knows it

    # never rolled out on staging: plan says so, start is refused and creates nothing
    plan = ok_json(fleet, "rollout", "plan", r1, "--hosts", "env=prod")
    assert plan["promotion"]["ok"] is False
    assert plan["promotion"]["checks"][0]["hosts"] == ["prod-1"]
    assert "REFUSED" in run(fleet, "rollout", "plan", r1, "--hosts", "env=prod").stdout
    error = refused(fleet, "rollout", "start", r1, "--hosts", "env=prod")
    assert (
        f"release {r1} has not succeeded on staging (rule staging:prod of app web): it was never"
        " rolled out on staging; use --force to override"
    ) in error
    assert ok_json(fleet, "rollout", "list") == []
    # a rollout spanning both envs is held to prod's rule too
    assert "rule staging:prod" in refused(fleet, "rollout", "start", r1, "--hosts", "zone=a")

    # a staging rollout that halts does not count
    fail = fleet.peer_dir("stg-2") / "fail-ValidateService"
    fail.touch()
    halted = waited(fleet, 1, r1, "--hosts", "env=staging")
    error = refused(fleet, "rollout", "start", r1, "--hosts", "env=prod")
    assert f"its latest rollout there, {halted}, it ended halted" in error
    # nor one that succeeded only because its budget tolerated a staging host failing
    tolerated = waited(fleet, 0, r1, "--hosts", "env=staging", "--max-failures", "1")
    assert ok_json(fleet, "rollout", "show", tolerated)["state"] == "succeeded"
    error = refused(fleet, "rollout", "start", r1, "--hosts", "env=prod")
    assert f"{tolerated}, its staging host(s) did not all succeed (stg-2: failed)" in error

    # a clean staging rollout counts: prod is allowed, and the rollout says why
    fail.unlink()
    good = waited(fleet, 0, r1, "--hosts", "env=staging")
    plan = ok_json(fleet, "rollout", "plan", r1, "--hosts", "env=prod")
    assert plan["promotion"]["ok"] is True
    assert plan["promotion"]["checks"][0]["evidence"] == good
    prod = waited(fleet, 0, r1, "--hosts", "env=prod")
    shown = ok_json(fleet, "rollout", "show", prod)
    assert shown["state"] == "succeeded"
    assert shown["promotion"]["ok"] is True and shown["promotion"]["forced"] is False
    entry = next(e for e in shown["timeline"] if e["kind"] == "promotion")
    assert entry["ok"] is True and entry["overridden"] == []
    envs = {e["env"]: e for e in ok_json(fleet, "env", "list")}
    assert envs["prod"]["hosts"] == ["prod-1"] and envs["prod"]["releases"] == {r1: 1}
    assert envs["prod"]["rules_in"] == [{"app": "web", "rule": "staging:prod"}]
    assert envs["staging"]["connected"] == 2
    assert "web:staging:prod" in run(fleet, "env", "list").stdout

    # a new release: rollback --to is checked as well, --force overrides and is recorded
    commit_version(repo, "2")
    r2 = fleet.build_release(repo)
    error = refused(fleet, "rollback", "--hosts", "env=prod", "--to", r2)
    assert f"release {r2} has not succeeded on staging (rule staging:prod of app web)" in error
    forced = waited(fleet, 0, r2, "--hosts", "env=prod", "--force")
    shown = ok_json(fleet, "rollout", "show", forced)
    assert shown["state"] == "succeeded" and shown["targets"][0]["release_id"] == r2
    promotion = shown["promotion"]
    assert promotion["forced"] is True and promotion["ok"] is False
    assert promotion["overridden"] == ["staging:prod"]
    assert promotion["by"] == who
    entry = next(e for e in shown["timeline"] if e["kind"] == "promotion")
    assert entry["forced"] is True and entry["by"] == who
    assert entry["overridden"] == ["staging:prod"]
    listed = {r["rollout_id"]: r["forced_by"] for r in ok_json(fleet, "rollout", "list")}
    assert listed[forced] == who and listed[prod] == listed[good] == ""
    text = run(fleet, "rollout", "show", forced).stdout
    assert f"promotion: FORCED by {who}" in text and "over rule(s) staging:prod" in text

    # rules cleared: nothing to check any more
    assert ok_json(fleet, "app", "set", "web", "--promote", "")["promote"] == []
    plan = ok_json(fleet, "rollout", "plan", r2, "--hosts", "env=prod")
    assert plan["promotion"]["ok"] is True and plan["promotion"]["checks"] == []
