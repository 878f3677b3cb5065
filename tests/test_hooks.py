"""peer.hooks.run_hook against real shell scripts: outcomes, output, process-group handling."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from peer.hooks import TRUNCATED, HookOutcome, run_hook, script_problem
from peer.runas import HOOK_PATH, runas_problem

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def script(path: Path, body: str, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs. A zombie counts as gone: orphans are reparented to pid 1,
    which in a container may never reap them."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def gone(pid: int, limit: float = 2.0) -> bool:
    """Wait (bounded) for ``pid`` to disappear; the kernel needs a moment after SIGKILL."""
    with trio.move_on_after(limit):
        while True:  # polling: there is nothing to wait on for another process's death
            if not alive(pid):
                break
            await trio.sleep(0.02)
    return not alive(pid)


def pid_in(path: Path) -> int | None:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text else None


async def read_pid(path: Path, limit: float = 3.0) -> int:
    """Wait (bounded) until the script under test has written its pid file."""
    with trio.fail_after(limit):
        while True:
            pid = pid_in(path)
            if pid is not None:
                return pid
            await trio.sleep(0.02)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def reaping(*pid_files: Path) -> Iterator[None]:
    """Make sure processes a test's script started do not outlive the test, even if run_hook
    is broken: kill each recorded pid and, for a script's own pid, its process group."""
    try:
        yield
    finally:
        for pid_file in pid_files:
            with contextlib.suppress(FileNotFoundError, ValueError):
                pid = int(pid_file.read_text())
                for kill in (os.killpg, os.kill):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        kill(pid, signal.SIGKILL)


async def test_success_sees_the_documented_env_and_cwd(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    hook = script(
        tmp_path / "ok.sh",
        'echo "event=$LIFECYCLE_EVENT"\necho "cwd=$(pwd)"\n'
        'echo "$HOME|$USER|$LOGNAME|$SHELL|$PATH"\necho "leak=${DAEMON_SECRET-unset}"\n',
    )
    env = {"PATH": "/daemon/bin", "HOME": "/daemon", "LIFECYCLE_EVENT": "BeforeInstall"}
    me = pwd.getpwuid(os.geteuid())
    os.environ["DAEMON_SECRET"] = "x"  # the daemon's own environment never reaches a hook
    try:
        with trio.fail_after(5):
            result = await run_hook(hook, cwd=work, env=env, timeout=10, name="BeforeInstall")
    finally:
        del os.environ["DAEMON_SECRET"]
    assert result.outcome is HookOutcome.SUCCEEDED and result.ok
    assert result.exit_code == 0
    identity = f"{me.pw_dir}|{me.pw_name}|{me.pw_name}|{me.pw_shell}|{HOOK_PATH}"
    assert result.output == ("event=BeforeInstall", f"cwd={work}", identity, "leak=unset")
    assert result.detail == f"BeforeInstall: {hook} succeeded"
    assert 0 <= result.duration < 5


async def test_failure_reports_exit_code_and_output_tail(tmp_path: Path) -> None:
    hook = script(tmp_path / "fail.sh", "for i in $(seq 1 100); do echo $i; done\nexit 3\n")
    with trio.fail_after(5):
        result = await run_hook(
            hook, cwd=tmp_path, env=ENV, timeout=10, tail_lines=5, name="BeforeInstall"
        )
    assert result.outcome is HookOutcome.FAILED
    assert result.exit_code == 3
    assert result.output == ("96", "97", "98", "99", "100")
    assert result.detail == "BeforeInstall: fail.sh exited with code 3"


async def test_stderr_is_merged_and_signals_are_reported(tmp_path: Path) -> None:
    hook = script(tmp_path / "sig.sh", "echo out\necho err >&2\nkill -TERM $$\n")
    with trio.fail_after(5):
        result = await run_hook(hook, cwd=tmp_path, env=ENV, timeout=10)
    assert result.outcome is HookOutcome.FAILED
    assert result.exit_code == -signal.SIGTERM
    assert result.output == ("out", "err")
    assert result.detail == "sig.sh was killed by signal SIGTERM"


async def test_missing_script_starts_nothing(tmp_path: Path) -> None:
    seen: list[str] = []

    async def on_line(line: str) -> None:
        seen.append(line)

    result = await run_hook(
        tmp_path / "scripts" / "nope.sh",
        cwd=tmp_path,
        env=ENV,
        timeout=10,
        on_line=on_line,
        name="AfterInstall",
    )
    assert result.outcome is HookOutcome.MISSING
    assert result.exit_code is None and result.output == () and seen == []
    assert result.detail == "AfterInstall: scripts/nope.sh does not exist"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("no-x-bit", "is not executable"),
        ("directory", "is not a regular file"),
        ("bad-interpreter", "cannot be executed"),
    ],
)
async def test_not_executable(tmp_path: Path, kind: str, expected: str) -> None:
    target = tmp_path / "hook"
    if kind == "no-x-bit":
        script(target, "echo hi\n", mode=0o644)
    elif kind == "directory":
        target.mkdir()
    else:
        target.write_text("#!/no/such/interpreter\n")
        target.chmod(0o755)
    result = await run_hook(target, cwd=tmp_path, env=ENV, timeout=10)
    assert result.outcome is HookOutcome.NOT_EXECUTABLE
    assert result.exit_code is None
    assert expected in result.detail


