"""Build steps as real processes: output line by line, minimal environment, failures with their
exit code and last lines, a timeout that kills the whole process group (grandchildren too)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from seeder.applications import BuildSettings
from seeder.buildsteps import BuildStepFailed, StepContext, run_steps


def context(tmp_path: Path) -> StepContext:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return StepContext(app="web", ref="v1", commit="c" * 40, version="v1", home=home)


async def test_steps_run_in_order_with_a_minimal_environment(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    settings = BuildSettings(
        before_build="echo before; pwd",
        build="env | sort; printf 'no newline'",
        after_build="echo after >&2",
    )
    os.environ["SHOAL_TEST_SECRET"] = "must-not-leak"
    try:
        await run_steps(settings, tmp_path, context(tmp_path), lambda s, t: lines.append((s, t)))
    finally:
        del os.environ["SHOAL_TEST_SECRET"]
    steps = [s for s, _ in lines]
    assert steps == sorted(steps, key=["before_build", "build", "after_build"].index)
    assert ("before_build", "before") in lines and ("before_build", str(tmp_path)) in lines
    env = dict(t.split("=", 1) for s, t in lines if s == "build" and "=" in t and t[0] != "$")
    assert set(env) - {"PWD", "SHLVL", "_", "OLDPWD"} == {
        "PATH", "HOME", "LANG", "SHOAL_APP", "SHOAL_REF", "SHOAL_COMMIT", "SHOAL_VERSION",
    }  # fmt: skip
    assert env["HOME"] == str(tmp_path / "home") and env["SHOAL_COMMIT"] == "c" * 40
    assert ("build", "no newline") in lines and ("after_build", "after") in lines


async def test_a_failing_step_stops_the_build_with_its_exit_code_and_last_lines(
    tmp_path: Path,
) -> None:
    settings = BuildSettings(
        build="for i in $(seq 1 50); do echo line $i; done; exit 7", after_build="touch ran"
    )
    with pytest.raises(BuildStepFailed) as err:
        await run_steps(settings, tmp_path, context(tmp_path), lambda s, t: None)
    assert err.value.exit_code == 7 and err.value.step == "build"
    assert "failed with exit code 7" in str(err.value) and "line 50" in str(err.value)
    assert err.value.tail[-1] == "line 50" and "line 1" not in err.value.tail
    assert not (tmp_path / "ran").exists(), "no step runs after a failure"


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_a_timed_out_step_has_its_whole_process_group_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    settings = BuildSettings(
        build=f"sh -c 'sleep 300 & echo $! > {pidfile}; wait' & echo started; wait",
        timeout=1.0,
    )
    lines: list[str] = []
    with trio.fail_after(30):
        with pytest.raises(BuildStepFailed) as err:
            await run_steps(settings, tmp_path, context(tmp_path), lambda s, t: lines.append(t))
    assert err.value.exit_code is None and "timed out after 1s" in str(err.value)
    assert "started" in lines
    grandchild = int(pidfile.read_text())
    with trio.fail_after(10):
        while alive(grandchild):
            await trio.sleep(0.05)
    assert not alive(grandchild)


async def test_what_a_finished_step_left_running_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "left.pid"
    settings = BuildSettings(build=f"sleep 300 > /dev/null 2>&1 & echo $! > {pidfile}")
    with trio.fail_after(30):
        await run_steps(settings, tmp_path, context(tmp_path), lambda s, t: None)
    left = int(pidfile.read_text())
    with trio.fail_after(10):
        while alive(left):
            await trio.sleep(0.05)
