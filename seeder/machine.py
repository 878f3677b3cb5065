"""The rollout machine: ``apply(rollout, event, now) -> (rollout, effects)``. No IO, no clock.

Every change of a rollout or of one of its targets happens here, as a fold over events: peer
step reports, refusals, connections, operator requests, gate results and ticks of time. The
result says what to send to whom (every command carries the rollout's fencing token), which gate
to run, which targets changed (for the store) and which timeline entries to record. Where each
state may go is :mod:`seeder.states`' table; this module decides when a trigger fires: here
what each event triggers, and in :mod:`seeder.advance` what follows from the new state (the next
wave, the gate, a halt or a rollback).

``apply`` updates the model in place so that one event costs O(1) in the number of targets
(only a wave start, an abort or the stage deadline touch a whole wave or rollout, once each).
"""

from __future__ import annotations

import heapq

from common.messages import STAGE_STEPS
from seeder.advance import advance, gate_command, halt, next_wave
from seeder.model import ROLLBACK_ATTEMPT, RolloutModel, StepRecord
from seeder.moves import (
    NotAllowed,
    move_rollout,
    move_target,
    timeline_rollout,
)
from seeder.rollout_events import (
    Command,
    Connected,
    Effects,
    Event,
    GateResult,
    Operator,
    Refused,
    Report,
    Restarted,
    RunGate,
    SendAbort,
    SendActivate,
    SendStage,
    SetCurrent,
    Start,
    Tick,
)
from seeder.states import (
    SETTLED,
    TERMINAL,
    RolloutState,
    RolloutTrigger,
    TargetState,
    TargetTrigger,
)

__all__ = [  # the machine's whole interface: apply, and the types it takes and gives
    "Command",
    "Connected",
    "Effects",
    "Event",
    "GateResult",
    "NotAllowed",
    "Operator",
    "Refused",
    "Report",
    "Restarted",
    "RunGate",
    "SendAbort",
    "SendActivate",
    "SendStage",
    "SetCurrent",
    "Start",
    "Tick",
    "apply",
]

RS, RT, TS, TT = RolloutState, RolloutTrigger, TargetState, TargetTrigger
FINAL_STEP_STATES = ("succeeded", "failed")


def apply(r: RolloutModel, event: Event, now: float) -> tuple[RolloutModel, Effects]:
    fx = Effects()
    if isinstance(event, Start):
        if event.promotion is not None:
            fx.timeline.append(("promotion", event.promotion))
        for t in r.targets.values():
            move_target(r, t, TT.STAGE_SENT, now, fx)
            fx.commands.append(SendStage(t.host, t.release_id, r.token))
        timeline_rollout(r, fx)
    elif isinstance(event, Report):
        _report(r, event, now, fx)
    elif isinstance(event, Refused):
        refused = r.targets.get(event.host)
        if refused is not None and event.token == r.token:
            refused.error = f"refused by the peer: {event.reason}"
            move_target(r, refused, TT.REFUSED, now, fx)
    elif isinstance(event, Connected):
        _resend(r, event.host, fx)
    elif isinstance(event, Restarted):
        if r.state is RS.GATING:
            fx.commands.append(gate_command(r))
    elif isinstance(event, Operator):
        _operator(r, event, now, fx)
    elif isinstance(event, GateResult):
        _gate_result(r, event, now, fx)
    elif isinstance(event, Tick):
        _deadlines(r, now, fx)
    advance(r, now, fx)
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
    move_target(r, t, trigger, now, fx)
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
        move_rollout(r, RT.PAUSE, now, fx, verb="pause")
        r.paused_from = "staging" if r.wave < 0 else "activating"
    elif ev.action == "resume":
        if r.state is not RS.PAUSED:
            raise NotAllowed(f"rollout {r.rollout_id} is {r.state}, not paused")
        trigger = RT.RESUME_STAGING if r.paused_from == "staging" else RT.RESUME
        move_rollout(r, trigger, now, fx, verb="resume")
        r.paused_from = ""
    elif ev.action == "abort":
        move_rollout(r, RT.ABORT, now, fx, verb="abort")
        r.error = "aborted by an operator" + (": running hooks killed" if ev.kill else "")
        for t in r.targets.values():
            if t.state not in SETTLED:
                fx.commands.append(SendAbort(t.host, r.token, ev.kill))
        timeline_rollout(r, fx)
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
        next_wave(r, now, fx)
        return
    why = ev.detail or f"exited {ev.exit_code}"
    halt(r, f"the gate after wave {ev.wave + 1} failed ({why})", now, fx)


def _deadlines(r: RolloutModel, now: float, fx: Effects) -> None:
    if r.counts[TS.PENDING] + r.counts[TS.STAGING] and now > r.stage_deadline:
        error = f"not staged within the {r.options.stage_timeout:g}s stage timeout"
        for t in r.targets.values():
            if t.state in (TS.PENDING, TS.STAGING):
                t.error = error
                move_target(r, t, TT.DEADLINE, now, fx)
    while r.heap and r.heap[0][0] < now:
        due, host = heapq.heappop(r.heap)
        t = r.targets[host]
        if t.deadline == due and t.state in (TS.ACTIVATING, TS.ROLLING_BACK):
            t.error = t.error or f"no result within the {r.options.activate_timeout:g}s deadline"
            move_target(r, t, TT.DEADLINE, now, fx)
