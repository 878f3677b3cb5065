"""The rollout machine: ``apply(rollout, event, now) -> (rollout, effects)``. No IO, no clock.

Every change of a rollout or of one of its targets happens here, as a fold over events: peer
step reports, refusals, connections, operator requests, gate results and ticks of time. The
result says what to send to whom (every command carries the rollout's fencing token), which gate
to run, which targets changed (for the store) and which timeline entries to record. Where each
state may go is :mod:`seeder.states`' table; this module decides when a trigger fires.

``apply`` updates the model in place so that one event costs O(1) in the number of targets
(only a wave start, an abort or the stage deadline touch a whole wave or rollout, once each).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from common.errors import ShoalError
from common.messages import STAGE_STEPS
from seeder.model import ROLLBACK_ATTEMPT, RolloutModel, StepRecord, TargetModel
from seeder.states import (
    FAILURES,
    SETTLED,
    TERMINAL,
    RolloutState,
    RolloutTrigger,
    TargetState,
    TargetTrigger,
    rollout_next,
    target_next,
)

RS, RT, TS, TT = RolloutState, RolloutTrigger, TargetState, TargetTrigger
FINAL_STEP_STATES = ("succeeded", "failed")


class NotAllowed(ShoalError):
    """An operator request that the rollout's state does not allow (e.g. resume a halted one)."""


# --- events in ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """The rollout was created: tell every target to stage."""


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


def apply(r: RolloutModel, event: Event, now: float) -> tuple[RolloutModel, Effects]:
    fx = Effects()
    if isinstance(event, Start):
        for t in r.targets.values():
            _target(r, t, TT.STAGE_SENT, now, fx)
            fx.commands.append(SendStage(t.host, t.release_id, r.token))
        _timeline_rollout(r, fx)
    elif isinstance(event, Report):
        _report(r, event, now, fx)
    elif isinstance(event, Refused):
        refused = r.targets.get(event.host)
        if refused is not None and event.token == r.token:
            refused.error = f"refused by the peer: {event.reason}"
            _target(r, refused, TT.REFUSED, now, fx)
    elif isinstance(event, Connected):
        _resend(r, event.host, fx)
    elif isinstance(event, Restarted):
        if r.state is RS.GATING:
            fx.commands.append(_gate(r))
    elif isinstance(event, Operator):
        _operator(r, event, now, fx)
    elif isinstance(event, GateResult):
        _gate_result(r, event, now, fx)
    elif isinstance(event, Tick):
        _deadlines(r, now, fx)
    _advance(r, now, fx)
    return r, fx


# --- events ------------------------------------------------------------------------------------


def _report(r: RolloutModel, ev: Report, now: float, fx: Effects) -> None:
    t = r.targets.get(ev.host)
    if t is None:
        fx.duplicate = True
        return
    key = (ev.step, ev.attempt)
    known = t.steps.get(key)
    if known is not None and (known.state in FINAL_STEP_STATES or known.state == ev.state):
        fx.duplicate = True
        return
    record = StepRecord(
        ev.step,
        ev.attempt,
        ev.state,
        ev.result,
        ev.detail,
        ev.exit_code,
        ev.at or now,
        list(ev.output),
    )
    t.steps[key] = record
    t.version += 1
    fx.step = record
    t.step = ev.step
    t.updated_at = now
    fx.dirty.add(t.host)
    fx.timeline.append(
        (
            "step",
            {
                "host": t.host,
                "step": ev.step,
                "attempt": ev.attempt,
                "state": ev.state,
                "result": ev.result,
                "detail": ev.detail,
                "exit_code": ev.exit_code,
                "output": list(ev.output),
            },
        )
    )
    trigger = _trigger_of(ev)
    if ev.state == "failed" and ev.step not in ("activate", "stage") and not t.error:
        t.error = _step_failure(ev)
    if trigger is None:
        return
    if trigger in (TT.STAGE_FAILED, TT.ACTIVATE_FAILED) and not t.error:
        t.error = _step_failure(ev)
    before = t.state
    _target(r, t, trigger, now, fx)
    if t.state is TS.SUCCEEDED and before is TS.ACTIVATING:
        fx.commands.append(SetCurrent(t.host, t.release_id))
        if r.state is RS.ROLLING_BACK:
            r.rollback_queue.append(t.host)  # it finished after the halt: it goes back too
    elif t.state is TS.ROLLED_BACK and t.previous is not None:
        fx.commands.append(SetCurrent(t.host, t.previous))


