"""The rollout machine as pure logic: every line of both transition tables, driven by events with
``now`` passed in (no sockets, no clock, no sleeps)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from seeder import machine as mc
from seeder.model import ROLLBACK_ATTEMPT, RolloutModel, TargetModel
from seeder.states import (
    ROLLOUT_TABLE,
    TARGET_TABLE,
    RolloutState,
    RolloutTrigger,
    TargetState,
    TargetTrigger,
)
from seeder.waves import RolloutOptions, plan_waves

RS, RT, TS, TT = RolloutState, RolloutTrigger, TargetState, TargetTrigger
T0 = 1000.0
HOSTS = ["a", "b", "c"]


class Run:
    """One rollout and the effects of everything applied to it."""

    def __init__(self, hosts: list[str] = HOSTS, *, start: bool = True, **options: Any) -> None:
        opts = RolloutOptions.from_params({"waves": "1,100%", **options})
        plan = plan_waves(hosts, {}, opts)
        self.r = RolloutModel("r1", "rel-2", "all", "rollout", 7, opts, plan, T0, updated_at=T0)
        for i, wave in enumerate(plan.waves):
            for h in wave:
                self.r.targets[h] = TargetModel(h, "rel-2", "rel-1", i)
        self.r.reindex()
        self.now = T0
        self.log: list[mc.Effects] = []
        if start:
            self.apply(mc.Start())

    def apply(self, event: mc.Event, at: float | None = None) -> mc.Effects:
        if at is not None:
            self.now = at
        self.r, fx = mc.apply(self.r, event, self.now)
        self.log.append(fx)
        return fx

    def report(self, host: str, step: str, state: str, attempt: int = 1, **kw: Any) -> mc.Effects:
        return self.apply(mc.Report(host, step, attempt, state, **kw))

    def stage_all(self, hosts: list[str] = HOSTS) -> None:
        for h in hosts:
            self.report(h, "stage", "succeeded")

    def activate(self, host: str, ok: bool = True) -> mc.Effects:
        return self.report(host, "activate", "succeeded" if ok else "failed")

    def state(self, host: str | None = None) -> str:
        return self.r.state.value if host is None else self.r.targets[host].state.value

    def commands(self, kind: type) -> list[Any]:
        return [c for fx in self.log for c in fx.commands if isinstance(c, kind)]


# --- driving a rollout into each state ----------------------------------------------------------


def staging(**kw: Any) -> Run:
    return Run(**kw)


def activating(**kw: Any) -> Run:
    run = Run(**kw)
    run.stage_all()
    assert run.state() == "activating"
    return run


def baking(**kw: Any) -> Run:
    run = activating(bake=60, **kw)
    run.activate("a")
    assert run.state() == "baking"
    return run


def gating(**kw: Any) -> Run:
    run = activating(gate="true", **kw)
    run.activate("a")
    assert run.state() == "gating"
    return run


def last_wave_gating() -> Run:
    run = gating()
    run.apply(mc.GateResult(0, 0))
    run.activate("b")
    run.activate("c")
    assert (run.state(), run.r.wave) == ("gating", 1)
    return run


def paused(from_state: Callable[..., Run] = activating) -> Run:
    run = from_state()
    run.apply(mc.Operator("pause"))
    assert run.state() == "paused"
    return run


def rolling_back(previous: str | None = "rel-1") -> Run:
    run = activating(auto_rollback=True)
    run.r.targets["a"].previous = previous
    run.activate("a")  # wave 1
    run.activate("b")  # wave 2 ...
    run.activate("c", ok=False)  # ... one failure exceeds the default budget of 0
    assert run.state() == "rolling_back"
    return run


ROLLOUT_SCENARIOS: dict[tuple[RolloutState, RolloutTrigger], Callable[[], Run]] = {}


def scenario(state: RolloutState, trigger: RolloutTrigger) -> Callable[..., Any]:
    def register(fn: Callable[[], Run]) -> Callable[[], Run]:
        ROLLOUT_SCENARIOS[(state, trigger)] = fn
        return fn

    return register


@scenario(RS.STAGING, RT.STAGED_ENOUGH)
def _() -> Run:
    run = staging()
    run.stage_all(["a", "b"])
    assert run.state() == "staging"  # 100 % must be staged by default
    run.stage_all(["c"])
    assert run.commands(mc.SendActivate) == [mc.SendActivate("a", "rel-2", 1, 7)]
    return run


@scenario(RS.STAGING, RT.STAGE_FELL_SHORT)
def _() -> Run:
    run = staging()
    run.report("b", "verify", "failed", detail="digest mismatch")
    assert "b (verify failed: digest mismatch)" in run.r.error
    assert "nothing was activated" in run.r.error
    assert run.commands(mc.SendActivate) == []
    return run


@scenario(RS.STAGING, RT.PAUSE)
def _() -> Run:
    return paused(staging)


@scenario(RS.STAGING, RT.ABORT)
def _() -> Run:
    run = staging()
    run.apply(mc.Operator("abort"))
    assert {c.host for c in run.commands(mc.SendAbort)} == set(HOSTS)
    return run


@scenario(RS.ACTIVATING, RT.WAVE_DONE)
def _() -> Run:
    return baking()


@scenario(RS.ACTIVATING, RT.HALT)
def _() -> Run:
    run = activating()
    run.report("a", "ValidateService", "failed", result="failed", exit_code=3)
    assert run.state() == "activating"  # the hook failed; the peer reports the activation next
    run.activate("a", ok=False)
    assert "a (ValidateService failed (exit 3))" in run.r.error
    assert run.commands(mc.SendActivate) == [mc.SendActivate("a", "rel-2", 1, 7)]  # no wave 2
    return run


@scenario(RS.ACTIVATING, RT.ROLLBACK)
def _() -> Run:
    return rolling_back()


@scenario(RS.ACTIVATING, RT.PAUSE)
def _() -> Run:
    return paused()


@scenario(RS.ACTIVATING, RT.ABORT)
def _() -> Run:
    run = activating()
    run.apply(mc.Operator("abort", kill=True))
    assert run.commands(mc.SendAbort)[0] == mc.SendAbort("a", 7, True)
    assert "killed" in run.r.error
    run.activate("a")  # the hook that ran finishes: the host is recorded as switched
    assert (run.state(), run.state("a"), run.state("b")) == ("aborted", "succeeded", "staged")
    return run


@scenario(RS.BAKING, RT.BAKED)
def _() -> Run:
    run = activating(bake=60, gate="check-it")
    run.activate("a")
    run.apply(mc.Tick(), at=T0 + 59)
    assert run.state() == "baking"
    run.apply(mc.Tick(), at=T0 + 60)
    assert run.commands(mc.RunGate) == [mc.RunGate(0, ("a",), "check-it", 600.0)]
    return run


@scenario(RS.BAKING, RT.NEXT_WAVE)
def _() -> Run:
    run = baking()
    run.apply(mc.Tick(), at=T0 + 60)
    assert run.r.wave == 1
    assert {c.host for c in run.commands(mc.SendActivate)} == set(HOSTS)
    return run


@scenario(RS.BAKING, RT.LAST_WAVE_PASSED)
def _() -> Run:
    run = activating(waves="100%", bake=5)
    for h in HOSTS:
        run.activate(h)
    assert run.state() == "baking"
    run.apply(mc.Tick(), at=T0 + 5)
    return run


@scenario(RS.BAKING, RT.PAUSE)
def _() -> Run:
    return paused(baking)


@scenario(RS.BAKING, RT.ABORT)
def _() -> Run:
    run = baking()
    run.apply(mc.Operator("abort"))
    return run


@scenario(RS.GATING, RT.GATE_PASSED)
def _() -> Run:
    run = gating()
    run.apply(mc.GateResult(0, 0, ("all good",)))
    assert run.r.wave == 1
    return run


@scenario(RS.GATING, RT.LAST_WAVE_PASSED)
def _() -> Run:
    run = last_wave_gating()
    run.apply(mc.GateResult(1, 0))
    return run


@scenario(RS.GATING, RT.HALT)
def _() -> Run:
    run = gating()
    run.apply(mc.GateResult(0, 1, ("error rate 5%",)))
    assert "gate after wave 1 failed (exited 1)" in run.r.error
    gate_entries = [d for fx in run.log for k, d in fx.timeline if k == "gate"]
    assert gate_entries[0]["output"] == ["error rate 5%"]
    return run


@scenario(RS.GATING, RT.ROLLBACK)
def _() -> Run:
    run = gating(auto_rollback=True)
    run.apply(mc.GateResult(0, None, detail="timed out after 600s"))
    assert run.commands(mc.SendActivate)[-1] == mc.SendActivate("a", "rel-1", ROLLBACK_ATTEMPT, 7)
    return run


@scenario(RS.GATING, RT.PAUSE)
def _() -> Run:
    run = paused(gating)
    run.apply(mc.GateResult(0, 0))  # a gate that ends while paused decides nothing
    assert run.r.wave == 0
    return run


@scenario(RS.GATING, RT.ABORT)
def _() -> Run:
    run = gating()
    run.apply(mc.Operator("abort"))
    return run


@scenario(RS.PAUSED, RT.RESUME_STAGING)
def _() -> Run:
    run = paused(staging)
    run.stage_all()
    assert run.state() == "paused"  # staged, but wave 1 waits for the resume
    run.apply(mc.Operator("resume"))
    assert (run.state(), run.r.wave) == ("activating", 0)  # back to staging, then on at once
    return run


@scenario(RS.PAUSED, RT.RESUME)
def _() -> Run:
    run = paused(activating)
    run.activate("a")
    assert run.state() == "paused"
    run.apply(mc.Operator("resume"))
    assert run.r.wave == 1  # the done wave bakes (0 s) again and wave 2 starts
    return run


@scenario(RS.PAUSED, RT.ABORT)
def _() -> Run:
    run = paused()
    run.apply(mc.Operator("abort"))
    return run


@scenario(RS.ROLLING_BACK, RT.ROLLBACK_DONE)
def _() -> Run:
    run = rolling_back()
    for h in ("a", "b"):
        run.report(h, "activate", "succeeded", attempt=ROLLBACK_ATTEMPT)
    assert "rolled back 2 host(s)" in run.r.error
    assert [c for c in run.commands(mc.SetCurrent) if c.release_id == "rel-1"] == [
        mc.SetCurrent("a", "rel-1"),
        mc.SetCurrent("b", "rel-1"),
    ]
    return run


@scenario(RS.ROLLING_BACK, RT.ROLLBACK_FAILED)
def _() -> Run:
    run = rolling_back()
    run.report("a", "activate", "succeeded", attempt=ROLLBACK_ATTEMPT)
    run.report("b", "activate", "failed", attempt=ROLLBACK_ATTEMPT)
    assert "rollback failed on 1 host(s): b" in run.r.error
    return run


@scenario(RS.ROLLING_BACK, RT.ABORT)
def _() -> Run:
    run = rolling_back()
    run.apply(mc.Operator("abort"))
    return run


def test_every_rollout_transition_has_a_scenario() -> None:
    assert set(ROLLOUT_SCENARIOS) == set(ROLLOUT_TABLE)


@pytest.mark.parametrize("line", list(ROLLOUT_TABLE), ids=lambda k: f"{k[0]}-{k[1]}")
def test_rollout_transition(line: tuple[RolloutState, RolloutTrigger]) -> None:
    run = ROLLOUT_SCENARIOS[line]()
    states = [d["state"] for fx in run.log for k, d in fx.timeline if k == "rollout"]
    moves = list(itertools.pairwise(states))
    assert (line[0].value, ROLLOUT_TABLE[line].value) in moves, states


# --- target transitions ----------------------------------------------------------------------


def target_scenario(line: tuple[TargetState, TargetTrigger]) -> tuple[Run, str]:
    """A run with one target in ``line[0]``, and that target's name (the trigger is fired next)."""
    state, trigger = line
    if state is TS.PENDING:
        return Run(start=False), "a"
    if state is TS.STAGING:
        return Run(), "a"
    if state is TS.STAGED:
        run = Run()
        run.report("b", "stage", "succeeded")  # wave 2 waits for the rest to stage
        if trigger is TT.ACTIVATE_SENT:
            run.stage_all(["a", "c"])
            assert run.state("b") == "staged"
            run.activate("a")  # wave 2 starts: b is sent its Activate
        return run, "b"
    if state is TS.ACTIVATING:
        return activating(), "a"
    if state is TS.SUCCEEDED:
        if trigger is TT.NO_PREVIOUS:
            return rolling_back(previous=None), "a"
        if trigger is TT.ROLLBACK_SENT:
            return rolling_back(), "a"
    assert state is TS.ROLLING_BACK
    return rolling_back(), "a"


