"""``shoal-peer reload`` on a real daemon: labels change live while a hook runs, and the hook
goes on; options that need a restart are named; a broken config changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from common.appspec import LIFECYCLE_EVENTS
from seeder.localfleet import LocalFleet
from seeder.samplerepo import commit_all

# ApplicationStart waits (bounded) until the test creates DATA/go: a hook running during reload.
WAIT_HOOK = """#!/bin/sh
DATA_DIR="$(dirname "$(dirname "$RELEASE_DIR")")"
if [ "$LIFECYCLE_EVENT" = ApplicationStart ]; then
  i=0
  while [ ! -e "$DATA_DIR/go" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
  [ -e "$DATA_DIR/go" ] || { echo "never told to go"; exit 4; }
fi
echo "$LIFECYCLE_EVENT done"
"""


def _repo(path: Path) -> Path:
    (path / "hooks").mkdir(parents=True)
    spec = "version: 0.0\nos: linux\nhooks:\n" + "".join(
        f"  {e}:\n    - location: hooks/run.sh\n      timeout: 120\n" for e in LIFECYCLE_EVENTS
    )
    (path / "appspec.yml").write_text(spec)
    (path / "hooks" / "run.sh").write_text(WAIT_HOOK)
    (path / "hooks" / "run.sh").chmod(0o755)
    commit_all(path, "waiting app")
    return path


def _config(path: Path, fleet: LocalFleet, labels: dict[str, str], keep: int) -> None:
    lines = [f'seeder: "{fleet.control}"', f"keep: {keep}", "labels:"]
    lines += [f'  {k}: "{v}"' for k, v in labels.items()]
    path.write_text("\n".join(lines) + "\n")


def _reload(*which: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "peer.cli", "reload", *which, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}


async def _host(fleet: LocalFleet, name: str) -> dict[str, Any]:
    async with fleet.client() as client:
        hosts = (await client.call("hosts.list"))["hosts"]
    return next((h for h in hosts if h["name"] == name), {})


async def _until(fleet: LocalFleet, name: str, check: Any, wait: float = 60) -> dict[str, Any]:
    with trio.fail_after(wait):
        while True:
            host = await _host(fleet, name)
            if host and check(host):
                return host
            await trio.sleep(0.2)


@pytest.mark.slow
async def test_reload_changes_labels_live_during_a_running_hook(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    await fleet.start_seeder()
    config = tmp_path / "peer.yml"
    data = fleet.peer_dir("web-1")
    _config(config, fleet, {"env": "a"}, 5)
    config.write_text(config.read_text() + f'data_dir: "{data}"\n')
    await fleet.start_peer("web-1", "127.0.84.1", labels=None, extra=("--config", str(config)))
    await _until(fleet, "web-1", lambda h: h["connected"] and h["labels"] == {"env": "a"})

    release = fleet.build_release(_repo(tmp_path / "app"), "main")
    start = fleet.cli("rollout", "start", release, "--waves", "100%")
    assert start.returncode == 0, start.stderr
    await _until(fleet, "web-1", lambda h: h["step"] == "ApplicationStart", wait=120)

    # New labels and a new number of releases to keep: the labels apply now, keep needs a restart.
    _config(config, fleet, {"env": "b", "zone": "z"}, 4)
    config.write_text(config.read_text() + f'data_dir: "{data}"\n')
    code, result = _reload("--config", str(config))
    assert code == 0, result
    assert result["ok"] is True
    assert result["applied"] == {"labels": {"env": "b", "zone": "z"}}
    assert result["restart"] == ["keep"]
    host = await _until(fleet, "web-1", lambda h: h["labels"] == {"env": "b", "zone": "z"})
    assert host["step"] == "ApplicationStart" and host["state"] == "activating"  # still running

    # A config that no longer parses: refused, nothing changes, the daemon goes on.
    good = config.read_text()
    config.write_text(good + "no_such_option: 1\n")
    code, result = _reload("--data-dir", str(data))
    assert code == 1 and result["ok"] is False
    assert "unknown key 'no_such_option'" in result["error"]
    config.write_text(good)

    (data / "go").touch()
    watch = fleet.cli("rollout", "watch", "--timeout", "120", timeout=180)
    assert watch.returncode == 0, watch.stdout + watch.stderr
    host = await _host(fleet, "web-1")
    assert host["current"] == release and host["labels"] == {"env": "b", "zone": "z"}


def test_reload_without_a_daemon_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "peer.cli", "reload", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "no running shoal-peer" in proc.stderr
