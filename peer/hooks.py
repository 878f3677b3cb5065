"""Running one lifecycle hook script: own process group, timeout, runas, streamed output.

This is the CodeDeploy agent's hook-runner contract, reshaped for trio. A hook's result is
always a typed :class:`HookResult` (missing, not executable, timed out, killed on an operator's
abort, failed with an exit code, succeeded) rather than an exception, because a failing hook is
an ordinary, reportable outcome of a deployment, not a bug in the peer.

Process handling, and why:

- The script runs in a new session (``start_new_session=True``), so it and everything it starts
  share one process group, and in a tree of its own (:mod:`peer.hookprocs`: a cgroup v2 where
  one can be made, else a marker in the environment and a PID scan) that also holds the
  processes that leave the group (``setsid``, a double fork).
- On timeout, when the caller's ``kill`` event is set (an abort with ``--now``), and whenever
  ``run_hook`` does not return normally (the caller was cancelled, or ``on_line`` raised),
  the group and the whole tree get SIGKILL: a hook that is given up on leaves nothing behind.
- ``runas`` switches uid, gid and supplementary groups (``initgroups``) in the child before
  exec, with no shell or login in between. The environment is the caller's (the CodeDeploy
  variables) plus, from the passwd entry of the user the hook runs as, ``HOME``, ``USER``,
  ``LOGNAME`` and ``SHELL``, and a fixed ``PATH`` (:mod:`peer.runas`): nothing of the daemon's
  own environment leaks in.
- On a normal exit the group is left alone, because an ``ApplicationStart`` hook may
  legitimately start a daemon. Such a daemon inherits the output pipe; we keep reading for
  :data:`OUTPUT_GRACE` seconds after the script exits and then close our end, so the hook does not
  hang. A daemon that keeps writing to the inherited stdout will then get SIGPIPE, so daemons
  must redirect their output (CodeDeploy documents the same requirement: there the hook hangs).
- stdout and stderr are merged into one pipe and split into lines; each line is passed to
  ``on_line`` (awaited: a slow consumer slows the script down instead of growing a buffer) and
  the last ``tail_lines`` are kept for the result. Over-long lines are truncated.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import signal
import stat
import subprocess
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from peer import hookprocs
from peer.runas import RunAsError, hook_environment, resolve

OUTPUT_GRACE = 0.5
"""Seconds to keep reading output after the script exits (children may still hold the pipe)."""

REAP_LIMIT = 5.0
"""Seconds to wait for a SIGKILLed script to be reaped before giving up on it."""

READ_SIZE = 65536
TRUNCATED = " [...truncated]"
_spawn_lock = trio.Lock()  # one fork at a time: the daemon steps into the hook's cgroup for it


class HookOutcome(enum.Enum):
    """How a hook ended. Only SUCCEEDED lets a lifecycle continue."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSING = "missing"
    NOT_EXECUTABLE = "not_executable"
    TIMED_OUT = "timed_out"
    KILLED = "killed"  # the rollout was aborted with kill: the operator stopped it


@dataclass(frozen=True)
class HookResult:
    """What happened to one hook script.

    ``exit_code`` is the script's exit status (negative: killed by that signal); it is None
    when no process ran or the process was killed for its timeout. ``output`` holds the last
    lines of merged stdout/stderr; ``detail`` is a one-line description for operators.
    """

    outcome: HookOutcome
    exit_code: int | None
    output: tuple[str, ...]
    duration: float
    detail: str

    @property
    def ok(self) -> bool:
        return self.outcome is HookOutcome.SUCCEEDED


