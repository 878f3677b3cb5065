"""Shoal ships shoal: ``shoal fleet upgrade`` through the swarm, on real installed peers.

Each peer runs from its own install prefix (``PREFIX/versions/<id>/`` a real virtualenv of the
current tree's wheel, ``PREFIX/current``), started by LocalFleet as
``PREFIX/current/bin/shoal-peer``.
The "new version" is the same tree with its version bumped (a wheel built from a temp copy); the
"broken version" also crashes when the daemon starts (after its import check passes). The
dependencies' wheels are downloaded once per module (pip's cache) and make every wheelhouse whole,
so peers install with ``--no-index`` as they would on a server.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio

from common.install_layout import INSTALLED, install_id, installed_manifest
from seeder.localfleet import LocalFleet
from tests.conftest import make_app_repo
from tests.shoal_wheels import SOURCE, build_wheel, clean_env, run

# One worker builds the upgrade wheelhouses once (a module fixture) and runs every test.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("upgrade_e2e")]

OLD, NEW, BROKEN = "0.1.0", "0.1.1", "0.1.2"
CRASH = """



async def run_peer(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise RuntimeError("this shoal version is broken on purpose (a test)")
"""


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


class Wheelhouses:
    def __init__(self, root: Path) -> None:
        self.root = root
        deps = root / "deps"
        requirements = tomllib.loads((SOURCE / "pyproject.toml").read_text())["project"][
            "dependencies"
        ]
        pip = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"]
        run([*pip, "-d", str(deps), *requirements], root, clean_env(), timeout=600)
        self.deps = sorted(deps.glob("*.whl"))
        daemon = (SOURCE / "peer" / "daemon.py").read_text()
        self.dirs = {
            OLD: self._house(OLD, build_wheel(root / "build-old")),
            NEW: self._house(NEW, build_wheel(root / "build-new", version=NEW)),
            BROKEN: self._house(
                BROKEN,
                build_wheel(
                    root / "build-broken", version=BROKEN, patch={"peer/daemon.py": daemon + CRASH}
                ),
            ),
        }

    def _house(self, version: str, wheel: Path) -> Path:
        house = self.root / f"wheelhouse-{version}"
        house.mkdir()
        for path in [*self.deps, wheel]:
            os.link(path, house / path.name)
        return house

    def digests(self, version: str) -> dict[str, str]:
        return {p.name: _sha256(p) for p in self.dirs[version].glob("*.whl")}

    def install_id(self, version: str) -> str:
        return install_id(version, self.digests(version))


@pytest.fixture(scope="module")
def wheelhouses(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouses:
    return Wheelhouses(tmp_path_factory.mktemp("wheelhouses"))


def install_prefix(prefix: Path, houses: Wheelhouses) -> Path:
    """What ``shoal fleet install`` leaves on a host: versions/<id> (real venv), current."""
    version_id = houses.install_id(OLD)
    venv = prefix / "versions" / version_id
    venv.parent.mkdir(parents=True)
    base = getattr(sys, "_base_executable", sys.executable)
    run([base, "-m", "venv", "--without-pip", str(venv)], prefix, clean_env(), timeout=120)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    pip += ["-q", "--no-index", "--find-links", str(houses.dirs[OLD]), f"shoal=={OLD}"]
    run(pip, prefix, clean_env(), timeout=600)
    (venv / INSTALLED).write_text(installed_manifest(houses.digests(OLD)))
    (prefix / "current").symlink_to(Path("versions") / version_id)
    return prefix / "current" / "bin" / "shoal-peer"


def _hosts(fleet: LocalFleet) -> dict[str, dict[str, Any]]:
    out = fleet.cli("hosts", "--json")
    assert out.returncode == 0, out.stderr
    return {h["name"]: h for h in json.loads(out.stdout)}


async def _wait_hosts(fleet: LocalFleet, check: Any, what: str, wait: float = 120) -> None:
    with trio.fail_after(wait):
        while True:
            hosts = _hosts(fleet)
            if check(hosts):
                return
            await trio.sleep(0.3)


def _status(fleet: LocalFleet, rollout_id: str) -> dict[str, Any]:
    out = fleet.cli("rollout", "status", rollout_id, "--json")
    assert out.returncode == 0, out.stderr
    rollout: dict[str, Any] = json.loads(out.stdout)
    return rollout


def _steps(target: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in target["steps"]}


def _journal_rollouts(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / "state.db") as db:
        return {row[0] for row in db.execute("SELECT DISTINCT rollout_id FROM steps")}


def _rollout_id(out: subprocess.CompletedProcess[str]) -> str:
    for line in out.stdout.splitlines():
        if line.startswith("rollout ") and " started on " in line:
            return line.split()[1]
    raise AssertionError(f"no rollout id in:\n{out.stdout}\n{out.stderr}")


async def test_upgrade_through_the_swarm_then_a_broken_version_rolls_back(
    fleet: LocalFleet, wheelhouses: Wheelhouses, tmp_path: Path
) -> None:
    names = {"web-1": "127.0.83.1", "web-2": "127.0.83.2"}
    await fleet.start_seeder()
    programs = {}
    for name, ip in names.items():
        prefix = tmp_path / "prefix" / name
        programs[name] = install_prefix(prefix, wheelhouses)
        await fleet.start_peer(
            name,
            ip,
            labels="env=test",
            program=programs[name],
            extra=("--prefix", str(prefix), "--upgrade-timeout", "30"),
        )
    async with fleet.client() as client:
        await fleet.wait_connected(client, list(names))
    assert {h["version"] for h in _hosts(fleet).values()} == {OLD}

    # An app rollout first: its journal and its staged, seeded release must survive the upgrade.
    repo = make_app_repo(tmp_path / "web")
    release = fleet.build_release(repo, "main")
    app = fleet.cli("rollout", "start", release, "--waves", "100%", "--wait", timeout=300)
    assert app.returncode == 0, app.stdout + app.stderr
    app_rollout = _rollout_id(app)
    pids = {d.name: d.process.pid for d in fleet.daemons if d.name in names}

    out = fleet.cli(
        "fleet", "upgrade", "--wheelhouse", str(wheelhouses.dirs[NEW]),
        "--waves", "1,100%", "--wait", "--timeout", "600", timeout=700,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    upgrade = _status(fleet, _rollout_id(out))
    assert upgrade["state"] == "succeeded"
    new_id = wheelhouses.install_id(NEW)
    for target in upgrade["targets"]:
        steps = _steps(target)
        for step in ("ShoalInstall", "ShoalCheck", "ShoalSwitch", "ShoalRestart", "activate"):
            assert steps[step]["state"] == "succeeded", (target["host"], steps)
        assert f"versions/{new_id}" in steps["ShoalRestart"]["detail"]

    await _wait_hosts(
        fleet,
        lambda hs: all(h["connected"] and h["version"] == NEW for h in hs.values()),
        "every host on the new version",
    )
    hosts = _hosts(fleet)
    for name in names:
        prefix = tmp_path / "prefix" / name
        assert os.readlink(prefix / "current") == f"versions/{new_id}"
        assert (prefix / "bin" / "shoal-peer").is_file()  # the launcher now supervises it
        assert not (prefix / "upgrade.json").exists()
        # The same process (it re-executed itself), the same journal, the same app release.
        assert {d.name: d.process.pid for d in fleet.daemons}[name] == pids[name]
        assert d_alive(pids[name])
        assert app_rollout in _journal_rollouts(fleet.peer_dir(name))
        assert hosts[name]["current"] == release  # the app's current, not the shoal release
        assert release in hosts[name]["staged"]

    # The app rollout's record on the seeder is untouched, and a rollback still targets the app.
    assert _status(fleet, app_rollout)["state"] == "succeeded"

    # A version that crashes when the daemon starts: the canary rolls itself back, the rollout
    # halts there and reports why; the other host is never touched.
    out = fleet.cli(
        "fleet", "upgrade", "--wheelhouse", str(wheelhouses.dirs[BROKEN]),
        "--waves", "1,100%", "--wait", "--timeout", "600", timeout=700,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    broken = _status(fleet, _rollout_id(out))
    assert broken["state"] == "halted", broken["error"]
    by_host = {t["host"]: t for t in broken["targets"]}
    failed = [t for t in by_host.values() if t["state"] == "failed"]
    assert len(failed) == 1, by_host
    steps = _steps(failed[0])
    assert steps["ShoalSwitch"]["state"] == "succeeded"
    assert steps["ShoalRestart"]["state"] == "failed"
    assert "did not come back" in steps["ShoalRestart"]["detail"]
    assert "rolled back" in steps["ShoalRestart"]["detail"]
    assert steps["activate"]["result"] == "rolled_back"
    await _wait_hosts(
        fleet,
        lambda hs: all(h["connected"] and h["version"] == NEW for h in hs.values()),
        "every host back on the good version",
    )
    for name in names:
        prefix = tmp_path / "prefix" / name
        assert os.readlink(prefix / "current") == f"versions/{new_id}"
        assert not (prefix / "upgrade.json").exists()
    log = (fleet.root / "logs" / f"{failed[0]['host']}.log").read_text()
    assert "broken on purpose" in log

    # Without --wheelhouse: the bundle of the shoal this CLI runs (this source tree, as
    # `shoal fleet install` builds it), to every host; they all end up on that build.
    out = fleet.cli(
        "fleet", "upgrade", "--cache", str(tmp_path / "bundles"),
        "--waves", "100%", "--wait", "--timeout", "600", timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    (bundle,) = (tmp_path / "bundles").iterdir()
    built = json.loads((bundle / "bundle.json").read_text())
    bundled_id = install_id(built["version"], built["wheels"])
    await _wait_hosts(
        fleet,
        lambda hs: all(h["connected"] and h["version"] == built["version"] for h in hs.values()),
        "every host on the bundled version",
    )
    for name in names:
        assert os.readlink(tmp_path / "prefix" / name / "current") == f"versions/{bundled_id}"


def d_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