async def test_timeout_kills_the_whole_group_including_a_child_holding_stdout(
    tmp_path: Path,
) -> None:
    hook = script(
        tmp_path / "slow.sh",
        "sleep 1000 &\necho $! > child.pid\necho $$ > main.pid\necho started\nsleep 1000\n",
    )
    with reaping(tmp_path / "child.pid", tmp_path / "main.pid"):
        with trio.fail_after(5):
            result = await run_hook(
                hook, cwd=tmp_path, env=ENV, timeout=0.5, name="ApplicationStart"
            )
        assert result.outcome is HookOutcome.TIMED_OUT
        assert result.exit_code is None
        assert result.output == ("started",)
        assert "timed out after 0.5s" in result.detail
        assert 0.5 <= result.duration < 3
        assert await gone(int((tmp_path / "main.pid").read_text()))
        assert await gone(int((tmp_path / "child.pid").read_text()))


async def test_leftover_child_on_normal_exit_neither_hangs_nor_dies(tmp_path: Path) -> None:
    hook = script(tmp_path / "daemon.sh", "sleep 1000 &\necho $! > child.pid\necho done\n")
    with reaping(tmp_path / "child.pid"):
        start = trio.current_time()
        with trio.fail_after(5):
            result = await run_hook(hook, cwd=tmp_path, env=ENV, timeout=30)
        assert trio.current_time() - start < 3
        assert result.outcome is HookOutcome.SUCCEEDED
        assert result.output == ("done",)
        assert alive(int((tmp_path / "child.pid").read_text()))


async def test_lines_are_streamed_in_order_while_the_script_runs(tmp_path: Path) -> None:
    hook = script(tmp_path / "talk.sh", "echo one\necho two >&2\nsleep 0.4\nprintf three\n")
    seen: list[tuple[str, float]] = []

    async def on_line(line: str) -> None:
        seen.append((line, trio.current_time()))

    with trio.fail_after(5):
        result = await run_hook(hook, cwd=tmp_path, env=ENV, timeout=10, on_line=on_line)
    assert [line for line, _ in seen] == ["one", "two", "three"]
    assert seen[2][1] - seen[0][1] >= 0.3  # "one" arrived before the script finished
    assert result.output == ("one", "two", "three")


async def test_long_lines_are_truncated_and_bad_utf8_replaced(tmp_path: Path) -> None:
    hook = script(
        tmp_path / "long.sh",
        "head -c 10000 /dev/zero | tr '\\0' x\necho\nprintf 'caf\\351 ok\\r\\n'\n",
    )
    with trio.fail_after(5):
        result = await run_hook(hook, cwd=tmp_path, env=ENV, timeout=10, max_line_bytes=100)
    assert result.output == ("x" * 100 + TRUNCATED, "caf\ufffd ok")


async def test_cancelling_the_caller_kills_the_group(tmp_path: Path) -> None:
    hook = script(
        tmp_path / "stuck.sh", "sleep 1000 &\necho $! > child.pid\necho $$ > main.pid\nsleep 1000\n"
    )
    with reaping(tmp_path / "child.pid", tmp_path / "main.pid"), trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_hook(hook, cwd=tmp_path, env=ENV, timeout=60))
            main = await read_pid(tmp_path / "main.pid")
            child = await read_pid(tmp_path / "child.pid")
            nursery.cancel_scope.cancel()
        assert await gone(main)
        assert await gone(child)