class _LineSplitter:
    """Turns a byte stream into decoded lines of at most ``max_bytes`` bytes each.

    Memory stays bounded: the tail of an over-long line is discarded up to its newline.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(1, max_bytes)
        self.buffer = bytearray()
        self.skipping = False

    def _decode(self, raw: bytes | bytearray) -> str:
        text = bytes(raw).decode("utf-8", errors="replace")
        return text[:-1] if text.endswith("\r") else text

    def feed(self, data: bytes | bytearray) -> list[str]:
        lines: list[str] = []
        self.buffer += data
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > self.max_bytes:
                    if not self.skipping:
                        lines.append(self._decode(self.buffer[: self.max_bytes]) + TRUNCATED)
                        self.skipping = True
                    self.buffer.clear()
                return lines
            raw = self.buffer[:end]
            del self.buffer[: end + 1]
            if self.skipping:
                self.skipping = False
            elif len(raw) > self.max_bytes:
                lines.append(self._decode(raw[: self.max_bytes]) + TRUNCATED)
            else:
                lines.append(self._decode(raw))

    def flush(self) -> list[str]:
        """The last line if it had no newline (unless it was the tail of a truncated line)."""
        rest, skipping = bytes(self.buffer), self.skipping
        self.buffer.clear()
        self.skipping = False
        return [self._decode(rest)] if rest and not skipping else []


def script_problem(script: Path) -> str | None:
    """Why ``script`` could not be started as a hook (missing, not a file, not executable)."""
    problem = _check_script(script)
    return None if problem is None else problem[1]


def _check_script(script: Path) -> tuple[HookOutcome, str] | None:
    """A problem that keeps the script from being started, or None."""
    try:
        info = script.stat()
    except (FileNotFoundError, NotADirectoryError):
        return HookOutcome.MISSING, "does not exist"
    except OSError as exc:
        return HookOutcome.NOT_EXECUTABLE, f"cannot be accessed: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return HookOutcome.NOT_EXECUTABLE, "is not a regular file"
    if not os.access(script, os.X_OK):
        return HookOutcome.NOT_EXECUTABLE, "is not executable (no x permission)"
    return None


def _command(script: Path) -> list[str]:
    """Absolute, so it does not depend on the child's working directory."""
    return [os.path.abspath(script)]