def _trigger_of(ev: Report) -> TargetTrigger | None:
    if ev.step == "stage" or ev.step in STAGE_STEPS:
        if ev.state == "failed":
            return TT.STAGE_FAILED
        if ev.step == "stage" and ev.state == "succeeded":
            return TT.STAGE_OK
        return TT.STAGE_PROGRESS if ev.state == "running" else None
    if ev.step == "activate" and ev.state in FINAL_STEP_STATES:
        return TT.ACTIVATE_OK if ev.state == "succeeded" else TT.ACTIVATE_FAILED
    return None


def _step_failure(ev: Report) -> str:
    what = ev.result or "failed"
    code = f" (exit {ev.exit_code})" if ev.exit_code is not None else ""
    detail = f": {ev.detail}" if ev.detail else ""
    return f"{ev.step} {what}{code}{detail}"


def _resend(r: RolloutModel, host: str, fx: Effects) -> None:
    t = r.targets.get(host)
    if t is None:
        return
    if r.state in TERMINAL:
        if r.state is RS.ABORTED and t.state not in SETTLED:
            fx.commands.append(SendAbort(host, r.token, kill=False))
        return
    if t.state in (TS.PENDING, TS.STAGING):
        fx.commands.append(SendStage(host, t.release_id, r.token))
    elif t.state is TS.ACTIVATING:
        fx.commands.append(SendActivate(host, t.release_id, 1, r.token))
    elif t.state is TS.ROLLING_BACK and t.previous is not None:
        fx.commands.append(SendActivate(host, t.previous, ROLLBACK_ATTEMPT, r.token))


def _operator(r: RolloutModel, ev: Operator, now: float, fx: Effects) -> None:
    if ev.action == "pause":
        if r.state is RS.PAUSED:
            return  # already paused: nothing to do
        _rollout(r, RT.PAUSE, now, fx, verb="pause")
        r.paused_from = "staging" if r.wave < 0 else "activating"
    elif ev.action == "resume":
        if r.state is not RS.PAUSED:
            raise NotAllowed(f"rollout {r.rollout_id} is {r.state}, not paused")
        trigger = RT.RESUME_STAGING if r.paused_from == "staging" else RT.RESUME
        _rollout(r, trigger, now, fx, verb="resume")
        r.paused_from = ""
    elif ev.action == "abort":
        _rollout(r, RT.ABORT, now, fx, verb="abort")
        r.error = "aborted by an operator" + (": running hooks killed" if ev.kill else "")
        for t in r.targets.values():
            if t.state not in SETTLED:
                fx.commands.append(SendAbort(t.host, r.token, ev.kill))
        _timeline_rollout(r, fx)
    else:
        raise NotAllowed(f"unknown operator request {ev.action!r}")


def _gate_result(r: RolloutModel, ev: GateResult, now: float, fx: Effects) -> None:
    if r.state is not RS.GATING or ev.wave != r.wave:
        return  # a gate of a paused or finished wave: its result no longer decides anything
    fx.timeline.append(
        (
            "gate",
            {
                "wave": ev.wave + 1,
                "exit_code": ev.exit_code,
                "output": list(ev.output),
                "detail": ev.detail,
            },
        )
    )
    if ev.exit_code == 0:
        _next_wave(r, now, fx)
        return
    why = ev.detail or f"exited {ev.exit_code}"
    _halt(r, f"the gate after wave {ev.wave + 1} failed ({why})", now, fx)


def _deadlines(r: RolloutModel, now: float, fx: Effects) -> None:
    if r.counts[TS.PENDING] + r.counts[TS.STAGING] and now > r.stage_deadline:
        error = f"not staged within the {r.options.stage_timeout:g}s stage timeout"
        for t in r.targets.values():
            if t.state in (TS.PENDING, TS.STAGING):
                t.error = error
                _target(r, t, TT.DEADLINE, now, fx)
    while r.heap and r.heap[0][0] < now:
        due, host = heapq.heappop(r.heap)
        t = r.targets[host]
        if t.deadline == due and t.state in (TS.ACTIVATING, TS.ROLLING_BACK):
            t.error = t.error or f"no result within the {r.options.activate_timeout:g}s deadline"
            _target(r, t, TT.DEADLINE, now, fx)


# --- moving the rollout on ---------------------------------------------------------------------


