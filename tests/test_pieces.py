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
