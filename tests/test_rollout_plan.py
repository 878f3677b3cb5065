"""Rollout planning as pure logic: selectors, next commands, target and phase transitions."""

from __future__ import annotations

import pytest

from seeder import rollout as plan
from seeder.store import HostRecord, Rollout, Target


def host(name: str, **labels: str) -> HostRecord:
    return HostRecord(name, "10.0.0.1", 6881, labels, None, [], True, 0.0)


HOSTS = [host("a", zone="x", env="prod"), host("b", zone="y", env="prod"), host("c", zone="x")]


def rollout(state: str, *targets: tuple[str, str], at: float = 0.0) -> Rollout:
    return Rollout(
        "r1",
        "rel",
        "all",
        state,
        "",
        0.0,
        0.0,
        [Target("r1", h, s, updated_at=at) for h, s in targets],
    )


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("all", ["a", "b", "c"]),
        ("b,a", ["a", "b"]),
        ("zone=x", ["a", "c"]),
        ("zone=x,env=prod", ["a"]),
        (" a ", ["a"]),
    ],
)
def test_select_hosts(selector: str, expected: list[str]) -> None:
    assert plan.select_hosts(selector, HOSTS) == expected


@pytest.mark.parametrize(
    ("selector", "match"),
    [
        ("zone=nowhere", "matches no host"),
        ("a,zz", "unknown host"),
        ("", "empty"),
        ("zone=x,bad", "not LABEL=VALUE"),
    ],
)
def test_bad_selectors(selector: str, match: str) -> None:
    with pytest.raises(plan.SelectorError, match=match):
        plan.select_hosts(selector, HOSTS)


def test_stage_goes_to_connected_unfinished_targets_only() -> None:
    r = rollout("staging", ("a", "pending"), ("b", "staging"), ("c", "staged"))
    assert plan.next_actions(r, {"a", "c"}) == [plan.Action("a", "stage")]
    assert plan.next_actions(r, {"a", "b", "c"}) == [
        plan.Action("a", "stage"),
        plan.Action("b", "stage"),
    ]


def test_activate_only_in_activating_phase() -> None:
    r = rollout("activating", ("a", "staged"), ("b", "succeeded"))
    assert plan.next_actions(r, {"a", "b"}) == [plan.Action("a", "activate")]
    assert plan.next_actions(rollout("succeeded", ("a", "succeeded")), {"a"}) == []


@pytest.mark.parametrize(
    ("before", "step", "state", "after"),
    [
        ("pending", "download", "running", "staging"),
        ("staging", "stage", "succeeded", "staged"),
        ("staging", "verify", "failed", "failed"),
        ("staged", "BeforeInstall", "running", "activating"),
        ("activating", "activate", "succeeded", "succeeded"),
        ("activating", "ValidateService", "failed", "failed"),
        ("succeeded", "activate", "failed", "succeeded"),
        ("failed", "stage", "succeeded", "failed"),
    ],
)
def test_target_transitions(before: str, step: str, state: str, after: str) -> None:
    assert plan.target_state_after(Target("r1", "a", before), step, state) == after


def test_phase_outcomes() -> None:
    assert plan.phase_outcome(rollout("staging", ("a", "staged"), ("b", "staging"))) is None
    assert plan.phase_outcome(rollout("staging", ("a", "staged"), ("b", "staged"))) == (
        "activating",
        "",
    )
    state, error = plan.phase_outcome(rollout("staging", ("a", "staged"), ("b", "failed"))) or (
        "",
        "",
    )
    assert state == "failed" and "nothing was activated" in error and "b" in error
    assert plan.phase_outcome(rollout("activating", ("a", "succeeded"))) == ("succeeded", "")
    assert plan.phase_outcome(rollout("activating", ("a", "succeeded"), ("b", "failed")))[0] == (
        "failed"
    )


def test_deadlines_use_the_given_now() -> None:
    r = rollout("staging", ("a", "staging"), ("b", "staged"), at=100.0)
    d = plan.Deadlines(stage=60, activate=60)
    assert plan.overdue(r, now=150.0, deadlines=d) == []
    assert plan.overdue(r, now=161.0, deadlines=d) == ["a"]
