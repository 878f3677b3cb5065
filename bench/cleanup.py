"""Process-wide safety net for bench testbeds: run admin commands, kill what we started,
and make sure namespaces are deleted even when the run is interrupted.

Why a separate module: these pieces do not depend on the testbed layout, and keeping them apart
keeps `bench.netns` about topology and shaping.

Rules kept here: a process is only signalled through the process group of a leader we spawned
and have not yet reaped (so a reused pid is never hit), or because it lives inside a namespace
we created (`ip netns pids`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, Protocol

CMD_TIMEOUT = 30.0  # seconds for any single ip/tc command
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,8}$")  # interface names must stay <= 15 chars


class NetnsError(RuntimeError):
    """An ip/tc command failed; the message carries the command and its stderr."""


def sh(argv: Sequence[str], timeout: float = CMD_TIMEOUT, check: bool = True) -> str:
    """Run a short admin command (ip, tc, sysctl) and return its stdout."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def netns_list() -> set[str]:
    """Names of all namespaces `ip netns` knows (first word of each line)."""
    out = sh(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def killpg(proc: subprocess.Popen[Any], sig: int) -> None:
    """Signal the process group led by `proc`, only while its leader is not yet reaped.

    (A reaped leader's pid may be reused; stragglers are swept by namespace instead.)
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def sweep(namespaces: Sequence[str], timeout: float = 5.0) -> None:
    """SIGKILL every process still inside `namespaces` (which the caller created) until none
    is left or `timeout` passes: catches anything that left its process group."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = netns_list()
        pids = [
            int(p)
            for ns in namespaces
            if ns in live
            for p in sh(["ip", "netns", "pids", ns], check=False).split()
        ]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


class Closable(Protocol):
    """What the registry needs from a testbed."""

    prefix: str

    def close(self, grace: float = ...) -> None: ...


_LIVE: set[Closable] = set()
_LIVE_LOCK = threading.Lock()
_PREV_HANDLERS: dict[int, Any] = {}
_atexit_done = False


def _close_all() -> None:
    """atexit hook: close every testbed still open (errors are reported, not raised)."""
    with _LIVE_LOCK:
        beds = list(_LIVE)
    for bed in beds:
        try:
            bed.close(grace=2.0)
        except Exception as exc:  # at exit there is nobody left to raise to
            print(f"bench.netns: cleanup of {bed.prefix} failed: {exc}", flush=True)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so `with`/finally blocks and atexit run cleanup.

    (SIGINT already raises KeyboardInterrupt, which does the same.)
    """
    prev = _PREV_HANDLERS.get(signum)
    if callable(prev):  # someone else's handler decides; if it exits, cleanup still runs
        prev(signum, frame)
        return
    raise SystemExit(128 + signum)


def register(bed: Closable) -> None:
    """Track an open testbed; on first use hook atexit and (main thread only) SIGTERM/SIGHUP."""
    global _atexit_done
    with _LIVE_LOCK:
        _LIVE.add(bed)
        if not _atexit_done:
            atexit.register(_close_all)
            _atexit_done = True
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if sig not in _PREV_HANDLERS:
                    cur = signal.getsignal(sig)
                    if cur is not signal.SIG_IGN:
                        _PREV_HANDLERS[sig] = cur
                        signal.signal(sig, _on_signal)


def unregister(bed: Closable) -> None:
    """Forget a closed testbed; restore the previous signal handlers when none is left."""
    with _LIVE_LOCK:
        _LIVE.discard(bed)
        if not _LIVE and threading.current_thread() is threading.main_thread():
            for sig, prev in _PREV_HANDLERS.items():
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
            _PREV_HANDLERS.clear()


def cleanup_prefix(prefix: str) -> list[str]:
    """Delete namespaces left by a crashed (SIGKILLed) run that used exactly `prefix`.

    Kills the processes inside them first. Returns the names deleted.
    """
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"bad prefix {prefix!r}")
    mine = sorted(ns for ns in netns_list() if re.fullmatch(rf"{prefix}-(sw|h\d+)", ns))
    sweep(mine)
    for ns in mine:
        sh(["ip", "netns", "del", ns], check=False)
    return mine