def _fire(run: Run, host: str, trigger: TargetTrigger) -> None:
    if trigger is TT.STAGE_SENT:
        run.apply(mc.Start())
    elif trigger is TT.STAGE_PROGRESS:
        run.report(host, "download", "running")
    elif trigger is TT.STAGE_OK:
        run.report(host, "stage", "succeeded")
    elif trigger is TT.STAGE_FAILED:
        run.report(host, "unpack", "failed", detail="disk full")
    elif trigger in (TT.ACTIVATE_SENT, TT.ROLLBACK_SENT, TT.NO_PREVIOUS):
        pass  # the wave start or the halt in target_scenario did it
    elif trigger is TT.ACTIVATE_OK:
        attempt = ROLLBACK_ATTEMPT if run.state(host) == "rolling_back" else 1
        run.report(host, "activate", "succeeded", attempt=attempt)
    elif trigger is TT.ACTIVATE_FAILED:
        attempt = ROLLBACK_ATTEMPT if run.state(host) == "rolling_back" else 1
        run.report(host, "activate", "failed", attempt=attempt, result="interrupted")
    elif trigger is TT.DEADLINE:
        run.apply(mc.Tick(), at=T0 + 10**6)
    elif trigger is TT.REFUSED:
        run.apply(mc.Refused(host, 6, "stale"))  # an older token is not ours: ignored
        assert run.r.targets[host].error == ""
        run.apply(mc.Refused(host, 7, "a newer rollout (token 9) owns this host"))


