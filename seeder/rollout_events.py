"""What the rollout machine (:mod:`seeder.machine`) takes in and gives out.

Events in: step reports, refusals, (re)connections, a restart, operator requests, gate results
and ticks of time. Effects out: the commands to send (each with the rollout's fencing token), a
gate to run, hosts whose live release changed, and what changed for the store and the timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seeder.model import StepRecord

# --- events in ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """The rollout was created: tell every target to stage. ``promotion``: the verdict of the
    promotion rules it was started under (recorded first in its timeline), if any applied."""

    promotion: dict[str, Any] | None = None


@dataclass(frozen=True)
class Report:
    host: str
    step: str
    attempt: int
    state: str
    result: str = ""
    detail: str = ""
    exit_code: int | None = None
    output: tuple[str, ...] = ()
    at: float = 0.0


@dataclass(frozen=True)
class Refused:
    host: str
    token: int
    reason: str


@dataclass(frozen=True)
class Connected:
    """A target's peer (re)connected: it gets the command of its current state again."""

    host: str


@dataclass(frozen=True)
class Restarted:
    """The seeder restarted with this rollout live: redo what died with the old process."""


@dataclass(frozen=True)
class Operator:
    action: str  # "pause", "resume" or "abort"
    kill: bool = False  # abort --now: kill running hooks too


@dataclass(frozen=True)
class GateResult:
    wave: int  # 0-based
    exit_code: int | None  # None: it did not run or timed out
    output: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class Tick:
    """Time passed: deadlines and bakes are checked against ``now``."""


Event = Start | Report | Refused | Connected | Restarted | Operator | GateResult | Tick


# --- effects out -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendStage:
    host: str
    release_id: str
    token: int


@dataclass(frozen=True)
class SendActivate:
    host: str
    release_id: str
    attempt: int
    token: int


@dataclass(frozen=True)
class SendAbort:
    host: str
    token: int
    kill: bool


@dataclass(frozen=True)
class RunGate:
    wave: int  # 0-based
    hosts: tuple[str, ...]
    command: str
    timeout: float


@dataclass(frozen=True)
class SetCurrent:
    """A host now runs this release (it reported a full activation)."""

    host: str
    release_id: str


Command = SendStage | SendActivate | SendAbort | RunGate | SetCurrent


@dataclass
class Effects:
    commands: list[Command] = field(default_factory=list)
    timeline: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dirty: set[str] = field(default_factory=set)  # targets whose persisted fields changed
    rollout_changed: bool = False
    step: StepRecord | None = None  # the new step record of a Report, to persist
    duplicate: bool = False  # a Report that changed nothing (already known)
