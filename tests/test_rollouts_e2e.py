"""Waves, halts, auto-rollback, seeder SIGKILL, pause across a restart and rollback without
transfer, with real processes, real sockets and real libtorrent, through the real ``shoal`` CLI."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from seeder.localfleet import LocalFleet
from tests.conftest import commit_version, make_app_repo, shoal
from tests.test_e2e import ACTIVATE_ORDER, HOSTS, STOP_ORDER, build, current, events, start

pytestmark = pytest.mark.integration


def cli(fleet: LocalFleet, *args: str) -> Any:
    out = shoal(fleet.control, *args, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


async def until(fleet: LocalFleet, rollout_id: str, states: tuple[str, ...]) -> dict[str, Any]:
    while True:
        r = await trio.to_thread.run_sync(cli, fleet, "rollout", "show", rollout_id)
        if r["state"] in states:
            return r  # type: ignore[no-any-return]
        await trio.sleep(0.3)


async def two_releases(fleet: LocalFleet, tmp_path: Path) -> tuple[str, str]:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    await start(fleet)
    r1 = await trio.to_thread.run_sync(build, fleet, repo, "main")
    out = await trio.to_thread.run_sync(
        lambda: shoal(fleet.control, "rollout", "start", r1, "--waves", "100%", "--wait")
    )
    assert out.returncode == 0, out.stdout + out.stderr
    await trio.to_thread.run_sync(commit_version, repo, "2")
    r2 = await trio.to_thread.run_sync(build, fleet, repo, "main")
    return r1, r2


def hooks_of(fleet: LocalFleet, host: str, release: str) -> list[str]:
    return [event for event, rid in events(fleet, host) if rid == release]


@pytest.mark.slow
async def test_a_failure_in_wave_2_halts_and_auto_rollback_restores(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    with trio.fail_after(240):
        r1, r2 = await two_releases(fleet, tmp_path)
        (fleet.peer_dir("web-2") / "fail-ValidateService").touch()
        plan = await trio.to_thread.run_sync(
            cli, fleet, "rollout", "plan", r2, "--waves", "1,2,100%"
        )
        assert [w["hosts"] for w in plan["waves"]] == [["web-1"], ["web-2"], ["web-3"]]
        out = await trio.to_thread.run_sync(
            lambda: shoal(
                fleet.control,
                "rollout",
                "start",
                r2,
                "--waves",
                "1,2,100%",
                "--auto-rollback",
                "--wait",
            )
        )
        assert out.returncode == 1, out.stdout + out.stderr
        r = cli(fleet, "rollout", "show", plan_id(out.stdout))
        assert r["state"] == "failed", r["error"]
        assert "web-2" in r["error"] and "ValidateService" in r["error"]
        assert "rolled back 1 host(s)" in r["error"]
        assert [w["state"] for w in r["waves"]] == ["done", "halted", "skipped"]
        states = {t["host"]: t["state"] for t in r["targets"]}
        assert states == {"web-1": "rolled_back", "web-2": "failed", "web-3": "staged"}
        assert {h: current(fleet, h) for h in HOSTS} == dict.fromkeys(HOSTS, r1)
        assert hooks_of(fleet, "web-3", r2) == [], "wave 3 must never start"
        # web-1 stopped r1 and ran r2's hooks once, then stopped r2 and ran r1's again.
        assert hooks_of(fleet, "web-1", r2) == [*ACTIVATE_ORDER, *STOP_ORDER]
        assert hooks_of(fleet, "web-1", r1) == [*ACTIVATE_ORDER, *STOP_ORDER, *ACTIVATE_ORDER]
        kinds = [e["kind"] for e in r["timeline"]]
        assert {"rollout", "wave", "target", "step"} <= set(kinds)
        listed = cli(fleet, "rollout", "list")
        assert listed[0]["rollout_id"] == r["rollout_id"] and listed[0]["state"] == "failed"


def plan_id(stdout: str) -> str:
    first = stdout.splitlines()[0]  # "rollout <id> started on N host(s)"
    return first.split()[1]


@pytest.mark.slow
async def test_seeder_sigkill_mid_wave_2_runs_every_hook_exactly_once(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    with trio.fail_after(240):
        _, r2 = await two_releases(fleet, tmp_path)
        (fleet.peer_dir("web-2") / "slow-BeforeInstall").touch()  # sleeps 3 s after logging
        started = cli(fleet, "rollout", "start", r2, "--waves", "1,2,100%")
        rid = started["rollout_id"]
        refused = shoal(fleet.control, "rollout", "start", r2, "--hosts", "web-3")
        assert refused.returncode == 1 and rid in refused.stderr, refused.stderr
        while hooks_of(fleet, "web-2", r2) != ["BeforeInstall"]:
            await trio.sleep(0.05)
        assert fleet.seeder is not None
        await fleet.stop(fleet.seeder, signal.SIGKILL)
        await fleet.start_seeder()
        r = await until(fleet, rid, ("succeeded", "failed", "halted", "aborted"))
        assert r["state"] == "succeeded", r["error"]
        for host in HOSTS:
            assert hooks_of(fleet, host, r2) == ACTIVATE_ORDER, f"{host} ran a hook twice"
            assert current(fleet, host) == r2


@pytest.mark.slow
async def test_pause_survives_a_restart_then_resume_and_rollback_without_transfer(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    with trio.fail_after(240):
        r1, r2 = await two_releases(fleet, tmp_path)
        (fleet.peer_dir("web-1") / "slow-BeforeInstall").touch()  # wave 1 takes 3 s or more
        rid = cli(fleet, "rollout", "start", r2, "--waves", "1,100%")["rollout_id"]
        assert cli(fleet, "rollout", "pause", rid)["state"] == "paused"
        assert fleet.seeder is not None
        await fleet.stop(fleet.seeder, signal.SIGKILL)
        await fleet.start_seeder()
        await trio.sleep(5)  # wave 1 ends meanwhile; wave 2 must not start
        r = cli(fleet, "rollout", "show", rid)
        assert r["state"] == "paused"
        assert {h: hooks_of(fleet, h, r2) for h in HOSTS[1:]} == {h: [] for h in HOSTS[1:]}
        assert cli(fleet, "rollout", "resume", rid)["state"] in ("staging", "activating")
        r = await until(fleet, rid, ("succeeded", "failed", "halted", "aborted"))
        assert r["state"] == "succeeded", r["error"]
        assert {h: current(fleet, h) for h in HOSTS} == dict.fromkeys(HOSTS, r2)
        assert hooks_of(fleet, "web-1", r2) == ACTIVATE_ORDER, "a hook ran twice"
        states = [e["state"] for e in r["timeline"] if e["kind"] == "rollout"]
        paused = states.index("paused")
        assert states[paused + 1] in ("staging", "activating") and states[-1] == "succeeded"

        sent = cli(fleet, "seeder", "stats")
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollback", "--waves", "1,100%", "--wait")
        )
        assert out.returncode == 0, out.stdout + out.stderr
        back = cli(fleet, "rollout", "show", plan_id(out.stdout))
        assert back["kind"] == "rollback" and back["state"] == "succeeded"
        assert {t["release_id"] for t in back["targets"]} == {r1}
        assert {h: current(fleet, h) for h in HOSTS} == dict.fromkeys(HOSTS, r1)
        assert cli(fleet, "seeder", "stats") == sent, "a rollback must not transfer anything"
        for t in back["targets"]:
            stage = next(s for s in t["steps"] if s["step"] == "stage")
            assert stage["detail"] == f"{r1} already staged"
            assert "download" not in {s["step"] for s in t["steps"]}