@pytest.mark.parametrize("line", list(TARGET_TABLE), ids=lambda k: f"{k[0]}-{k[1]}")
def test_target_transition(line: tuple[TargetState, TargetTrigger]) -> None:
    run, host = target_scenario(line)
    if line[1] not in (TT.ACTIVATE_SENT, TT.ROLLBACK_SENT, TT.NO_PREVIOUS):
        assert run.r.targets[host].state is line[0]
    _fire(run, host, line[1])
    assert run.r.targets[host].state is TARGET_TABLE[line], run.r.targets[host]
    moves = [(d["host"], d["state"]) for fx in run.log for k, d in fx.timeline if k == "target"]
    assert (host, TARGET_TABLE[line].value) in moves


# --- properties across transitions -----------------------------------------------------------


def test_reports_are_idempotent_and_final_states_stick() -> None:
    run = activating()
    assert run.activate("a").commands  # SetCurrent, wave 2's activations
    again = run.activate("a")
    assert again.duplicate and not again.commands and not again.dirty
    late = run.report("a", "activate", "running")
    assert late.duplicate
    assert run.r.targets["a"].steps[("activate", 1)].state == "succeeded"


def test_a_resend_does_not_reset_the_deadline() -> None:
    run = activating(activate_timeout=100)
    assert run.r.targets["a"].deadline == T0 + 100
    run.apply(mc.Connected("a"), at=T0 + 50)
    assert run.commands(mc.SendActivate)[-1] == mc.SendActivate("a", "rel-2", 1, 7)
    run.apply(mc.Tick(), at=T0 + 100)  # exactly at the deadline: silence is not failure yet
    assert run.state("a") == "activating"
    run.apply(mc.Tick(), at=T0 + 100.5)
    assert run.state("a") == "failed"
    assert "100s deadline" in run.r.targets["a"].error