async def test_an_on_line_error_propagates_and_kills_the_group(tmp_path: Path) -> None:
    hook = script(tmp_path / "chatty.sh", "echo $$ > main.pid\necho hello\nsleep 1000\n")

    async def on_line(line: str) -> None:
        raise ValueError(f"cannot forward {line!r}")

    with reaping(tmp_path / "main.pid"), trio.fail_after(5):
        with pytest.raises(ValueError, match="hello"):
            await run_hook(hook, cwd=tmp_path, env=ENV, timeout=60, on_line=on_line)
        assert await gone(int((tmp_path / "main.pid").read_text()))


async def test_unknown_runas_user_fails_without_running(tmp_path: Path) -> None:
    hook = script(tmp_path / "ok.sh", "touch ran\n")
    result = await run_hook(
        hook, cwd=tmp_path, env=ENV, timeout=10, runas="no-such-user-x", name="ApplicationStart"
    )
    assert result.outcome is HookOutcome.FAILED
    assert result.exit_code is None
    assert "runas user 'no-such-user-x' does not exist" in result.detail
    assert not (tmp_path / "ran").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
async def test_runas_switches_user() -> None:
    nobody = pwd.getpwnam("nobody")
    work = Path(tempfile.mkdtemp(prefix="shoal-hook-"))  # pytest's tmp_path is 0700 for root
    try:
        os.chmod(work, 0o755)
        hook = script(work / "who.sh", "id -u\nid -g\n")
        with trio.fail_after(5):
            result = await run_hook(hook, cwd=work, env=ENV, timeout=10, runas="nobody")
        assert result.outcome is HookOutcome.SUCCEEDED, result.detail
        assert result.output == (str(nobody.pw_uid), str(nobody.pw_gid))
    finally:
        shutil.rmtree(work)


async def test_runas_current_user_needs_no_switch(tmp_path: Path) -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    hook = script(tmp_path / "who.sh", "id -u\n")
    with trio.fail_after(5):
        result = await run_hook(hook, cwd=tmp_path, env=ENV, timeout=10, runas=me)
    assert result.outcome is HookOutcome.SUCCEEDED
    assert result.output == (str(os.geteuid()),)


async def test_the_kill_switch_kills_the_group_and_says_so(tmp_path: Path) -> None:
    hook = script(
        tmp_path / "long.sh",
        "sleep 1000 &\necho $! > child.pid\necho $$ > main.pid\necho working\nsleep 1000\n",
    )
    kill = trio.Event()
    results = []
    with reaping(tmp_path / "child.pid", tmp_path / "main.pid"), trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                results.append(
                    await run_hook(hook, cwd=tmp_path, env=ENV, timeout=60, name="Stop", kill=kill)
                )

            nursery.start_soon(run)
            main = await read_pid(tmp_path / "main.pid")
            child = await read_pid(tmp_path / "child.pid")
            kill.set()
        (result,) = results
        assert result.outcome is HookOutcome.KILLED and not result.ok
        assert result.exit_code is None
        assert result.detail == (
            "Stop: long.sh was killed: the rollout was aborted; it and every process it started"
            " were killed"
        )
        assert await gone(main)
        assert await gone(child)


async def test_a_set_kill_switch_starts_nothing(tmp_path: Path) -> None:
    hook = script(tmp_path / "h.sh", "touch ran\n")
    kill = trio.Event()
    kill.set()
    result = await run_hook(hook, cwd=tmp_path, env=ENV, timeout=5, kill=kill)
    assert result.outcome is HookOutcome.KILLED
    assert "was not started: the rollout was aborted" in result.detail
    assert not (tmp_path / "ran").exists()


async def test_an_unset_kill_switch_changes_nothing(tmp_path: Path) -> None:
    hook = script(tmp_path / "h.sh", "echo fine\n")
    result = await run_hook(hook, cwd=tmp_path, env=ENV, timeout=5, kill=trio.Event())
    assert result.outcome is HookOutcome.SUCCEEDED and result.output == ("fine",)


def test_runas_and_script_problems_for_preflight(tmp_path: Path) -> None:
    assert runas_problem(None) is None
    assert runas_problem(pwd.getpwuid(os.geteuid()).pw_name) is None
    assert runas_problem("shoal-no-such-user") == (
        "runas user 'shoal-no-such-user' does not exist on this host"
    )
    assert script_problem(script(tmp_path / "ok.sh", "")) is None
    assert script_problem(tmp_path / "nope.sh") == "does not exist"
    assert script_problem(script(tmp_path / "plain.sh", "", mode=0o644)) == (
        "is not executable (no x permission)"
    )
    assert script_problem(tmp_path) == "is not a regular file"
