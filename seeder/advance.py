"""Moving a rollout on: staging to waves, each wave's activations, bake, gate, halt, rollback.

Split out of :mod:`seeder.machine` (one concept per file): the machine reacts to one event, then
calls :func:`advance`, which fires every rollout trigger whose condition now holds (enough hosts
staged, a wave settled, its bake over, the failure budget spent, the rollback queue drained)
until none does. Pure like the machine: no IO, no clock; it changes the model in place and adds
to the event's :class:`~seeder.rollout_events.Effects`.
"""

from __future__ import annotations

import heapq

from seeder.model import ROLLBACK_ATTEMPT, RolloutModel
from seeder.moves import hosts_text, move_rollout, move_target, wave_entry
from seeder.rollout_events import Effects, RunGate, SendActivate
from seeder.states import FAILURES, RolloutState, RolloutTrigger, TargetState, TargetTrigger

RS, RT, TS, TT = RolloutState, RolloutTrigger, TargetState, TargetTrigger


def advance(r: RolloutModel, now: float, fx: Effects) -> None:
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
                fx.commands.append(gate_command(r))
                return
            next_wave(r, now, fx)
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
        halt(r, reason, now, fx)
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


def halt(r: RolloutModel, reason: str, now: float, fx: Effects) -> None:
    """Stop activating: halted, or rolling back what succeeded with ``--auto-rollback``."""
    r.error = reason  # the state already says halted (or rolling back, then failed)
    if r.options.auto_rollback:
        move_rollout(r, RT.ROLLBACK, now, fx)
        r.rollback_queue.extend(
            h for wave in r.plan.waves for h in wave if r.targets[h].state is TS.SUCCEEDED
        )
    else:
        move_rollout(r, RT.HALT, now, fx)


def next_wave(r: RolloutModel, now: float, fx: Effects) -> None:
    """The wave passed (baked, and its gate if any): start the next one, or finish."""
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


def gate_command(r: RolloutModel) -> RunGate:
    """The command that runs the rollout's gate after its current wave."""
    return RunGate(r.wave, tuple(r.plan.waves[r.wave]), r.options.gate, r.options.gate_timeout)