def _advance(r: RolloutModel, now: float, fx: Effects) -> None:
    """Fire every trigger whose condition holds, until none does."""
    for _ in range(len(r.plan.waves) * 4 + 8):  # each pass moves on or returns
        if r.state is RS.STAGING:
            if not _staging(r, now, fx):
                return
        elif r.state is RS.ACTIVATING:
            if not _activating(r, now, fx):
                return
        elif r.state is RS.BAKING:
            if now < r.bake_until:
                return
            if r.options.gate:
                _rollout(r, RT.BAKED, now, fx)
                fx.commands.append(_gate(r))
                return
            _next_wave(r, now, fx)
        elif r.state is RS.ROLLING_BACK:
            _rolling_back(r, now, fx)
            return
        else:
            return


def _staging(r: RolloutModel, now: float, fx: Effects) -> bool:
    total = len(r.targets)
    failed = [t for t in r.targets.values() if t.state in FAILURES] if r.counts[TS.FAILED] else []
    possible = total - len(failed)
    need = r.plan.min_staged
    if len(failed) > r.plan.max_failures or possible < need:
        r.error = f"staging failed on {_hosts(failed)}; nothing was activated" + (
            f" (--min-staged needs {need} of {total})" if possible < need else ""
        )
        _rollout(r, RT.STAGE_FELL_SHORT, now, fx)
        return False
    if r.counts[TS.STAGED] >= need:
        _rollout(r, RT.STAGED_ENOUGH, now, fx)
        _start_wave(r, 0, now, fx)
        return True
    return False


def _activating(r: RolloutModel, now: float, fx: Effects) -> bool:
    reason = _over_budget(r)
    if reason:
        _halt(r, reason, now, fx)
        return True
    w = r.wave
    if r.wave_settled[w] == len(r.plan.waves[w]):
        _rollout(r, RT.WAVE_DONE, now, fx)
        r.bake_until = now + r.options.bake
        fx.timeline.append(("wave", _wave_entry(r, w, "done")))
        return True
    limit = r.options.concurrency or len(r.targets)
    while r.ready and r.in_flight < limit:
        t = r.targets[r.ready.popleft()]
        if t.state is not TS.STAGED:
            continue
        t.activated = True
        t.deadline = now + r.options.activate_timeout
        heapq.heappush(r.heap, (t.deadline, t.host))
        _target(r, t, TT.ACTIVATE_SENT, now, fx)
        fx.commands.append(SendActivate(t.host, t.release_id, 1, r.token))
    return False


def _rolling_back(r: RolloutModel, now: float, fx: Effects) -> None:
    limit = r.options.concurrency or len(r.targets)
    while r.rollback_queue and r.in_flight < limit:
        t = r.targets[r.rollback_queue.popleft()]
        if t.state is not TS.SUCCEEDED:
            continue
        if t.previous is None:
            t.error = "no previous release to go back to: it stays on " + t.release_id
            _target(r, t, TT.NO_PREVIOUS, now, fx)
            continue
        t.deadline = now + r.options.activate_timeout
        heapq.heappush(r.heap, (t.deadline, t.host))
        _target(r, t, TT.ROLLBACK_SENT, now, fx)
        fx.commands.append(SendActivate(t.host, t.previous, ROLLBACK_ATTEMPT, r.token))
    if r.in_flight or r.rollback_queue:
        return
    stuck = [t for t in r.targets.values() if t.state is TS.ROLLBACK_FAILED]
    if stuck:
        r.error += f"; rollback failed on {_hosts(stuck)}"
        _rollout(r, RT.ROLLBACK_FAILED, now, fx)
    else:
        back = r.counts[TS.ROLLED_BACK]
        r.error += f"; rolled back {back} host(s) to their previous release"
        _rollout(r, RT.ROLLBACK_DONE, now, fx)


def _over_budget(r: RolloutModel) -> str:
    total_failed = r.counts[TS.FAILED]
    w = r.wave
    wave_budget = r.plan.wave_max_failures[w]
    if total_failed > r.plan.max_failures:
        failed = [t for t in r.targets.values() if t.state is TS.FAILED]
        return (
            f"{total_failed} failure(s) exceed --max-failures {r.options.max_failures} "
            f"({r.plan.max_failures} of {len(r.targets)}): {_hosts(failed)}"
        )
    if wave_budget is not None and r.wave_failed[w] > wave_budget:
        failed = [
            r.targets[h]
            for h in r.plan.waves[w]
            if r.targets[h].state is TS.FAILED and r.targets[h].activated
        ]
        return (
            f"{r.wave_failed[w]} failure(s) in wave {w + 1} exceed --wave-max-failures "
            f"{r.options.wave_max_failures} ({wave_budget}): {_hosts(failed)}"
        )
    return ""


