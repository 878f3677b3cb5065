"""Watching real rollouts: ``rollout watch`` and ``logs --follow`` on real processes and sockets."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from seeder.localfleet import LocalFleet
from seeder.samplerepo import commit_all
from tests.conftest import make_app_repo, shoal

pytestmark = pytest.mark.integration

HOSTS = ["watch-1", "watch-2"]
# Addresses of their own, so that other suites running at the same time do not collide.
IPS = ["127.0.61.2", "127.0.61.3"]

HOLD_HOOK = """#!/bin/sh
DATA_DIR="$(dirname "$(dirname "$RELEASE_DIR")")"
echo "starting up, waiting for the hold flag to go"
i=0
while [ -e "$DATA_DIR/hold" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo "released"
if [ -e "$DATA_DIR/fail-$LIFECYCLE_EVENT" ]; then echo "told to fail"; exit 3; fi
"""


def hold_repo(path: Path) -> Path:
    """The test app, whose ApplicationStart prints, then waits while ``<data-dir>/hold`` exists."""
    repo = make_app_repo(path)
    (repo / "hooks" / "ApplicationStart.sh").write_text(HOLD_HOOK)
    commit_all(repo, "a hook that waits for a flag")
    return repo


async def read_until(stream: trio.abc.ReceiveStream, wanted: bytes, seen: bytes = b"") -> bytes:
    while wanted not in seen:
        chunk = await stream.receive_some(4096)
        assert chunk, f"the output ended before {wanted!r}: {seen.decode(errors='replace')}"
        seen += chunk
    return seen


async def read_to_end(stream: trio.abc.ReceiveStream) -> bytes:
    seen = b""
    while chunk := await stream.receive_some(4096):
        seen += chunk
    return seen


def cli(fleet: LocalFleet, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "seeder.cli", *args,
        "--seeder", str(fleet.control), "--identity", str(fleet.credential),
    ]  # fmt: skip


def in_terminal(args: list[str]) -> tuple[int, str]:
    """Run a command with stdout on a pseudo-terminal; its exit code and what it wrote."""
    main, sub = pty.openpty()
    try:
        env = {**os.environ, "COLUMNS": "100", "LINES": "40", "TERM": "xterm"}
        proc = subprocess.Popen(args, stdout=sub, stderr=subprocess.PIPE, env=env)
        os.close(sub)
        data = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            data += chunk
        return proc.wait(timeout=60), data.decode(errors="replace")
    finally:
        os.close(main)


async def start(fleet: LocalFleet) -> None:
    await fleet.start_seeder()
    for name, ip in zip(HOSTS, IPS, strict=True):
        await fleet.start_peer(name, ip)
    assert fleet.control is not None
    async with fleet.client() as client:
        await fleet.wait_connected(client, HOSTS)


def build(fleet: LocalFleet, repo: Path) -> str:
    return fleet.build_release(repo)


def start_rollout(fleet: LocalFleet, release: str) -> str:
    out = shoal(fleet.control, "rollout", "start", release, "--waves", "100%", "--json")
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["rollout_id"])


@pytest.mark.slow
async def test_watch_follows_a_rollout_to_its_end(fleet: LocalFleet, tmp_path: Path) -> None:
    repo = await trio.to_thread.run_sync(hold_repo, tmp_path / "app")
    with trio.fail_after(240):
        await start(fleet)
        release = await trio.to_thread.run_sync(build, fleet, repo)

        # 1. A rollout held in its ApplicationStart hooks, watched live: plain lines (stdout is
        # a pipe, not a terminal) as things change, then the final table, and exit 0.
        for host in HOSTS:
            (fleet.peer_dir(host) / "hold").touch()
        rid = await trio.to_thread.run_sync(start_rollout, fleet, release)
        proc = await trio.lowlevel.open_process(
            cli(fleet, "rollout", "watch", rid), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            seen = b""
            for host in HOSTS:
                seen = await read_until(
                    proc.stdout, f"{host:<20} activating  ApplicationStart".encode(), seen
                )
            for host in HOSTS:
                (fleet.peer_dir(host) / "hold").unlink()
            seen += await read_to_end(proc.stdout)
            assert await proc.wait() == 0, seen
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        stdout = seen.decode()
        lines = stdout.splitlines()
        for host in HOSTS:
            later = lines[lines.index(f"  {host:<20} activating  ApplicationStart") :]
            assert f"  {host:<20} succeeded   activate" in later, stdout
        assert f"rollout {rid} succeeded" in lines
        assert lines[-1].startswith(f"rollout {rid} succeeded: 2 succeeded in ")
        assert "\x1b[" not in stdout  # no terminal control codes into a pipe

        # 1b. On a terminal the same watch is the live view (redrawn in place), then the summary.
        code, screen = await trio.to_thread.run_sync(
            in_terminal, cli(fleet, "rollout", "watch", rid)
        )
        assert code == 0, screen
        assert "\x1b[" in screen  # drawn with terminal control codes
        assert "SUCCEEDED" in screen  # the counts table's column
        assert f"rollout {rid} succeeded: 2 succeeded in " in screen

        # 2. Watching a finished rollout prints its final state at once, as JSON lines too.
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "watch", rid, "--json")
        )
        assert out.returncode == 0, out.stderr
        docs = [json.loads(line) for line in out.stdout.splitlines()]
        assert docs[0]["kind"] == "snapshot" and docs[0]["rollout"]["state"] == "succeeded"
        assert docs[-1]["kind"] == "end" and docs[-1]["data"]["reason"] == "final"
        progress = docs[0]["progress"]  # the seeder kept each host's last download progress
        assert set(progress) == set(HOSTS)
        assert all(p["done"] == p["total"] > 0 for p in progress.values())

        # 3. A failing hook on one host, through start --wait --json: events live, exit 1.
        (fleet.peer_dir("watch-2") / "fail-ApplicationStart").touch()
        await trio.to_thread.run_sync(lambda: (repo / "VERSION").write_text("2\n"))
        await trio.to_thread.run_sync(commit_all, repo, "version 2")
        second = await trio.to_thread.run_sync(build, fleet, repo)
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "start", second, "--wait", "--json")
        )
        assert out.returncode == 1, out.stdout + out.stderr
        docs = [json.loads(line) for line in out.stdout.splitlines()]
        kinds = [d["kind"] for d in docs]
        assert kinds[0] == "snapshot" and kinds[-1] == "end"
        assert "progress" in kinds and "target" in kinds
        failed = [  # ("activate" itself fails too, maybe after the rollout did: not counted)
            d["data"]
            for d in docs
            if d["kind"] == "step"
            and d["data"]["state"] == "failed"
            and d["data"]["step"] != "activate"
        ]
        assert [(f["host"], f["step"], f["exit_code"]) for f in failed] == [
            ("watch-2", "ApplicationStart", 3)
        ]
        assert "told to fail" in failed[0]["output"]
        assert "released" in failed[0]["output"]
        # watch-1 (wave 1 of the default waves) switched and stays on the new release: the
        # rollout stopped part-way, which is "halted" ("failed" means live nowhere new).
        assert docs[-2]["kind"] == "rollout" and docs[-2]["data"]["state"] == "halted"
        assert "watch-2" in docs[-2]["data"]["error"], docs[-2]
        assert docs[0]["rollout"]["waves"][0]["hosts"] == ["watch-1"]

        # 4. Watching it afterwards in plain text shows the failed host's last output.
        out = await trio.to_thread.run_sync(lambda: shoal(fleet.control, "rollout", "watch"))
        assert out.returncode == 1
        assert "--- last output of watch-2 (ApplicationStart) ---" in out.stdout
        assert "told to fail" in out.stdout


async def test_logs_follow_shows_a_hook_line_while_the_hook_runs(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    repo = await trio.to_thread.run_sync(hold_repo, tmp_path / "app")
    with trio.fail_after(240):
        await start(fleet)
        release = await trio.to_thread.run_sync(build, fleet, repo)
        hold = fleet.peer_dir("watch-1") / "hold"
        hold.touch()
        rid = await trio.to_thread.run_sync(start_rollout, fleet, release)
        proc = await trio.lowlevel.open_process(
            cli(fleet, "logs", "watch-1", "--rollout", rid, "--follow"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            seen = await read_until(proc.stdout, b"waiting for the hold flag")
            # The line arrived while the hook still runs: it cannot finish before the flag goes.
            assert hold.exists()
            status = json.loads(shoal(fleet.control, "rollout", "status", rid, "--json").stdout)
            target = next(t for t in status["targets"] if t["host"] == "watch-1")
            running = [s for s in target["steps"] if s["step"] == "ApplicationStart"]
            assert [s["state"] for s in running] == ["running"]
            assert b"[ApplicationStart] starting up" in seen
            hold.unlink()
            # The rollout ends, and so does --follow of it, by itself.
            rest = await read_to_end(proc.stdout)
            assert await proc.wait() == 0
            assert b"[ApplicationStart] released" in rest
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        # Afterwards, without --follow: the whole output of the host's latest rollout.
        out = await trio.to_thread.run_sync(lambda: shoal(fleet.control, "logs", "watch-1"))
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines.index("[ApplicationStart] starting up, waiting for the hold flag to go") < (
            lines.index("[ApplicationStart] released")
        )
        assert any(line.startswith("[ValidateService] hook ValidateService") for line in lines)
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "logs", "watch-1", "--json")
        )
        records = [json.loads(line) for line in out.stdout.splitlines()]
        assert {r["rollout_id"] for r in records} == {rid}
        assert {r["host"] for r in records} == {"watch-1"}
        out = await trio.to_thread.run_sync(lambda: shoal(fleet.control, "logs", "nohost"))
        assert out.returncode == 1 and "unknown host 'nohost'" in out.stderr


async def test_watch_survives_a_seeder_restart(fleet: LocalFleet, tmp_path: Path) -> None:
    repo = await trio.to_thread.run_sync(hold_repo, tmp_path / "app")
    with trio.fail_after(240):
        await start(fleet)
        release = await trio.to_thread.run_sync(build, fleet, repo)
        for host in HOSTS:
            (fleet.peer_dir(host) / "hold").touch()
        rid = await trio.to_thread.run_sync(start_rollout, fleet, release)
        proc = await trio.lowlevel.open_process(
            cli(fleet, "rollout", "watch", rid), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            seen = b""
            for host in HOSTS:
                line = f"{host:<20} activating  ApplicationStart".encode()
                seen = await read_until(proc.stdout, line, seen)
            assert fleet.seeder is not None
            await fleet.stop(fleet.seeder, signal.SIGKILL)
            await fleet.start_seeder()
            for host in HOSTS:
                (fleet.peer_dir(host) / "hold").unlink()
            seen += await read_to_end(proc.stdout)
            errors = await read_to_end(proc.stderr)
            assert await proc.wait() == 0, seen + errors
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert b"lost the seeder" in errors and b"reconnecting" in errors
    assert seen.decode().splitlines()[-1].startswith(f"rollout {rid} succeeded: 2 succeeded")
