"""The stable launcher of an installed peer: ``PREFIX/bin/shoal-peer``, and its upgrade files.

An upgrade switches ``PREFIX/current`` to a new version and restarts the daemon. If that version
does not come back (it crashes at start, or never reaches the seeder), nothing *inside* it can be
trusted to notice. So the daemon runs under this small supervisor, which belongs to no version:
it is copied verbatim into ``PREFIX/bin/`` and run by the base interpreter in isolated mode
(``-I``), and imports nothing but the standard library. It

- runs ``PREFIX/current/bin/shoal-peer ARGS`` as its child and forwards SIGTERM, SIGINT and SIGHUP;
- restarts the child when it exits with RESTART (the daemon asks for it after switching versions);
- while an upgrade is pending (``upgrade.json`` written by the old version, no
  ``upgrade-healthy.json`` yet from the new one), counts every start of the new version that exits
  or stays unhealthy past the plan's health timeout; after ``max_starts`` of them it switches
  ``current`` back to the old version, writes ``upgrade-result.json`` with the reason, and starts
  the old version, which reports the rollback to the seeder;
- otherwise exits with the child's exit status (systemd's ``Restart=`` takes over from there).

The systemd unit runs this launcher as its main process (``ExecStart=PREFIX/bin/shoal-peer run
...``; ``shoal fleet install`` writes both), so every start — a reboot in the middle of an
upgrade included — goes through the pending-upgrade check above: a new version that crashes at
start is rolled back instead of being restarted by systemd forever.

Why a count and a deadline: a start can fail once for a passing reason (a port not yet released),
so a deterministic crash is told apart by K starts (default 3); a version that starts but never
connects is caught by the deadline.

The three files, each with one writer: ``upgrade.json`` (the old version: the plan),
``upgrade-healthy.json`` (the new version, once connected), ``upgrade-result.json`` (this launcher,
on a rollback). The daemon that reports the outcome removes all three.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESTART = 75  # the daemon's exit status asking for a restart into `current` (EX_TEMPFAIL)
LAUNCHED = "SHOAL_LAUNCHER"  # set in the child's environment: it runs under this launcher
PLAN = "upgrade.json"
HEALTHY = "upgrade-healthy.json"
RESULT = "upgrade-result.json"
POLL = 0.2
STOP_GRACE = 20.0  # seconds an unhealthy child has to stop before SIGKILL
PR_SET_PDEATHSIG = 1


def read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON state file, or None if it is absent or unreadable (half-written is absent:
    every write is atomic)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a state file atomically and durably (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        json.dump(data, out, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def current_version(prefix: Path) -> str | None:
    """The version ``PREFIX/current`` points at (its target's name)."""
    try:
        return Path(os.readlink(prefix / "current")).name
    except OSError:
        return None


def switch_current(prefix: Path, version: str) -> None:
    """Point ``PREFIX/current`` at ``versions/<version>`` in one atomic rename."""
    tmp = prefix / ".current.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(Path("versions") / version, tmp)
    os.replace(tmp, prefix / "current")


def pending_plan(prefix: Path) -> dict[str, Any] | None:
    """The upgrade waiting for its new version to prove itself, if any."""
    plan = read_json(prefix / PLAN)
    if plan is None or (prefix / HEALTHY).exists() or (prefix / RESULT).exists():
        return None
    return plan


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """The child gets SIGKILL if the launcher dies (so a killed launcher leaves no orphan)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Launcher:
    def __init__(self, prefix: Path, args: list[str]) -> None:
        self.prefix = prefix
        self.args = args
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def _forward(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._forward)
        failures = 0
        status = 0
        while True:
            if self.stopping:  # e.g. a SIGTERM between two starts: start nothing more
                return status
            plan = pending_plan(self.prefix)
            started = time.monotonic()
            status, why = self._run_child(plan)
            if self.stopping:
                return status
            if status == RESTART:
                failures = 0
                continue
            plan = pending_plan(self.prefix)
            if plan is None or current_version(self.prefix) != plan.get("to_version"):
                return status
            failures += 1
            reason = f"{why} {time.monotonic() - started:.1f}s after it started"
            _say(f"new version {plan.get('to_version')} did not come back ({reason})")
            if failures >= int(plan.get("max_starts", 3)):
                if not self._roll_back(plan, failures, reason):
                    return status  # nothing to go back to: the service manager takes over
                failures = 0
            else:
                time.sleep(min(0.5 * 2**failures, 5.0))

    def _run_child(self, plan: dict[str, Any] | None) -> tuple[int, str]:
        program = self.prefix / "current" / "bin" / "shoal-peer"
        env = {**os.environ, LAUNCHED: "1"}
        try:
            self.child = subprocess.Popen(
                [str(program), *self.args],
                env=env,
                process_group=0,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            return 127, f"could not be started ({exc.strerror or exc})"
        deadline = None
        if plan is not None:
            deadline = time.monotonic() + float(plan.get("health_timeout", 120))
        told = False  # a stop that came while the child was being started reaches it here
        while True:
            try:
                status = self.child.wait(timeout=POLL)
                break
            except subprocess.TimeoutExpired:
                pass
            if self.stopping and not told:
                told = True
                with contextlib.suppress(ProcessLookupError):
                    self.child.terminate()
            if deadline is not None and time.monotonic() > deadline and not self.stopping:
                if pending_plan(self.prefix) is None:  # healthy (and reported) in time
                    deadline = None
                    continue
                self._stop_child()
                timeout = float(plan.get("health_timeout", 120)) if plan else 0
                return 1, f"was not healthy (connected to the seeder) within {timeout:.0f}s"
        if status < 0:
            return 128 - status, f"was killed by {signal.Signals(-status).name}"
        return status, f"exited with status {status}"

    def _stop_child(self) -> None:
        assert self.child is not None
        with contextlib.suppress(ProcessLookupError):
            self.child.terminate()
        try:
            self.child.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()

    def _roll_back(self, plan: dict[str, Any], starts: int, reason: str) -> bool:
        """Switch back to the plan's previous version; False if it is not installed (then the
        failure is recorded and nothing is switched)."""
        back = str(plan.get("from_version", ""))
        failed = f"shoal {plan.get('to_version')} did not come back after {starts} start(s)"
        if not back or not (self.prefix / "versions" / back).is_dir():
            detail = f"{failed} (last: {reason}); cannot roll back: {back!r} is not installed"
            write_json(self.prefix / RESULT, {"state": "failed", "reason": detail, "at": _now()})
            _say(detail)
            return False
        switch_current(self.prefix, back)
        detail = f"{failed} (last: {reason}); rolled back to {back}"
        write_json(self.prefix / RESULT, {"state": "rolled_back", "reason": detail, "at": _now()})
        _say(detail)
        return True


def _now() -> float:
    return time.time()


def _say(text: str) -> None:
    print(f"shoal-peer launcher: {text}", file=sys.stderr, flush=True)


def main() -> int:
    prefix = Path(__file__).resolve().parent.parent
    return Launcher(prefix, sys.argv[1:]).run()


if __name__ == "__main__":
    sys.exit(main())
