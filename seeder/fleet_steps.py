"""One host's install as data: its steps, what a probe says must change, and failure reasons.

Pure (no SSH, no clock of its own): :mod:`seeder.fleet_install` runs the steps and feeds the
results in. Every failure ends in one reason class an operator can act on; the CLI's final
report groups hosts by it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

STEPS = (
    "connect",
    "check python",
    "bundle",
    "check disk",
    "upload",
    "install",
    "configure",
    "enroll",
    "start",
    "wait connected",
)
PYTHON = (3, 11)  # what shoal's wheels need on the host (requires-python)
HEADROOM = 64 << 20  # bytes left free besides what the install itself takes


class Reason(StrEnum):
    UNREACHABLE = "unreachable"
    AUTH_REFUSED = "auth refused"
    HOST_KEY_CHANGED = "host key changed"
    HOST_KEY_UNKNOWN = "host key unknown"
    SUDO_REFUSED = "sudo refused"
    NO_PYTHON = "no python3"
    DISK_FULL = "disk full"
    INSTALL_FAILED = "install failed"
    ENROLL_FAILED = "enroll failed"
    SERVICE_FAILED = "service failed to start"
    REVOKE_FAILED = "revoke failed"
    TIMEOUT = "timeout"
    ERROR = "error"


_AGENT_REASONS = {
    "install": Reason.INSTALL_FAILED,
    "enroll": Reason.ENROLL_FAILED,
    "service": Reason.SERVICE_FAILED,
    "disk full": Reason.DISK_FULL,
    "timeout": Reason.TIMEOUT,
}


def reason_of(text: str) -> Reason:
    """The reason class of an SSH error's or the host agent's reason string."""
    try:
        return Reason(text)
    except ValueError:
        return _AGENT_REASONS.get(text, Reason.ERROR)


class Failed(Exception):
    """A step failed for a reason (raised inside a host's run, caught by the runner)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def classify_command(exit_code: int, stdout: str, stderr: str, python: str) -> Failed:
    """Why running the host agent produced no JSON answer."""
    text = (stderr or stdout).strip()
    if "a password is required" in text or "not in the sudoers" in text or "sudo:" in text:
        return Failed(Reason.SUDO_REFUSED, f"sudo -n refused: {text[-300:]}")
    if exit_code == 127 or "not found" in text:
        return Failed(Reason.NO_PYTHON, f"{python} not found on the host ({text[-200:]})")
    if "No space left" in text:
        return Failed(Reason.DISK_FULL, text[-300:])
    return Failed(Reason.ERROR, f"host agent exited {exit_code}: {text[-500:]}")


def check_python(probe: dict[str, Any], python: str) -> None:
    version = tuple(int(p) for p in str(probe["python"]).split("."))
    if version[:2] != PYTHON:
        raise Failed(
            Reason.NO_PYTHON,
            f"{python} is {probe['python_full']}; shoal needs Python"
            f" {PYTHON[0]}.{PYTHON[1]} (set ansible_python_interpreter to one)",
        )
    if not probe["venv"]:
        raise Failed(Reason.NO_PYTHON, f"{python} has no venv/ensurepip (install python3-venv)")


def space_needed(bundle_size: int) -> int:
    """Bytes an install takes at most: the tar, its wheels unpacked, the virtualenv."""
    return 5 * bundle_size + HEADROOM


def check_disk(probe: dict[str, Any], bundle_size: int, installing: bool) -> None:
    need = space_needed(bundle_size) if installing else HEADROOM
    for key, where in (("free_prefix", "the prefix"), ("free_data", "the data dir")):
        if int(probe[key]) < need:
            raise Failed(
                Reason.DISK_FULL,
                f"{probe[key] >> 20} MiB free on {where}'s file system; need {need >> 20} MiB",
            )
    if installing and int(probe["free_tmp"]) < bundle_size + HEADROOM:
        raise Failed(Reason.DISK_FULL, f"{probe['free_tmp'] >> 20} MiB free in the temp dir")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    """What differs on a host, from its probe."""

    install: bool
    config: bool
    unit: bool
    enroll: bool
    running: bool

    @property
    def restart(self) -> bool:
        return self.install or self.config or self.unit


def plan(
    probe: dict[str, Any],
    version: str,
    manifest: str,
    config_text: str,
    unit_text: str | None,
    enroll: bool,
) -> Plan:
    return Plan(
        install=probe["current"] != version or probe["installed"] != manifest,
        config=probe["config_sha"] != sha(config_text),
        unit=unit_text is not None and probe["unit_sha"] != sha(unit_text),
        enroll=enroll and not probe["enrolled"],
        running=bool(probe["running"]),
    )


@dataclass
class HostRun:
    """One host's progress and outcome, as shown live and in the final report."""

    name: str
    step: str = "waiting"
    state: str = "pending"  # pending, running, done, failed
    changes: list[str] = field(default_factory=list)
    reason: Reason | None = None
    detail: str = ""
    started: float | None = None
    ended: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)  # seconds spent in each step
    _since: float | None = None

    def _tick(self, now: float) -> None:
        if self._since is not None and self.state == "running":
            self.steps[self.step] = self.steps.get(self.step, 0.0) + now - self._since
        self._since = now

    def begin(self, step: str, now: float) -> None:
        if self.started is None:
            self.started = now
        self._tick(now)
        self.step, self.state = step, "running"

    def changed(self, what: str) -> None:
        self.changes.append(what)

    def finish(self, now: float) -> None:
        self._tick(now)
        self.state, self.ended = "done", now
        self.step = "done"

    def fail(self, reason: Reason, detail: str, now: float) -> None:
        self._tick(now)
        self.state, self.reason, self.detail, self.ended = "failed", reason, detail, now
        if self.started is None:
            self.started = now

    @property
    def outcome(self) -> str:
        if self.state == "failed":
            return "failed"
        if self.state != "done":
            return self.state
        return "changed" if self.changes else "unchanged"

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.name,
            "outcome": self.outcome,
            "step": self.step,
            "changes": list(self.changes),
            "reason": self.reason.value if self.reason else None,
            "detail": self.detail,
            "seconds": self.seconds,
            "steps": {k: round(v, 3) for k, v in self.steps.items()},
            **self.info,
        }
