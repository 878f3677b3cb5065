"""The wave planner and host selectors as pure logic."""

from __future__ import annotations

import pytest

from seeder.selector import SelectorError, select_hosts
from seeder.store import HostRecord
from seeder.waves import PlanError, RolloutOptions, plan_waves, spread_order


def host(name: str, **labels: str) -> HostRecord:
    return HostRecord(name, "10.0.0.1", 6881, labels, None, [], True, 0.0)


HOSTS = [host("a", zone="x", env="prod"), host("b", zone="y", env="prod"), host("c", zone="x")]


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
    assert select_hosts(selector, HOSTS) == expected


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
    with pytest.raises(SelectorError, match=match):
        select_hosts(selector, HOSTS)


def names(n: int) -> list[str]:
    return [f"h{i:02d}" for i in range(n)]


def waves(n: int, **opts: object) -> list[list[str]]:
    return plan_waves(names(n), {}, RolloutOptions.from_params(opts)).waves


def test_default_waves_are_a_canary_then_10_50_100_percent() -> None:
    sizes = [len(w) for w in waves(100)]
    assert sizes == [1, 9, 40, 50]
    assert [len(w) for w in waves(3)] == [1, 1, 1]  # 10% of 3 rounds up to the canary: merged
    assert [len(w) for w in waves(1)] == [1]
    assert [h for w in waves(37) for h in w] == names(37)  # every host exactly once, in order


def test_counts_and_percentages_are_cumulative() -> None:
    assert [len(w) for w in waves(10, waves="2,5,100%")] == [2, 3, 5]
    assert [len(w) for w in waves(10, waves="25%,100%")] == [3, 7]
    assert [len(w) for w in waves(4, waves="10,100%")] == [4]  # counts cap at the targets


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("5,2,100%", "must grow"),
        ("1,50%", "covers 5 of 10"),
        ("1,,100%", "comma-separated"),
        ("abc", "not a number"),
        ("0,100%", "a wave of 0 hosts"),
        ("150%", "out of range"),
    ],
)
def test_bad_wave_specs(spec: str, match: str) -> None:
    with pytest.raises(PlanError, match=match):
        waves(10, waves=spec)


def test_budgets_resolve_to_host_counts() -> None:
    plan = plan_waves(
        names(20),
        {},
        RolloutOptions.from_params(
            {
                "waves": "2,50%,100%",
                "max_failures": "10%",
                "wave_max_failures": "50%",
                "min_staged": "90%",
            }
        ),
    )
    assert plan.max_failures == 2  # 10% of 20
    assert plan.wave_max_failures == [1, 4, 5]  # half of each wave, rounded down
    assert plan.min_staged == 18
    assert RolloutOptions.from_params({"min_staged": "90"}).min_staged == "90"
    assert plan_waves(names(20), {}, RolloutOptions(min_staged="90")).min_staged == 18


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"max_failures": "x"}, "--max-failures"),
        ({"concurrency": -1}, "--concurrency"),
        ({"bake": -5}, "--bake"),
        ({"gate_timeout": 0}, "--gate-timeout"),
        ({"min_staged": "101%"}, "--min-staged"),
        ({"concurrency": "many"}, "bad rollout option"),
    ],
)
def test_bad_options(opts: dict[str, object], match: str) -> None:
    with pytest.raises(PlanError, match=match):
        RolloutOptions.from_params(opts)


def test_spread_takes_every_rack_in_proportion() -> None:
    labels = {f"a{i}": {"rack": "A"} for i in range(6)} | {f"b{i}": {"rack": "B"} for i in range(3)}
    labels |= {"c0": {"rack": "C"}}
    order = spread_order(sorted(labels), labels, "rack")
    assert sorted(order) == sorted(labels)
    plan = plan_waves(sorted(labels), labels, RolloutOptions(waves="3,60%,100%", spread="rack"))
    racks = [[labels[h]["rack"] for h in w] for w in plan.waves]
    assert racks == [["A", "B", "A"], ["A", "B", "C"], ["A", "A", "B", "A"]]
    for rack in ("A", "B"):  # a rack of several hosts is never taken by one wave
        assert sum(rack in wave for wave in racks) > 1
    unspread = plan_waves(sorted(labels), labels, RolloutOptions(waves="3,60%,100%"))
    assert unspread.waves[1] == ["a3", "a4", "a5"]  # without --spread: the rest of rack A


def test_spread_on_an_unknown_label_is_refused() -> None:
    with pytest.raises(PlanError, match="no target has the label 'rack'"):
        plan_waves(["a", "b"], {"a": {}, "b": {}}, RolloutOptions(spread="rack"))