def _kill_all(pgid: int, tree: hookprocs.Tree) -> None:
    """SIGKILL the hook's process group and every process of its tree."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    tree.kill()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def run_hook(
    script: Path,
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the hook's own limit, enforced on the process group
    runas: str | None = None,
    on_line: Callable[[str], Awaitable[None]] | None = None,
    tail_lines: int = 50,
    max_line_bytes: int = 4096,
    name: str = "",
    kill: trio.Event | None = None,
) -> HookResult:
    """Run ``script`` to completion (or its timeout) and describe what happened.

    ``cwd`` is used as given and ``env`` as given plus the identity of the user the hook runs
    as and a fixed PATH (:func:`hook_environment`). ``name`` (e.g. the lifecycle event)
    prefixes ``detail``.

    Outcomes without a process: MISSING (no such file), NOT_EXECUTABLE (not a regular file, no
    execute permission, or exec refused it, e.g. a bad ``#!`` line). An unknown ``runas`` user,
    or a ``runas`` the peer has no right to switch to, is FAILED with ``exit_code`` None: the
    script exists and is fine, the host is not set up for it. An exception from ``on_line``
    kills the process group and propagates. When ``kill`` is set (before or while the script
    runs), the group gets SIGKILL and the outcome is KILLED.
    """
    shown = _shown(script, cwd)
    label = f"{name}: {shown}" if name else shown
    as_user = f" (as {runas})" if runas else ""
    tail: deque[str] = deque(maxlen=max(0, tail_lines))
    start = trio.current_time()

    def result(outcome: HookOutcome, what: str, code: int | None = None) -> HookResult:
        duration = trio.current_time() - start
        return HookResult(outcome, code, tuple(tail), duration, f"{label}{as_user} {what}")

    problem = _check_script(script)
    if problem is not None:
        return result(*problem)
    if kill is not None and kill.is_set():
        return result(HookOutcome.KILLED, "was not started: the rollout was aborted")
    try:
        ids = await trio.to_thread.run_sync(resolve, runas)  # NSS lookups may block
    except RunAsError as exc:
        return result(HookOutcome.FAILED, f"was not run: {exc}")
    tree = hookprocs.track(name or script.name)
    try:
        async with _spawn_lock:
            with tree.spawning():
                proc = await trio.lowlevel.open_process(
                    _command(script),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=os.fspath(cwd),
                    env={**hook_environment(env, ids.entry), **tree.env},
                    start_new_session=True,
                    user=ids.user,
                    group=ids.group,
                    extra_groups=ids.extra_groups,
                )
    except hookprocs.TrackingError as exc:
        tree.close()
        return result(HookOutcome.FAILED, f"could not be started: {exc}")
    except OSError as exc:
        tree.close()
        reason = exc.strerror or str(exc)
        if exc.filename is None:  # failed before exec: switching user, for instance
            return result(HookOutcome.FAILED, f"could not be started: {reason}")
        if os.fspath(exc.filename) == os.fspath(cwd):
            return result(HookOutcome.FAILED, f"could not enter {os.fspath(cwd)}: {reason}")
        if exc.errno == errno.ENOENT:
            reason += " (is the #! interpreter installed?)"
        return result(HookOutcome.NOT_EXECUTABLE, f"cannot be executed: {reason}")
    tree.started(proc.pid)

    start = trio.current_time()
    output = proc.stdout
    assert output is not None
    lines = _LineSplitter(max_line_bytes)
    eof = trio.Event()
    failure: list[BaseException] = []
    timed_out = False
    killed = False
    finished = False

    async def emit(line: str) -> None:
        tail.append(line)
        if on_line is not None:
            await on_line(line)

    async def pump(cancel: trio.CancelScope) -> None:
        try:
            while data := await output.receive_some(READ_SIZE):
                for line in lines.feed(data):
                    await emit(line)
        except Exception as exc:  # from on_line: stop everything, re-raised below
            failure.append(exc)
            cancel.cancel()
        eof.set()

    async def on_kill(event: trio.Event, waiting: trio.CancelScope) -> None:
        nonlocal killed
        await event.wait()
        killed = True
        waiting.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, nursery.cancel_scope)
            with trio.move_on_after(timeout) as waiting:
                if kill is not None:
                    nursery.start_soon(on_kill, kill, waiting)
                await proc.wait()
            if proc.returncode is None:
                timed_out = not killed
                _kill_all(proc.pid, tree)
                await proc.wait()
            ended = trio.current_time()
            with trio.move_on_after(OUTPUT_GRACE):
                await eof.wait()
            nursery.cancel_scope.cancel()
        if failure:
            raise failure[0]
        for line in lines.flush():
            await emit(line)
        finished = True
    finally:
        if not finished:
            _kill_all(proc.pid, tree)
            with trio.move_on_after(REAP_LIMIT, shield=True):
                await proc.wait()
        tree.close()
        with trio.CancelScope(shield=True):
            await output.aclose()

    duration = ended - start
    code = proc.returncode
    assert code is not None
    if killed and not timed_out and code < 0:
        outcome, code, what = (
            HookOutcome.KILLED,
            None,
            "was killed: the rollout was aborted; it and every process it started were killed",
        )
    elif timed_out:
        outcome, code, what = (
            HookOutcome.TIMED_OUT,
            None,
            f"timed out after {timeout:g}s; it and every process it started were killed",
        )
    elif code == 0:
        outcome, what = HookOutcome.SUCCEEDED, "succeeded"
    else:
        outcome, what = HookOutcome.FAILED, _describe_exit(code)
    return HookResult(outcome, code, tuple(tail), duration, f"{label}{as_user} {what}")


def _shown(script: Path, cwd: Path) -> str:
    """The script as operators know it: relative to the working directory when inside it."""
    try:
        return script.relative_to(cwd).as_posix()
    except ValueError:
        return os.fspath(script)