def test_concurrency_limits_hosts_activating_at_once() -> None:
    run = Run(["a", "b", "c", "d", "e"], waves="100%", concurrency=2)
    run.stage_all(["a", "b", "c", "d", "e"])
    assert [c.host for c in run.commands(mc.SendActivate)] == ["a", "b"]
    run.activate("a")
    assert [c.host for c in run.commands(mc.SendActivate)] == ["a", "b", "c"]


def test_wave_budget_and_min_staged() -> None:
    run = Run(["a", "b", "c", "d"], waves="2,100%", max_failures="50%", min_staged="75%")
    run.report("d", "stage", "failed")  # 1 of 4 failed: budget 2, 3 can still stage
    assert run.state() == "staging"
    run.stage_all(["a", "b", "c"])
    assert run.state() == "activating"
    run = Run(["a", "b", "c", "d"], waves="100%", max_failures="3", wave_max_failures="25%")
    run.stage_all(["a", "b", "c", "d"])
    run.activate("a", ok=False)
    assert run.state() == "activating"
    run.activate("b", ok=False)
    assert run.state() == "halted"
    assert "2 failure(s) in wave 1 exceed --wave-max-failures 25% (1)" in run.r.error


def test_reindex_rebuilds_what_the_machine_maintains() -> None:
    run = gating(concurrency=1)
    run.apply(mc.GateResult(0, 0))
    run.activate("b", ok=False)
    fresh = {k: v for k, v in vars(run.r).items()}
    run.r.reindex()
    assert (run.r.counts, run.r.wave_settled, run.r.wave_failed) == (
        fresh["counts"],
        fresh["wave_settled"],
        fresh["wave_failed"],
    )
    assert list(run.r.ready) == list(fresh["ready"])


def test_a_restart_while_gating_runs_the_gate_again() -> None:
    run = gating()
    fx = run.apply(mc.Restarted())
    assert fx.commands == [mc.RunGate(0, ("a",), "true", 600.0)]


def test_operator_errors_name_the_state() -> None:
    run = activating()
    with pytest.raises(mc.NotAllowed, match="not paused"):
        run.apply(mc.Operator("resume"))
    run.activate("a", ok=False)
    with pytest.raises(mc.NotAllowed, match="cannot pause rollout r1: it is halted"):
        run.apply(mc.Operator("pause"))