def _halt(r: RolloutModel, reason: str, now: float, fx: Effects) -> None:
    r.error = f"halted: {reason}"
    if r.options.auto_rollback:
        _rollout(r, RT.ROLLBACK, now, fx)
        r.rollback_queue.extend(
            h for wave in r.plan.waves for h in wave if r.targets[h].state is TS.SUCCEEDED
        )
    else:
        _rollout(r, RT.HALT, now, fx)


def _next_wave(r: RolloutModel, now: float, fx: Effects) -> None:
    if r.wave + 1 >= len(r.plan.waves):
        failed = [t for t in r.targets.values() if t.state in FAILURES]
        if failed:
            r.error = f"succeeded within the failure budget; failed on {_hosts(failed)}"
        _rollout(r, RT.LAST_WAVE_PASSED, now, fx)
        return
    _rollout(r, RT.GATE_PASSED if r.state is RS.GATING else RT.NEXT_WAVE, now, fx)
    _start_wave(r, r.wave + 1, now, fx)


def _start_wave(r: RolloutModel, w: int, now: float, fx: Effects) -> None:
    r.wave = w
    fx.rollout_changed = True
    r.ready.clear()
    r.ready.extend(h for h in r.plan.waves[w] if r.targets[h].state is TS.STAGED)
    fx.timeline.append(("wave", _wave_entry(r, w, "activating")))


def _gate(r: RolloutModel) -> RunGate:
    return RunGate(r.wave, tuple(r.plan.waves[r.wave]), r.options.gate, r.options.gate_timeout)


# --- the two writers of state ------------------------------------------------------------------


def _rollout(
    r: RolloutModel, trigger: RolloutTrigger, now: float, fx: Effects, verb: str = ""
) -> None:
    new = rollout_next(r.state, trigger)
    if new is None:
        raise NotAllowed(
            f"cannot {verb or trigger.value} rollout {r.rollout_id}: it is {r.state.value}"
        )
    r.state = new
    r.updated_at = now
    fx.rollout_changed = True
    if trigger is not RT.ABORT:  # abort records its entry once its error text is set
        _timeline_rollout(r, fx)


def _target(
    r: RolloutModel, t: TargetModel, trigger: TargetTrigger, now: float, fx: Effects
) -> None:
    new = target_next(t.state, trigger)
    if new is None:
        return
    before = t.state
    t.state = new
    _moved(r, t, before, now, fx)


def _moved(r: RolloutModel, t: TargetModel, before: TargetState, now: float, fx: Effects) -> None:
    """Keep the derived indexes in step with one target's move from ``before``."""
    t.updated_at = now
    t.version += 1
    r.counts[before] -= 1
    r.counts[t.state] += 1
    if (before in SETTLED) != (t.state in SETTLED):
        r.wave_settled[t.wave] += 1 if t.state in SETTLED else -1
    if t.state is TS.FAILED and t.activated:
        r.wave_failed[t.wave] += 1
    if t.state not in (TS.ACTIVATING, TS.ROLLING_BACK):
        t.deadline = 0.0
    if t.state is TS.STAGED and t.wave == r.wave:
        r.ready.append(t.host)
    fx.dirty.add(t.host)
    fx.timeline.append(
        (
            "target",
            {
                "host": t.host,
                "state": t.state.value,
                "step": t.step,
                "wave": t.wave + 1,
                "error": t.error,
            },
        )
    )


def _timeline_rollout(r: RolloutModel, fx: Effects) -> None:
    fx.timeline.append(("rollout", {"state": r.state.value, "error": r.error, "wave": r.wave + 1}))


def _wave_entry(r: RolloutModel, w: int, state: str) -> dict[str, Any]:
    return {"wave": w + 1, "state": state, "hosts": list(r.plan.waves[w])}


def _hosts(targets: list[TargetModel]) -> str:
    shown = ", ".join(f"{t.host} ({t.error})" if t.error else t.host for t in targets[:5])
    more = f" and {len(targets) - 5} more" if len(targets) > 5 else ""
    return f"{len(targets)} host(s): {shown}{more}"
