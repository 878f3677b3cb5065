"""``shoal-peer start/stop/status``: a real supervised daemon connected to a real seeder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from peer.config import render_config
from peer.prefix import Prefix
from peer.supervise import daemon_command, read_pid
from seeder.localfleet import LocalFleet

pytestmark = pytest.mark.integration


def _peer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peer.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return sorted(int(p) for t in tasks for p in (t / "children").read_text().split())


async def _connected(fleet: LocalFleet, name: str, want: bool) -> None:
    async with fleet.client() as client:
        with trio.fail_after(60):
            while True:
                hosts = (await client.call("hosts.list"))["hosts"]
                if any(h["name"] == name and h["connected"] == want for h in hosts):
                    return
                await trio.sleep(0.2)


async def test_start_supervises_restarts_and_stops(fleet: LocalFleet, tmp_path: Path) -> None:
    control = await fleet.start_seeder()
    data = tmp_path / "peer"
    config = tmp_path / "peer.yml"
    config.write_text(
        render_config(
            {"seeder": str(control), "data_dir": str(data), "name": "sv1", "bind": "127.0.0.1"}
            | {"torrent_port": 0, "labels": {"env": "test"}}
        )
    )
    pidfile = data / "shoal-peer.pid"
    bundle = await fleet.enroll("sv1")
    enrolled = _peer("enroll", "--bundle", str(bundle), "--data-dir", str(data))
    assert enrolled.returncode == 0, enrolled.stderr
    try:
        out = _peer("start", "--config", str(config))
        assert out.returncode == 0, out.stderr
        first = read_pid(pidfile)
        assert first is not None
        again = _peer("start", "--config", str(config))  # already running: same supervisor
        assert again.returncode == 0 and read_pid(pidfile) == first
        await _connected(fleet, "sv1", True)
        (daemon,) = _children(first.pid)
        os.kill(daemon, signal.SIGKILL)  # a crash: the supervisor starts a new daemon
        with trio.fail_after(30):
            while (kids := _children(first.pid)) in ([], [daemon]):
                await trio.sleep(0.1)
        assert kids != [daemon]
        await _connected(fleet, "sv1", True)
        assert _peer("status", "--config", str(config)).returncode == 0
    finally:
        stopped = _peer("stop", "--pidfile", str(pidfile))
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped", stopped.stderr
    assert not pidfile.exists()
    assert read_pid(pidfile) is None
    await _connected(fleet, "sv1", False)
    status = _peer("status", "--pidfile", str(pidfile))
    assert (status.returncode, status.stdout.strip()) == (3, "not running")
    assert "restart in" in (data / "shoal-peer.log").read_text()


def test_start_with_a_missing_config_says_so(tmp_path: Path) -> None:
    out = _peer("start", "--config", str(tmp_path / "nope.yml"))
    assert out.returncode == 1 and "cannot read it" in out.stderr


def test_on_an_installed_prefix_the_supervisor_runs_the_launcher(tmp_path: Path) -> None:
    """Without systemd as with it, the daemon runs under the prefix's launcher (which rolls a
    failed upgrade back); a prefix without one, or no prefix, runs this program."""
    config = tmp_path / "peer.yml"
    prefix = tmp_path / "opt"
    assert daemon_command(config, prefix)[-3:] == ["run", "--config", str(config)]
    assert daemon_command(config, prefix)[0] != str(prefix / "bin" / "shoal-peer")
    assert daemon_command(config, None) == daemon_command(config, prefix)
    assert Prefix(prefix).install_launcher()
    assert daemon_command(config, prefix) == [
        str(prefix / "bin" / "shoal-peer"), "run", "--config", str(config)
    ]  # fmt: skip
