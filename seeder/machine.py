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

from common.messages import STAGE_STEPS
from seeder.model import ROLLBACK_ATTEMPT, RolloutModel, StepRecord
from seeder.moves import (
    NotAllowed,
    hosts_text,
    move_rollout,
    move_target,
    timeline_rollout,
    wave_entry,
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
    FAILURES,
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
                move_target(r, t, TT.DEADLINE, now, fx)
    while r.heap and r.heap[0][0] < now:
        due, host = heapq.heappop(r.heap)
        t = r.targets[host]
        if t.deadline == due and t.state in (TS.ACTIVATING, TS.ROLLING_BACK):
            t.error = t.error or f"no result within the {r.options.activate_timeout:g}s deadline"
            move_target(r, t, TT.DEADLINE, now, fx)


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
                move_rollout(r, RT.BAKED, now, fx)
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
        r.error = f"staging failed on {hosts_text(failed)}; nothing was activated" + (
            f" (--min-staged needs {need} of {total})" if possible < need else ""
        )
        move_rollout(r, RT.STAGE_FELL_SHORT, now, fx)
        return False
    if r.counts[TS.STAGED] >= need:
        move_rollout(r, RT.STAGED_ENOUGH, now, fx)
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
        move_rollout(r, RT.WAVE_DONE, now, fx)
        r.bake_until = now + r.options.bake
        fx.timeline.append(("wave", wave_entry(r, w, "done")))
        return True
    limit = r.options.concurrency or len(r.targets)
    while r.ready and r.in_flight < limit:
        t = r.targets[r.ready.popleft()]
        if t.state is not TS.STAGED:
            continue
        t.activated = True
        t.deadline = now + r.options.activate_timeout
        heapq.heappush(r.heap, (t.deadline, t.host))
        move_target(r, t, TT.ACTIVATE_SENT, now, fx)
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
            move_target(r, t, TT.NO_PREVIOUS, now, fx)
            continue
        t.deadline = now + r.options.activate_timeout
        heapq.heappush(r.heap, (t.deadline, t.host))
        move_target(r, t, TT.ROLLBACK_SENT, now, fx)
        fx.commands.append(SendActivate(t.host, t.previous, ROLLBACK_ATTEMPT, r.token))
    if r.in_flight or r.rollback_queue:
        return
    stuck = [t for t in r.targets.values() if t.state is TS.ROLLBACK_FAILED]
    if stuck:
        r.error += f"; rollback failed on {hosts_text(stuck)}"
        move_rollout(r, RT.ROLLBACK_FAILED, now, fx)
    else:
        back = r.counts[TS.ROLLED_BACK]
        r.error += f"; rolled back {back} host(s) to their previous release"
        move_rollout(r, RT.ROLLBACK_DONE, now, fx)


def _over_budget(r: RolloutModel) -> str:
    total_failed = r.counts[TS.FAILED]
    w = r.wave
    wave_budget = r.plan.wave_max_failures[w]
    if total_failed > r.plan.max_failures:
        failed = [t for t in r.targets.values() if t.state is TS.FAILED]
        return (
            f"{total_failed} failure(s) exceed --max-failures {r.options.max_failures} "
            f"({r.plan.max_failures} of {len(r.targets)}): {hosts_text(failed)}"
        )
    if wave_budget is not None and r.wave_failed[w] > wave_budget:
        failed = [
            r.targets[h]
            for h in r.plan.waves[w]
            if r.targets[h].state is TS.FAILED and r.targets[h].activated
        ]
        return (
            f"{r.wave_failed[w]} failure(s) in wave {w + 1} exceed --wave-max-failures "
            f"{r.options.wave_max_failures} ({wave_budget}): {hosts_text(failed)}"
        )
    return ""


def _halt(r: RolloutModel, reason: str, now: float, fx: Effects) -> None:
    r.error = reason  # the state already says halted (or rolling back, then failed)
    if r.options.auto_rollback:
        move_rollout(r, RT.ROLLBACK, now, fx)
        r.rollback_queue.extend(
            h for wave in r.plan.waves for h in wave if r.targets[h].state is TS.SUCCEEDED
        )
    else:
        move_rollout(r, RT.HALT, now, fx)


def _next_wave(r: RolloutModel, now: float, fx: Effects) -> None:
    if r.wave + 1 >= len(r.plan.waves):
        failed = [t for t in r.targets.values() if t.state in FAILURES]
        if failed:
            r.error = f"succeeded within the failure budget; failed on {hosts_text(failed)}"
        move_rollout(r, RT.LAST_WAVE_PASSED, now, fx)
        return
    move_rollout(r, RT.GATE_PASSED if r.state is RS.GATING else RT.NEXT_WAVE, now, fx)
    _start_wave(r, r.wave + 1, now, fx)


def _start_wave(r: RolloutModel, w: int, now: float, fx: Effects) -> None:
    r.wave = w
    fx.rollout_changed = True
    r.ready.clear()
    r.ready.extend(h for h in r.plan.waves[w] if r.targets[h].state is TS.STAGED)
    fx.timeline.append(("wave", wave_entry(r, w, "activating")))


def _gate(r: RolloutModel) -> RunGate:
    return RunGate(r.wave, tuple(r.plan.waves[r.wave]), r.options.gate, r.options.gate_timeout)
