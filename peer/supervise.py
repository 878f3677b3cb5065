"""``--service none``: shoal-peer as its own supervised daemon, with a pidfile, without systemd.

``shoal-peer start`` spawns a *supervisor* in a new session (so it outlives the SSH session that
started it) and returns once the supervisor has written its pidfile. The supervisor runs
``shoal-peer run --config FILE`` as its child and restarts it when it exits unasked, after a
delay that doubles from 1 s to 30 s and resets once a child has run for a minute (what systemd's
``Restart=always`` + ``RestartSec`` would do). ``shoal-peer stop`` sends the supervisor SIGTERM;
the supervisor passes it to the daemon (which journals what was interrupted), waits, and removes
the pidfile. On an installed prefix the child is the prefix's launcher
(``PREFIX/bin/shoal-peer``, as the systemd unit's ``ExecStart``), which runs
``PREFIX/current/bin/shoal-peer`` and rolls back an upgrade whose new version does not come
back; elsewhere it is this program, through the *unresolved* path, so a restart after
``current`` was switched runs the new version.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from common.errors import ConfigError, ShoalError
from peer.prefix import Prefix, detect_prefix

log = logging.getLogger("shoal.peer.supervise")

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long resets the delay
STOP_GRACE = 30.0
START_WAIT = 15.0


def next_delay(previous: float | None, ran_for: float) -> float:
    """Seconds to wait before restarting a child that exited after ``ran_for`` seconds."""
    if previous is None or ran_for >= HEALTHY_AFTER:
        return FIRST_DELAY
    return min(MAX_DELAY, previous * 2)


@dataclass(frozen=True)
class Running:
    pid: int


def program() -> list[str]:
    """How to run this shoal-peer again: its console script as invoked, or ``python -m``."""
    argv0 = sys.argv[0]
    if os.path.isabs(argv0) and not argv0.endswith(".py") and os.access(argv0, os.X_OK):
        return [argv0]
    return [sys.executable, "-m", "peer.cli"]


def daemon_command(config: Path, prefix: Path | None) -> list[str]:
    """The command the supervisor keeps running: the launcher of ``prefix`` where it is
    installed (so an upgrade that does not come back is rolled back, as under systemd), else
    this program's ``run``."""
    if prefix is not None:
        launcher = Prefix(prefix).launcher
        if os.access(launcher, os.X_OK):
            return [str(launcher), "run", "--config", str(config)]
    return [*program(), "run", "--config", str(config)]


def read_pid(pidfile: Path) -> Running | None:
    """The live supervisor the pidfile names, or None (no file, stale, or another program)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return Running(pid) if b"supervise" in cmdline else None  # a reused pid is not ours


def start(config: Path, pidfile: Path, logfile: Path) -> Running:
    """Start the supervisor unless one runs; return it once its pidfile is written."""
    if (running := read_pid(pidfile)) is not None:
        return running
    if not config.is_file():
        raise ConfigError(f"config {config} does not exist")
    logfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*program(), "supervise", "--config", str(config), "--pidfile", str(pidfile)]
    with logfile.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        running = read_pid(pidfile)
        if running is not None and running.pid == proc.pid:
            return running
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.terminate()
    tail = " | ".join(logfile.read_text(errors="replace").splitlines()[-5:])
    raise ShoalError(f"shoal-peer supervisor did not start (log {logfile}): {tail}")


def stop(pidfile: Path, grace: float = STOP_GRACE + 10) -> bool:
    """Stop the supervisor (and its daemon); False if none was running."""
    running = read_pid(pidfile)
    if running is None:
        pidfile.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while read_pid(pidfile) is not None and _alive(running.pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.pid, signal.SIGKILL)  # the supervisor leads its session
            break
        time.sleep(0.05)
    pidfile.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def supervise(config: Path, pidfile: Path) -> None:
    """The supervisor's body (runs until SIGTERM/SIGINT). One supervisor per pidfile: it holds
    an exclusive lock on ``pidfile.lock`` for its whole life."""
    lock = (pidfile.parent / f"{pidfile.name}.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ShoalError(f"another supervisor holds {pidfile}.lock") from None
    tmp = pidfile.with_name(f".{pidfile.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, pidfile)
    try:
        trio.run(_loop, daemon_command(config, detect_prefix()))
    finally:
        with contextlib.suppress(OSError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()
        lock.close()


async def _loop(cmd: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_signalled, nursery.cancel_scope)
        delay: float | None = None
        while True:
            began = trio.current_time()
            try:
                proc = await trio.lowlevel.open_process(cmd)
            except OSError as exc:  # e.g. the launcher's interpreter went away: keep trying
                code: int | str = f"no start ({exc.strerror or exc})"
            else:
                try:
                    code = await proc.wait()
                finally:
                    with trio.CancelScope(shield=True):
                        await _end(proc)
            ran = trio.current_time() - began
            delay = next_delay(delay, ran)
            log.warning("shoal-peer exited with %s after %.1fs; restart in %.0fs", code, ran, delay)
            await trio.sleep(delay)


async def _until_signalled(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s: stopping shoal-peer", signal.Signals(signum).name)
            scope.cancel()
            return


async def _end(proc: trio.Process) -> None:
    """Stop the daemon: SIGTERM, then SIGKILL after the grace period."""
    if proc.returncode is None:
        proc.terminate()
        with trio.move_on_after(STOP_GRACE):
            await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
