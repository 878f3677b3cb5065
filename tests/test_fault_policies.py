"""Pure policies for surviving faults: disk space, seed re-checks, the seeder's kept releases."""

from __future__ import annotations

import pytest

from common.recheck import RecheckPolicy, RecheckState, checked, look
from peer.space import SpaceNeed, shortfall, space_needed
from seeder.retention import needed_by_hosts, releases_to_seed

MB = 1_000_000

# --- disk space ----------------------------------------------------------------------------------


def test_space_needed_counts_download_unpack_and_reserve() -> None:
    need = space_needed(10 * MB, ratio=3.0, reserve=5 * MB)
    assert need == SpaceNeed(download=10 * MB, unpack=30 * MB, reserve=5 * MB)
    assert need.total == 45 * MB


def test_what_is_already_downloaded_is_not_needed_again() -> None:
    assert space_needed(10 * MB, 4 * MB, ratio=1.0, reserve=0).download == 6 * MB
    assert space_needed(10 * MB, 12 * MB, ratio=1.0, reserve=0).download == 0  # never negative


def test_shortfall_is_none_when_it_fits_exactly() -> None:
    need = space_needed(10 * MB, ratio=2.0, reserve=MB)
    assert shortfall(need, 31 * MB) is None
    assert shortfall(need, 31 * MB - 1) is not None


def test_shortfall_explains_the_numbers() -> None:
    message = shortfall(space_needed(10 * MB, ratio=3.0, reserve=5 * MB), 20 * MB)
    assert message is not None
    assert "not enough disk space" in message
    assert "45.0 MB" in message and "20.0 MB is free" in message and "free 25.0 MB" in message


# --- seed re-checks ------------------------------------------------------------------------------

POLICY = RecheckPolicy(interval=3600.0, min_gap=30.0, tick=10.0)


def test_an_unchanged_seed_is_left_alone_until_the_routine_check() -> None:
    state = checked(0.0)
    for now in (10.0, 100.0, 3599.0):
        state, reason = look(state, now, POLICY, files_changed=False)
        assert reason is None
    state, reason = look(state, 3600.0, POLICY, files_changed=False)
    assert reason is not None and "routine" in reason
    assert state == RecheckState(last_check=3600.0)


def test_a_change_rechecks_at_once() -> None:
    state, reason = look(checked(0.0), 100.0, POLICY, files_changed=True)
    assert reason == "its files changed on disk"
    assert state == checked(100.0)


def test_a_change_within_the_gap_waits_and_is_not_forgotten() -> None:
    state, reason = look(checked(0.0), 10.0, POLICY, files_changed=True)
    assert reason is None and state.changed
    state, reason = look(state, 20.0, POLICY, files_changed=False)  # the file looks stable now
    assert reason is None and state.changed
    state, reason = look(state, 30.0, POLICY, files_changed=False)
    assert reason == "its files changed on disk"
    assert not state.changed and state.last_check == 30.0


def test_rechecks_never_come_closer_than_the_gap() -> None:
    state, now, starts = checked(0.0), 0.0, []
    while now < 300.0:  # a file that changes at every look (a hostile or broken writer)
        now += POLICY.tick
        state, reason = look(state, now, POLICY, files_changed=True)
        if reason:
            starts.append(now)
    assert starts == [30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0]


@pytest.mark.parametrize("field", ["interval", "min_gap", "tick"])
def test_policy_refuses_non_positive_values(field: str) -> None:
    with pytest.raises(ValueError, match="positive"):
        RecheckPolicy(**{field: 0.0})


# --- the seeder's kept releases ------------------------------------------------------------------

BUILT = {"r1": 1.0, "r2": 2.0, "r3": 3.0, "r4": 4.0, "r5": 5.0}


def test_keeps_the_newest_n() -> None:
    assert releases_to_seed(BUILT, 2, ()) == {"r4", "r5"}
    assert releases_to_seed(BUILT, 0, ()) == set()
    assert releases_to_seed(BUILT, 10, ()) == set(BUILT)


def test_pinned_releases_are_kept_whatever_their_age() -> None:
    assert releases_to_seed(BUILT, 1, {"r1", "gone"}) == {"r1", "r5"}  # unknown ids ignored


def test_keep_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        releases_to_seed(BUILT, -1, ())


def test_hosts_pin_their_current_and_rollback_target() -> None:
    hosts = [("r3", "r2"), ("r4", "r1"), ("r4", None), (None, None)]
    assert needed_by_hosts(hosts) == {"r3", "r2", "r4", "r1"}
    assert needed_by_hosts(hosts[2:]) == {"r4"}


def test_a_host_with_nothing_pins_nothing() -> None:
    assert needed_by_hosts([(None, None)]) == set()
