"""The peer's systemd unit runs the launcher, so an upgrade cut short by a reboot is resolved.

The command run is the rendered unit's own ``ExecStart=`` for a prefix in a temp dir, run as
systemd would run it (a real process: the launcher as ``peer/prefix.py`` installs it, its
children the stand-in versions of tests/test_launcher.py). ``shoal fleet install``'s host agent
writing that launcher is checked here too, with a real interpreter.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from common.install_layout import InstallLayout
from peer import launcher
from peer.launcher import PLAN, RESULT
from peer.prefix import Prefix
from seeder import fleet_agent
from seeder.fleet_install import render_unit

SCRIPT = """#!/bin/sh
echo "{name} $*" >> "{log}"
echo $$ > "{pid}"
{body}
"""
WAIT = 60.0  # a bound only: every step below takes well under a second


def _version(prefix: Path, name: str, body: str) -> None:
    program = prefix / "versions" / name / "bin" / "shoal-peer"
    program.parent.mkdir(parents=True, exist_ok=True)
    log, pid = prefix / "starts.log", prefix / f"{name}.pid"
    program.write_text(SCRIPT.format(name=name, log=log, pid=pid, body=body))
    program.chmod(0o755)


def _starts(prefix: Path) -> list[str]:
    path = prefix / "starts.log"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def exec_start(prefix: Path, config: Path) -> list[str]:
    """The command line of the unit ``shoal fleet install`` writes for this prefix and config."""
    unit = render_unit(InstallLayout(PurePosixPath(prefix), config=PurePosixPath(config)))
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def _wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {WAIT:.0f}s"
        time.sleep(0.05)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    """An installed prefix mid-upgrade: ``current`` switched to ``new``, its plan written, no
    healthy file yet; ``old`` (exits 0, as if it reported the rollback) is the way back."""
    root = tmp_path / "opt"
    _version(root, "old", "exit 0")
    _version(root, "new", "exec sleep 600")  # started, never connects
    launcher.switch_current(root, "new")
    launcher.write_json(
        root / PLAN,
        {"from_version": "old", "to_version": "new", "health_timeout": 300, "max_starts": 2},
    )
    Prefix(root).install_launcher()
    return root


def test_the_unit_runs_the_prefix_launcher(prefix: Path, tmp_path: Path) -> None:
    config = str(tmp_path / "peer.yml")
    assert exec_start(prefix, Path(config)) == [
        str(prefix / "bin" / "shoal-peer"),
        "run",
        "--config",
        config,
    ]
    cmd = exec_start(prefix, Path(config))
    assert Path(cmd[0]).read_text().startswith("#!")  # the launcher Prefix installed


def test_killed_mid_upgrade_then_started_again_rolls_back_instead_of_looping(
    prefix: Path, tmp_path: Path
) -> None:
    cmd = exec_start(prefix, tmp_path / "peer.yml")
    first = subprocess.Popen(cmd, start_new_session=True)
    try:
        _wait_for("start of the new version", lambda: (prefix / "new.pid").exists())
        # The host goes down (power cut, reboot) while the new version is not yet healthy.
        _kill(first.pid)
        _kill(int((prefix / "new.pid").read_text()))
        first.wait(timeout=WAIT)
    finally:
        _kill(first.pid)
    assert launcher.pending_plan(prefix) is not None  # still pending: nobody resolved it
    # After the reboot the new version crashes at every start (systemd alone would restart it
    # forever); the unit's command counts the starts and rolls back.
    _version(prefix, "new", "exit 1")
    again = subprocess.run(cmd, timeout=WAIT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr  # the old version's status
    assert _starts(prefix) == ["new", "new", "new", "old"]  # 1 before the reboot, 2 after
    assert launcher.current_version(prefix) == "old"
    result = launcher.read_json(prefix / RESULT)
    assert result is not None and result["state"] == "rolled_back", result
    assert "did not come back after 2 start(s)" in result["reason"]
    assert launcher.pending_plan(prefix) is None  # resolved: the old version reports it


def test_a_new_version_that_comes_up_after_the_reboot_is_kept(prefix: Path, tmp_path: Path) -> None:
    # The new version connects this time: it marks itself healthy, reports and clears the plan
    # (as peer/upgrade.py does), then stops; nothing is rolled back.
    clear = f'echo "{{}}" > "{prefix / launcher.HEALTHY}"; rm -f "{prefix / PLAN}"'
    _version(prefix, "new", f"{clear}\nexit 0")
    again = subprocess.run(exec_start(prefix, tmp_path / "peer.yml"), timeout=WAIT)
    assert again.returncode == 0
    assert _starts(prefix) == ["new"]
    assert launcher.current_version(prefix) == "new"
    assert not (prefix / RESULT).exists()


def test_a_stop_between_two_starts_starts_nothing_more(prefix: Path, tmp_path: Path) -> None:
    # The new version crashes; the stop (systemctl stop: SIGTERM to the launcher) lands while
    # the launcher waits before the next start, or earlier: either way no second start.
    _version(prefix, "new", "(sleep 0.4; kill -TERM $PPID) &\nexit 1")
    out = subprocess.run(exec_start(prefix, tmp_path / "peer.yml"), timeout=WAIT)
    assert out.returncode == 1
    assert _starts(prefix) == ["new"]
    assert launcher.current_version(prefix) == "new" and launcher.pending_plan(prefix) is not None


def _agent_prefix(tmp_path: Path) -> Path:
    """A prefix whose ``current`` is a real virtualenv with shoal in it (this test run's)."""
    root = tmp_path / "opt"
    (root / "versions").mkdir(parents=True)
    os.symlink(sys.prefix, root / "versions" / "v1")
    launcher.switch_current(root, "v1")
    return root


def _configure(root: Path, tmp_path: Path) -> dict[str, object]:
    req = {
        "prefix": str(root),
        "config": str(tmp_path / "etc" / "peer.yml"),
        "config_text": "seeder: 10.0.0.1:7700\n",
        "data_dir": str(tmp_path / "data"),
        "service": "none",
    }
    return fleet_agent.configure(req)


def test_fleet_install_writes_the_launcher_the_unit_runs(tmp_path: Path) -> None:
    root = _agent_prefix(tmp_path)
    assert _configure(root, tmp_path) == {"ok": True, "changed": ["launcher", "config"]}
    program = root / "bin" / "shoal-peer"
    assert os.access(program, os.X_OK)
    assert program.read_text().splitlines()[0].endswith(" -I")
    assert program.read_text().endswith(Path(launcher.__file__).read_text())
    assert _configure(root, tmp_path) == {"ok": True, "changed": []}  # idempotent
    # and it runs: it starts current's shoal-peer (this run's) as the unit would
    out = subprocess.run([str(program), "version"], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr


def test_fleet_install_refuses_to_configure_without_a_current_version(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    root.mkdir()
    answer = _configure(root, tmp_path)
    assert answer["ok"] is False and answer["reason"] == "install", answer
    assert "no version of shoal is current" in str(answer["detail"])
    assert not (tmp_path / "etc" / "peer.yml").exists()  # nothing half-applied
