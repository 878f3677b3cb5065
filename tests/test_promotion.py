"""The promotion verdict and rule parsing: pure logic, as a table."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from seeder.promotion import (
    RolloutOutcome,
    Rule,
    RuleError,
    TargetOutcome,
    parse_rules,
    promotion_check,
    remove_rules,
)
from seeder.states import RolloutState, TargetState

RS, TS = RolloutState, TargetState
REL = "web-v2-aaaaaaaa"
OTHER = "web-v1-bbbbbbbb"


@dataclass(frozen=True)
class Rel:
    release_id: str = REL
    app: str = "web"


def rollout(
    rid: str,
    state: RolloutState,
    *targets: tuple[str, str, TargetState] | tuple[str, str, TargetState, str],
    at: float = 0.0,
) -> RolloutOutcome:
    outs = tuple(
        TargetOutcome(t[0], t[1], t[3] if len(t) == 4 else REL, t[2])  # type: ignore[misc]
        for t in targets
    )
    return RolloutOutcome(rid, state, at, outs)


STAGING_OK = rollout("r1", RS.SUCCEEDED, ("s1", "staging", TS.SUCCEEDED))
STAGING_TWO_OK = rollout(
    "r1", RS.SUCCEEDED, ("s1", "staging", TS.SUCCEEDED), ("s2", "staging", TS.SUCCEEDED)
)
PROD = {"p1": "prod", "p2": "prod"}
RULES = parse_rules(["staging:prod"])


# (name, rules, targets, history, ok, a fragment of each unmet reason or of the summary)
CASES = [
    ("no rules at all", (), PROD, [], True, "no promotion rule"),
    ("rule into another env", RULES, {"s1": "staging"}, [], True, "no promotion rule"),
    ("unlabelled hosts are not ruled", RULES, {"x": ""}, [], True, "no promotion rule"),
    ("never rolled out", RULES, PROD, [], False, "never rolled out on staging"),
    ("succeeded on staging", RULES, PROD, [STAGING_OK], True, "r1 succeeded on 1 staging"),
    ("two staging hosts", RULES, PROD, [STAGING_TWO_OK], True, "on 2 staging host(s)"),
    (
        "still running",
        RULES,
        PROD,
        [rollout("r1", RS.ACTIVATING, ("s1", "staging", TS.ACTIVATING))],
        False,
        "r1, it is still activating",
    ),
    (
        "paused",
        RULES,
        PROD,
        [rollout("r1", RS.PAUSED, ("s1", "staging", TS.STAGED))],
        False,
        "still paused",
    ),
    (
        "halted",
        RULES,
        PROD,
        [rollout("r1", RS.HALTED, ("s1", "staging", TS.FAILED))],
        False,
        "r1, it ended halted",
    ),
    (
        "failed (auto rollback)",
        RULES,
        PROD,
        [rollout("r1", RS.FAILED, ("s1", "staging", TS.ROLLED_BACK))],
        False,
        "ended failed",
    ),
    (
        "aborted",
        RULES,
        PROD,
        [rollout("r1", RS.ABORTED, ("s1", "staging", TS.SUCCEEDED))],
        False,
        "ended aborted",
    ),
    (
        "succeeded with a tolerated staging failure",
        RULES,
        PROD,
        [
            rollout(
                "r1",
                RS.SUCCEEDED,
                ("s1", "staging", TS.SUCCEEDED),
                ("s2", "staging", TS.FAILED),
            )
        ],
        False,
        "did not all succeed (s2: failed)",
    ),
    (
        "a tolerated failure elsewhere does not matter",
        RULES,
        PROD,
        [rollout("r1", RS.SUCCEEDED, ("s1", "staging", TS.SUCCEEDED), ("q1", "qa", TS.FAILED))],
        True,
        "r1 succeeded",
    ),
    (
        "another release succeeded on staging",
        RULES,
        PROD,
        [rollout("r1", RS.SUCCEEDED, ("s1", "staging", TS.SUCCEEDED, OTHER))],
        False,
        "never rolled out on staging",
    ),
    (
        "a rollback to this release counts by its targets",
        RULES,
        PROD,
        [
            rollout(
                "r1",
                RS.SUCCEEDED,
                ("s1", "staging", TS.SUCCEEDED),
                ("s2", "staging", TS.SUCCEEDED, OTHER),
            )
        ],
        True,
        "on 1 staging host(s)",
    ),
    (
        "succeeded on prod is not staging",
        RULES,
        PROD,
        [rollout("r1", RS.SUCCEEDED, ("p1", "prod", TS.SUCCEEDED))],
        False,
        "never rolled out on staging",
    ),
    (
        "an older success still counts after a later failure",
        RULES,
        PROD,
        [STAGING_OK, rollout("r2", RS.HALTED, ("s1", "staging", TS.FAILED), at=5.0)],
        True,
        "r1 succeeded",
    ),
    (
        "a later success after a failure",
        RULES,
        PROD,
        [
            rollout("r0", RS.HALTED, ("s1", "staging", TS.FAILED)),
            rollout("r2", RS.SUCCEEDED, ("s1", "staging", TS.SUCCEEDED), at=5.0),
        ],
        True,
        "r2 succeeded",
    ),
    (
        "the latest failure is named",
        RULES,
        PROD,
        [
            rollout("r0", RS.ABORTED, ("s1", "staging", TS.SUCCEEDED)),
            rollout("r2", RS.HALTED, ("s1", "staging", TS.FAILED), at=5.0),
        ],
        False,
        "r2, it ended halted",
    ),
    (
        "every rule into prod must hold",
        parse_rules(["staging:prod,qa:prod"]),
        PROD,
        [STAGING_OK],
        False,
        "never rolled out on qa",
    ),
    (
        "both rules hold",
        parse_rules(["staging:prod", "qa:prod"]),
        PROD,
        [STAGING_OK, rollout("r2", RS.SUCCEEDED, ("q1", "qa", TS.SUCCEEDED), at=2.0)],
        True,
        "rule qa:prod: ok",
    ),
    (
        "mixed envs: each env's rule",
        parse_rules(["qa:staging,staging:prod"]),
        {"p1": "prod", "s1": "staging"},
        [STAGING_OK],
        False,
        "never rolled out on qa",
    ),
    (
        "mixed envs: prod in the same rollout as staging",
        RULES,
        {"p1": "prod", "s1": "staging"},
        [],
        False,
        "never rolled out on staging",
    ),
    (
        "a chain is checked one link at a time",
        parse_rules(["qa:staging,staging:prod"]),
        PROD,
        [STAGING_OK],
        True,
        "rule staging:prod: ok",
    ),
]


@pytest.mark.parametrize(
    ("rules", "targets", "history", "ok", "text"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_verdict(
    rules: tuple[Rule, ...],
    targets: dict[str, str],
    history: list[RolloutOutcome],
    ok: bool,
    text: str,
) -> None:
    verdict = promotion_check(rules, Rel(), targets, history)
    assert verdict.ok is ok
    shown = verdict.refusal() if not ok else verdict.summary()
    assert text in shown, shown
    # the history's order does not matter
    again = promotion_check(rules, Rel(), targets, list(reversed(history)))
    assert again == verdict


def test_refusal_names_the_rule_the_app_and_the_release() -> None:
    verdict = promotion_check(RULES, Rel(), PROD, [])
    assert verdict.refusal() == (
        f"release {REL} has not succeeded on staging (rule staging:prod of app web): it was"
        " never rolled out on staging; use --force to override"
    )
    (check,) = verdict.unmet
    assert check.hosts == ("p1", "p2")
    assert verdict.to_dict()["checks"][0] == {
        "rule": "staging:prod",
        "from": "staging",
        "to": "prod",
        "ok": False,
        "evidence": "",
        "reason": "it was never rolled out on staging",
        "hosts": ["p1", "p2"],
    }
    assert verdict.to_dict()["envs"] == {"prod": ["p1", "p2"]}


def test_met_rule_names_its_evidence() -> None:
    verdict = promotion_check(RULES, Rel(), PROD, [STAGING_OK])
    assert [c.evidence for c in verdict.checks] == ["r1"]
    assert verdict.refusal() == ""


@pytest.mark.parametrize(
    ("texts", "rules"),
    [
        (["staging:prod"], ["staging:prod"]),
        (["staging:prod,qa:staging"], ["qa:staging", "staging:prod"]),
        (["staging:prod", "qa:staging"], ["qa:staging", "staging:prod"]),
        ([" staging : prod , ,staging:prod"], ["staging:prod"]),
        ([""], []),
        ([], []),
        (["a:b,a:c,b:c"], ["a:b", "a:c", "b:c"]),  # a diamond is no cycle
    ],
)
def test_parse_rules(texts: list[str], rules: list[str]) -> None:
    assert [str(r) for r in parse_rules(texts)] == rules


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("staging", "is not FROM:TO"),
        ("staging:prod:eu", "is not FROM:TO"),
        (":prod", "rule '' is not a valid name"),
        ("staging:", "is not a valid name"),
        ("sta ging:prod", "is not a valid name"),
        ("prod:prod", "names one environment twice"),
        ("staging:prod,prod:staging", "cycle (prod -> staging -> prod)"),
        ("a:b,b:c,c:a", "cycle (a -> b -> c -> a)"),
    ],
)
def test_bad_rules(text: str, error: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules([text])
    assert error in str(caught.value)


def test_remove_rules() -> None:
    rules = parse_rules(["qa:staging,staging:prod"])
    assert remove_rules(rules, parse_rules(["qa:staging"])) == (Rule("staging", "prod"),)
    with pytest.raises(RuleError, match=r"no promotion rule qa:prod to remove \(rules: qa:st"):
        remove_rules(rules, parse_rules(["qa:prod"]))


def test_verdict_texts() -> None:
    from seeder.caller import Caller
    from seeder.promote_cli import verdict_text
    from seeder.promotion_gate import record

    alice = Caller("alice", "deployer")
    refused = promotion_check(RULES, Rel(), PROD, [])
    assert verdict_text(record(refused, forced=False, caller=alice)) == (
        "promotion: REFUSED (--force overrides it)\n"
        "  rule staging:prod (app web): NOT MET: it was never rolled out on staging"
    )
    forced = record(refused, forced=True, caller=alice)
    assert verdict_text(forced).startswith(
        "promotion: FORCED by alice (deployer) over rule(s) staging:prod\n"
    )
    assert verdict_text(forced, planned=True).startswith(
        "promotion: --force would override rule(s) staging:prod\n"
    )
    allowed = promotion_check(RULES, Rel(), PROD, [STAGING_OK])
    assert verdict_text(record(allowed, forced=False, caller=alice)).startswith(
        "promotion: allowed\n  rule staging:prod (app web): ok: rollout r1 succeeded"
    )
    unruled = promotion_check((), Rel(), PROD, [])
    assert verdict_text(record(unruled, forced=False, caller=alice)) == ""
    assert verdict_text(None) == ""
