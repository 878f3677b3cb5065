"""The launcher (peer/launcher.py) supervising real child processes in a prefix layout.

Each "version" is a small shell script standing in for ``versions/<id>/bin/shoal-peer``: it
appends its name to a log and exits, sleeps, or marks itself healthy as told. The launcher's
decisions (restart on RESTART, count failed starts, roll back, exit with the child's status) are
observed through that log and the prefix's files.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest

from peer import launcher
from peer.launcher import HEALTHY, PLAN, RESTART, RESULT, Launcher

SCRIPT = """#!/bin/sh
echo "{name} $*" >> "{log}"
{body}
"""


def _version(prefix: Path, name: str, body: str) -> None:
    bin_dir = prefix / "versions" / name / "bin"
    bin_dir.mkdir(parents=True)
    program = bin_dir / "shoal-peer"
    program.write_text(SCRIPT.format(name=name, log=prefix / "starts.log", body=body))
    program.chmod(0o755)


def _starts(prefix: Path) -> list[str]:
    path = prefix / "starts.log"
    return path.read_text().splitlines() if path.exists() else []


def _plan(prefix: Path, *, health_timeout: float = 30, max_starts: int = 3) -> None:
    launcher.write_json(
        prefix / PLAN,
        {
            "rollout_id": "r1",
            "attempt": 1,
            "from_version": "old",
            "to_version": "new",
            "health_timeout": health_timeout,
            "max_starts": max_starts,
        },
    )


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    root = tmp_path / "opt"
    root.mkdir()
    # the old version exits 0 at once: the launcher then exits with it
    _version(root, "old", "exit 0")
    launcher.switch_current(root, "old")
    return root


def test_no_upgrade_runs_current_once_and_exits_with_its_status(prefix: Path) -> None:
    _version(prefix, "v7", "exit 7")
    launcher.switch_current(prefix, "v7")
    assert Launcher(prefix, ["run", "--x"]).run() == 7
    assert _starts(prefix) == ["v7 run --x"]


def test_restart_status_starts_current_again(prefix: Path) -> None:
    # The old version asks for a restart after switching current to the new one.
    _version(prefix, "new", "exit 0")
    flip = f'ln -sfn versions/new "{prefix}/.c" && mv -fT "{prefix}/.c" "{prefix}/current"'
    (prefix / "versions" / "old" / "bin" / "shoal-peer").write_text(
        SCRIPT.format(name="old", log=prefix / "starts.log", body=f"{flip}\nexit {RESTART}")
    )
    assert Launcher(prefix, ["run"]).run() == 0
    assert _starts(prefix) == ["old run", "new run"]


def test_a_new_version_that_keeps_crashing_is_rolled_back(prefix: Path) -> None:
    _version(prefix, "new", "exit 1")
    launcher.switch_current(prefix, "new")
    _plan(prefix, max_starts=2)
    assert Launcher(prefix, ["run"]).run() == 0
    assert _starts(prefix) == ["new run", "new run", "old run"]
    assert launcher.current_version(prefix) == "old"
    result = launcher.read_json(prefix / RESULT)
    assert result is not None and result["state"] == "rolled_back"
    assert "did not come back after 2 start(s)" in result["reason"]
    assert "exited with status 1" in result["reason"]


def test_a_new_version_that_never_gets_healthy_is_killed_and_rolled_back(prefix: Path) -> None:
    _version(prefix, "new", "exec sleep 30")
    launcher.switch_current(prefix, "new")
    _plan(prefix, health_timeout=0.5, max_starts=1)
    assert Launcher(prefix, ["run"]).run() == 0
    assert _starts(prefix) == ["new run", "old run"]
    result = launcher.read_json(prefix / RESULT)
    assert result is not None and "was not healthy" in result["reason"]
    assert launcher.current_version(prefix) == "old"


def test_a_healthy_new_version_is_not_rolled_back(prefix: Path) -> None:
    # It marks itself healthy, reports and clears the upgrade files (as peer/upgrade.py does),
    # then runs on past the health deadline: nobody stops it.
    clear = f'rm -f "{prefix / HEALTHY}" "{prefix / PLAN}"'
    healthy = f"echo '{{}}' > \"{prefix / HEALTHY}\"\n{clear}\nsleep 1.5\nexit 0"
    _version(prefix, "new", healthy)
    launcher.switch_current(prefix, "new")
    _plan(prefix, health_timeout=0.5, max_starts=1)
    assert Launcher(prefix, ["run"]).run() == 0
    assert _starts(prefix) == ["new run"]
    assert launcher.current_version(prefix) == "new"
    assert not (prefix / RESULT).exists()


def test_no_rollback_without_an_installed_previous_version(prefix: Path) -> None:
    _version(prefix, "new", "exit 1")
    launcher.switch_current(prefix, "new")
    launcher.write_json(
        prefix / PLAN, {"from_version": "gone", "to_version": "new", "max_starts": 1}
    )
    # It keeps the new version (nothing to go back to), says why and exits with its status.
    assert Launcher(prefix, ["run"]).run() == 1
    assert _starts(prefix) == ["new run"]
    assert launcher.current_version(prefix) == "new"
    result = launcher.read_json(prefix / RESULT)
    assert result is not None and result["state"] == "failed"
    assert "cannot roll back: 'gone' is not installed" in result["reason"]


def test_write_json_is_atomic_and_read_json_tolerates_garbage(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    launcher.write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert not list(tmp_path.glob(".*.tmp"))
    path.write_text("{half")
    assert launcher.read_json(path) is None
    assert launcher.read_json(tmp_path / "absent.json") is None


def test_the_launcher_imports_only_the_standard_library() -> None:
    """It is copied out of the package and run isolated: no shoal or third-party import."""
    tree = ast.parse(Path(launcher.__file__).read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import"
            names = [str(node.module).split(".")[0]]
        for name in names:
            assert name in sys.stdlib_module_names or name == "__future__", name


def test_installed_launcher_runs_isolated(tmp_path: Path) -> None:
    from peer.prefix import Prefix

    root = tmp_path / "opt"
    (root / "versions").mkdir(parents=True)
    prefix = Prefix(root)
    assert prefix.install_launcher() is True
    assert prefix.install_launcher() is False  # unchanged: not rewritten
    text = prefix.launcher.read_text()
    assert text.startswith("#!") and text.splitlines()[0].endswith(" -I")
    assert os.access(prefix.launcher, os.X_OK)


def test_a_stop_that_came_while_the_child_was_starting_still_stops_it(prefix: Path) -> None:
    """SIGTERM between the launcher's last check and the child's fork has no child to reach
    yet: the wait loop passes it on, instead of waiting for the service manager's SIGKILL."""
    _version(prefix, "slow", "exec sleep 60")
    launcher.switch_current(prefix, "slow")
    stopped = Launcher(prefix, ["run"])
    stopped.stopping = True  # what _forward leaves behind when there was no child yet
    status, why = stopped._run_child(None)
    assert status == 128 + 15 and "SIGTERM" in why, why
