"""The slice plan: own slice first, other pieces once a peer has them, fallback when stuck."""

from __future__ import annotations

import pytest

from common.pieces import LOCKED, OPEN, OWN, SlicePlan


def test_own_slice_is_interleaved_and_first() -> None:
    plan = SlicePlan(num_pieces=7, index=1, count=3)
    assert plan.priorities() == [LOCKED, OWN, LOCKED, LOCKED, OWN, LOCKED, LOCKED]
    assert plan.locked == 5


def test_pieces_unlock_when_a_peer_besides_the_origin_has_them() -> None:
    plan = SlicePlan(num_pieces=4, index=0, count=2)
    have = [False] * 4
    assert not plan.update(have, [1, 1, 1, 1], now=0.0)  # only the origin has anything
    assert plan.update(have, [1, 2, 1, 1], now=0.1)
    assert plan.priorities() == [OWN, OPEN, OWN, LOCKED]
    assert not plan.update(have, [1, 2, 1, 1], now=0.2)


def test_stuck_peer_unlocks_everything_after_patience() -> None:
    plan = SlicePlan(num_pieces=4, index=0, count=2, patience=1.0)
    have = [True, False, True, False]  # own slice done, the rest only at the origin
    assert not plan.update(have, [1, 1, 1, 1], now=10.0)
    assert not plan.update(have, [1, 1, 1, 1], now=10.9)
    assert plan.update(have, [1, 1, 1, 1], now=11.0)
    assert plan.locked == 0


def test_idle_peer_keeps_waiting_while_the_swarm_makes_progress() -> None:
    plan = SlicePlan(num_pieces=6, index=0, count=3, patience=1.0)
    have = [True, False, False, True, False, False]
    plan.update(have, [1, 1, 1, 1, 1, 1], now=0.0)  # idle: everything else is locked
    plan.update(have, [1, 2, 1, 1, 1, 1], now=0.8)  # a new piece appears in the swarm
    have[1] = True
    assert not plan.update(have, [1, 2, 1, 1, 1, 1], now=1.5)  # idle again since 1.5
    assert not plan.update(have, [1, 2, 1, 1, 1, 1], now=2.4)
    assert plan.locked == 3
    assert plan.update(have, [1, 2, 1, 1, 1, 1], now=2.5)  # stuck for the whole patience
    assert plan.locked == 0 and plan.gave_up


def test_progress_resets_the_patience_clock() -> None:
    plan = SlicePlan(num_pieces=4, index=0, count=2, patience=1.0)
    plan.update([True, False, False, False], [1, 1, 1, 1], now=0.0)  # own piece 2 still due
    plan.update([True, False, True, False], [1, 1, 1, 1], now=5.0)  # idle starts now
    assert not plan.update([True, False, True, False], [1, 1, 1, 1], now=5.5)
    assert plan.update([True, False, True, False], [1, 1, 1, 1], now=6.0)


def test_more_targets_than_pieces() -> None:
    plan = SlicePlan(num_pieces=2, index=5, count=8)
    assert plan.priorities() == [LOCKED, LOCKED]
    with pytest.raises(ValueError, match="does not exist"):
        SlicePlan(num_pieces=2, index=8, count=8)


def test_without_the_origin_one_holder_is_enough() -> None:
    plan = SlicePlan(num_pieces=4, index=0, count=2)
    have = [True, False, True, False]
    assert plan.own_done(have)
    assert not plan.own_done([True, False, False, False])
    assert plan.update(have, [0, 1, 0, 0], now=0.0, origin_counted=False)
    assert plan.priorities()[1] != 0 and plan.priorities()[3] == 0
