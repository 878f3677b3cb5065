"""The store's promotion tables and the gate that reads them, with a real SQLite store and
rollouts driven by the real machine (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ShoalError
from seeder import machine as mc
from seeder.caller import Caller
from seeder.promotion import PromotionRefused
from seeder.promotion_gate import PromotionGate
from seeder.store import Store
from seeder.store_promotions import RolloutPromotion
from seeder.store_rollouts import Commit
from tests.conftest import MANIFEST
from tests.test_machine import Run

RID = MANIFEST.release_id
ALICE = Caller("alice", "deployer")


def started(store: Store, rollout_id: str, envs: dict[str, str], **options: object) -> Run:
    """A rollout of RID over ``envs``' hosts, created in the store with its targets' envs."""
    run = Run(sorted(envs), start=False, waves="100%", **options)  # type: ignore[arg-type]
    run.r.rollout_id, run.r.release_id = rollout_id, RID
    run.r.token = int(rollout_id[1:])
    for t in run.r.targets.values():
        t.release_id = RID
    run.apply(mc.Start())
    store.commit([Commit(run.r, create=True, promotion=RolloutPromotion(envs, None))])
    return run


def save(store: Store, run: Run) -> None:
    store.commit([Commit(run.r, targets=list(run.r.targets), rollout_changed=True)])


def finish(store: Store, run: Run, failing: tuple[str, ...] = ()) -> None:
    run.stage_all(sorted(run.r.targets))
    for host in sorted(run.r.targets):
        run.activate(host, ok=host not in failing)
    run.apply(mc.Tick(), at=run.now + 1)
    save(store, run)


def test_rules_persist_and_are_replaced(tmp_path: Path, store: Store) -> None:
    store.set_promotion_rules("demo", ["qa:staging", "staging:prod"], 5.0, "alice")
    store.close()
    again = Store(tmp_path / "seeder.db")
    try:
        rec = again.promotion_rules("demo")
        assert (rec.rules, rec.updated_at, rec.updated_by) == (
            ["qa:staging", "staging:prod"],
            5.0,
            "alice",
        )
        again.set_promotion_rules("demo", [], 6.0, "bob")
        assert again.promotion_rules("demo").rules == []
        assert again.promotion_rules("other").rules == []
    finally:
        again.close()


def test_history_and_verdict_follow_the_stored_rollouts(store: Store) -> None:
    store.set_promotion_rules("demo", ["staging:prod"], 1.0, "alice")
    gate = PromotionGate(store)
    prod = {"p1": "prod"}
    assert "never rolled out on staging" in gate.verdict(RID, prod).refusal()

    run = started(store, "r1", {"a": "staging", "b": "staging", "c": "qa"}, max_failures="1")
    assert "r1, it is still staging" in gate.verdict(RID, prod).refusal()
    finish(store, run, failing=("b",))
    assert run.state() == "succeeded"
    assert "did not all succeed (b: failed)" in gate.verdict(RID, prod).refusal()
    (history,) = store.promotion_history(RID)
    assert {t.host: (t.env, t.state.value) for t in history.targets} == {
        "a": ("staging", "succeeded"),
        "b": ("staging", "failed"),
        "c": ("qa", "succeeded"),
    }

    run = started(store, "r2", {"a": "staging", "c": "qa"})
    finish(store, run)
    verdict = gate.verdict(RID, prod)
    assert verdict.ok and verdict.checks[0].evidence == "r2"
    assert gate.admit(force=False, caller=ALICE)(RID, prod)["ok"] is True


def test_a_rollout_without_envs_is_no_evidence(store: Store) -> None:
    """Rollouts recorded before envs were (no promotion row) put hosts in no env."""
    store.set_promotion_rules("demo", ["staging:prod"], 1.0, "alice")
    run = Run(["a"], start=False, waves="100%")
    run.r.release_id = RID
    run.r.targets["a"].release_id = RID
    run.apply(mc.Start())
    store.commit([Commit(run.r, create=True)])
    finish(store, run)
    assert [t.env for t in store.promotion_history(RID)[0].targets] == [""]
    assert not PromotionGate(store).verdict(RID, {"p1": "prod"}).ok


def test_admit_refuses_or_records_who_forced(store: Store) -> None:
    store.set_promotion_rules("demo", ["staging:prod"], 1.0, "alice")
    gate = PromotionGate(store)
    with pytest.raises(PromotionRefused, match=r"rule staging:prod of app demo"):
        gate.admit(force=False, caller=ALICE)(RID, {"p1": "prod"})
    record = gate.admit(force=True, caller=ALICE)(RID, {"p1": "prod", "s1": "staging"})
    assert record["forced"] is True and record["overridden"] == ["staging:prod"]
    assert (record["by"], record["role"]) == ("alice", "deployer")
    assert record["envs"] == {"prod": ["p1"], "staging": ["s1"]}
    # a rule that holds is not "forced", --force or not
    assert gate.admit(force=True, caller=ALICE)(RID, {"s1": "staging"})["forced"] is False


def test_the_verdict_is_stored_with_the_rollout(store: Store) -> None:
    run = Run(["a"], start=False, waves="100%")
    verdict = {"ok": False, "forced": True, "by": "alice", "checks": []}
    store.commit([Commit(run.r, create=True, promotion=RolloutPromotion({"a": "prod"}, verdict))])
    assert store.rollout_promotion("r1") == verdict
    assert store.rollout_promotion("r-unknown") is None
    assert store.forced_by(["r1", "r-unknown"]) == {"r1": "alice"}
    assert store.forced_by([]) == {}


def test_start_records_the_verdict_first_in_the_timeline() -> None:
    run = Run(["a"], start=False, waves="100%")
    fx = run.apply(mc.Start({"ok": False, "forced": True, "by": "alice"}))
    assert fx.timeline[0] == ("promotion", {"ok": False, "forced": True, "by": "alice"})
    assert [kind for kind, _ in fx.timeline[1:]] == ["target", "rollout"]
    assert [kind for kind, _ in Run(["a"]).log[0].timeline] == ["target", "rollout"]


async def test_the_rules_method_checks_what_it_is_given(store: Store) -> None:
    from seeder.applications import new_app
    from seeder.promotion_gate import promotion_methods

    store.add_app(new_app({"name": "demo", "repo": "/srv/git/demo"}, now=1.0, by="alice"))
    handle = promotion_methods(PromotionGate(store), set)["app.promotion.set"]
    answer = await handle({"app": "demo", "promote": ["qa:staging,staging:prod"]})
    assert answer["promote"] == ["qa:staging", "staging:prod"]
    assert answer["updated_by"] == "operator"  # the caller outside a request: the local one
    assert (await handle({"app": "demo", "remove": ["qa:staging"]}))["promote"] == ["staging:prod"]
    for params, error in [
        ({"app": "demo"}, "give the rules to set"),
        ({"app": "demo", "promote": [], "remove": []}, "give the rules to set"),
        ({"app": "demo", "remove": ["qa:prod"]}, "no promotion rule qa:prod to remove"),
        ({"app": "demo", "promote": [3]}, "must be a list of FROM:TO rules"),
        ({"app": "demo", "promote": ["prod:staging", "staging:prod"]}, "cycle"),
        ({"app": "nope", "promote": ["staging:prod"]}, "no application named 'nope'"),
    ]:
        with pytest.raises(ShoalError, match=error):
            await handle(params)
    assert store.promotion_rules("demo").rules == ["staging:prod"]  # refusals changed nothing
