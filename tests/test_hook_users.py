"""Hooks as the right user, and hooks that try to outlive their timeout.

Real users made with ``useradd`` (and removed), real ``setsid`` and double forks, both ways of
tracking a hook's processes: a cgroup v2 where this machine has a writable one, and the PID scan
(forced with SHOAL_HOOK_TRACKING=scan).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from peer import hookprocs
from peer.hooks import HookOutcome, run_hook
from peer.preflight import runas_checks
from peer.runas import HOOK_PATH
from tests.test_hooks import alive, gone, read_pid, reaping, script

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
HAS_CGROUP = hookprocs._own_cgroup() is not None and os.geteuid() == 0


@pytest.fixture
def user() -> Iterator[tuple[str, str]]:
    """A fresh system user with no login shell and one supplementary group; removed after."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creating users needs root and useradd")
    tag = secrets.token_hex(3)
    name, group = f"shoal-t{tag}", f"shoal-g{tag}"
    subprocess.run(["groupadd", group], check=True, capture_output=True)
    home = f"/tmp/{name}-home"
    subprocess.run(
        ["useradd", "--home-dir", home, "--shell", "/usr/sbin/nologin", "-G", group, name],
        check=True,
        capture_output=True,
    )
    try:
        yield name, group
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is 0700 for root)."""
    path = Path(tempfile.mkdtemp(prefix="shoal-hook-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@ROOT_ONLY
async def test_runas_switches_uid_gid_and_groups_without_a_login_shell(
    user: tuple[str, str], work: Path
) -> None:
    name, group = user
    hook = script(
        work / "who.sh",
        "id -un\nid -gn\nid -Gn\n"
        'echo "$HOME|$USER|$LOGNAME|$SHELL|$PATH|$DEPLOYMENT_ID|${SUDO_USER-none}"\n'
        "grep -E '^(Uid|Gid):' /proc/self/status | tr -s '\\t' ' '\n",
    )
    env = {"DEPLOYMENT_ID": "r-1", "LIFECYCLE_EVENT": "AfterInstall", "HOME": "/root"}
    with trio.fail_after(10):
        result = await run_hook(hook, cwd=work, env=env, timeout=10, runas=name)
    assert result.outcome is HookOutcome.SUCCEEDED, result.detail + str(result.output)
    entry = pwd.getpwnam(name)
    uid, gid = entry.pw_uid, entry.pw_gid
    assert result.output[0] == name
    assert result.output[1] == name  # useradd's user private group
    assert sorted(result.output[2].split()) == sorted([name, group])  # no root group left over
    # A nologin shell does not matter: no shell or login runs between the peer and the hook.
    assert (
        result.output[3] == f"/tmp/{name}-home|{name}|{name}|/usr/sbin/nologin|{HOOK_PATH}|r-1|none"
    )
    assert result.output[4] == f"Uid: {uid} {uid} {uid} {uid}"  # real, effective, saved, fs
    assert result.output[5] == f"Gid: {gid} {gid} {gid} {gid}"
    assert f"(as {name}) succeeded" in result.detail


@ROOT_ONLY
async def test_a_removed_user_fails_preflight_and_the_hook(work: Path) -> None:
    name = f"shoal-gone{secrets.token_hex(3)}"
    (check,) = runas_checks([name])
    assert not check.ok and f"runas user {name!r} does not exist on this host" == check.detail
    hook = script(work / "ok.sh", "touch ran\n")
    result = await run_hook(hook, cwd=work, env={}, timeout=5, runas=name, name="Install")
    assert result.outcome is HookOutcome.FAILED and result.exit_code is None
    assert result.detail == (
        f"Install: ok.sh (as {name}) was not run: runas user {name!r} does not exist on this host"
    )
    assert not (work / "ran").exists()


def cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def listed(pid: int) -> bool:
    """Whether /proc still lists ``pid`` at all (a zombie included)."""
    return Path(f"/proc/{pid}").exists()


ESCAPES = (
    # 1. leaves the process group with setsid
    "setsid sleep 1000 &\necho $! > setsid.pid\n"
    # 2. a double fork: the middle process exits, the grandchild is an orphan in its own session
    "( setsid sleep 1001 & echo $! > orphan.pid ) &\n"
    # 3. an orphan that also clears its environment (no marker to find it by)
    "( env -i setsid sleep 1002 & echo $! > clean.pid ) &\n"
    "sleep 0.2\necho $$ > main.pid\necho escaped\nsleep 1000\n"
)
PIDS = ("main.pid", "setsid.pid", "orphan.pid", "clean.pid")


@pytest.fixture(params=["cgroup", "scan"])
def tracking(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    mode = str(request.param)
    if mode == "cgroup" and not HAS_CGROUP:
        pytest.skip("no writable cgroup v2 here (needs root and cgroup2 with cgroup.kill)")
    if mode == "scan":
        monkeypatch.setenv(hookprocs.FORCE_ENV, "scan")
    return mode


async def test_processes_that_left_the_group_are_killed_at_the_timeout(
    tracking: str, tmp_path: Path
) -> None:
    hook = script(tmp_path / "escape.sh", ESCAPES)
    with reaping(*(tmp_path / p for p in PIDS)):
        with trio.fail_after(15):
            result = await run_hook(hook, cwd=tmp_path, env={}, timeout=1.5, name="Start")
        assert result.outcome is HookOutcome.TIMED_OUT, result.detail
        assert "it and every process it started were killed" in result.detail
        for pid_file in PIDS:
            pid = int((tmp_path / pid_file).read_text())
            assert await gone(pid), f"{pid_file} ({pid}) survived the timeout ({tracking})"


async def test_abort_now_kills_what_left_the_group_and_the_tree_is_the_right_one(
    tracking: str, tmp_path: Path
) -> None:
    hook = script(tmp_path / "escape.sh", ESCAPES)
    kill = trio.Event()
    results = []
    with reaping(*(tmp_path / p for p in PIDS)), trio.fail_after(15):
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                results.append(
                    await run_hook(hook, cwd=tmp_path, env={}, timeout=60, name="Stop", kill=kill)
                )

            nursery.start_soon(run)
            pids = {p: await read_pid(tmp_path / p, limit=5) for p in PIDS}
            escaped = pids["orphan.pid"]
            cgroup = cgroup_of(escaped)
            if tracking == "cgroup":  # really held by a hook cgroup, not by luck of the scan
                assert "/shoal-hook-" in cgroup, cgroup
            else:
                assert "/shoal-hook-" not in cgroup, cgroup
                assert os.getppid() != escaped  # re-parented to us, the subreaper
                assert parent_of(escaped) == os.getpid()
            kill.set()
        (result,) = results
        assert result.outcome is HookOutcome.KILLED
        for name, pid in pids.items():
            assert await gone(pid), f"{name} ({pid}) survived the abort ({tracking})"
            if tracking == "scan" and name != "main.pid":
                # orphans re-parented to us were reaped, not left as zombies
                with trio.fail_after(5):
                    while listed(pid):
                        await trio.sleep(0.05)


async def test_a_daemon_left_by_a_successful_hook_lives_on(tracking: str, tmp_path: Path) -> None:
    hook = script(tmp_path / "start.sh", "setsid sleep 1000 > /dev/null 2>&1 &\necho $! > d.pid\n")
    with reaping(tmp_path / "d.pid"):
        with trio.fail_after(10):
            result = await run_hook(hook, cwd=tmp_path, env={}, timeout=10)
        assert result.outcome is HookOutcome.SUCCEEDED
        assert alive(int((tmp_path / "d.pid").read_text()))


@pytest.mark.skipif(not HAS_CGROUP, reason="no writable cgroup v2 here")
async def test_hook_cgroups_are_removed_once_empty(tmp_path: Path) -> None:
    base = hookprocs._own_cgroup()
    assert base is not None
    mine = f"{hookprocs.PREFIX}{os.getpid()}-"
    hook = script(tmp_path / "quick.sh", "echo hi\n")
    for _ in range(3):
        result = await run_hook(hook, cwd=tmp_path, env={}, timeout=5)
        assert result.ok
    assert [p.name for p in base.iterdir() if p.name.startswith(mine)] == []
    assert str(os.getpid()) in (base / "cgroup.procs").read_text().split()  # we stepped back


@ROOT_ONLY
def test_preflight_says_when_a_runas_user_cannot_reach_the_releases(
    user: tuple[str, str], work: Path
) -> None:
    name, _ = user
    releases = work / "data" / "releases"
    releases.mkdir(parents=True)
    (work / "data").chmod(0o700)  # a peer data dir closed to everyone but root
    (check,) = runas_checks([name], releases)
    assert not check.ok
    assert check.detail.startswith(f"user {name!r} cannot reach {releases}: {work / 'data'} is")
    assert "drwx------" in check.detail
    (work / "data").chmod(0o755)
    (check,) = runas_checks([name], releases)
    assert check.ok and check.detail == f"user {name!r} is usable"
    (check,) = runas_checks([name], work / "data" / "not-yet" / "releases")
    assert check.ok  # made later by the peer itself
