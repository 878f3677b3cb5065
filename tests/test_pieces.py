"""Slices and stall detection: pure logic."""

from __future__ import annotations

import pytest

from common.pieces import (
    MAX_SLICES,
    OWN,
    LagWatch,
    StallDetector,
    assists,
    missing_slices,
    piece_priorities,
    slice_count,
    slice_fractions,
    slice_mask,
)


def test_slices_are_interleaved_and_cover_every_piece_once() -> None:
    masks = [slice_mask(10, k, 3) for k in range(3)]
    assert masks[1] == [False, True, False, False, True, False, False, True, False, False]
    assert [sum(col) for col in zip(*masks, strict=True)] == [1] * 10


def test_own_slice_comes_first() -> None:
    assert piece_priorities(5, (0, 2), bands=1) == [OWN, OWN - 1, OWN, OWN - 1, OWN]


def test_front_of_the_file_comes_first() -> None:
    prios = piece_priorities(9, (1, 3))
    assert prios == [6, 7, 6, 4, 5, 4, 2, 3, 2]  # three bands, own slice (1, 4, 7) first in each
    assert min(piece_priorities(1000, None)) >= 1  # never 0: that would not download at all
    assert piece_priorities(6, None) == [6, 6, 4, 4, 2, 2]
    with pytest.raises(ValueError):
        piece_priorities(9, None, bands=4)


def test_slice_count_is_capped() -> None:
    assert slice_count(1) == 1
    assert slice_count(16) == 16
    assert slice_count(500) == MAX_SLICES


def test_missing_slices() -> None:
    assert missing_slices([True, False, True, True, False, True], 3) == [1]
    assert missing_slices([True] * 6, 3) == []


def test_bad_slice_index() -> None:
    with pytest.raises(ValueError, match="does not exist"):
        slice_mask(4, 2, 2)


def test_stall_fires_after_patience_without_progress_and_rearms() -> None:
    stall = StallDetector(patience=2.0)
    assert not stall.update(0.1, now=0.0)
    assert not stall.update(0.1, now=1.9)
    assert stall.update(0.1, now=2.0)
    assert not stall.update(0.1, now=3.0)
    assert stall.update(0.1, now=4.0)  # still stuck: fires again
    assert not stall.update(0.2, now=4.5)  # progress resets the clock
    assert not stall.update(0.2, now=6.4)
    assert stall.update(0.2, now=6.5)


def test_slice_fractions() -> None:
    assert slice_fractions([True, False, True, True, False, False], 3) == [1.0, 0.0, 0.5]


def test_lagging_slice_is_reported_after_patience() -> None:
    watch = LagWatch(count=4, patience=2.0)
    # slices 0..3 of 40 pieces; slice 3 has nothing while the others are 60% done
    have = [(i % 4 != 3) and (i // 4 < 6) for i in range(40)]
    assert watch.update(have, now=0.0) == []
    assert watch.update(have, now=1.9) == []
    assert watch.update(have, now=2.0) == [3]
    have[3] = have[7] = have[11] = have[15] = True  # slice 3 catches up to 40%
    assert watch.update(have, now=2.5) == []


def test_lag_on_a_short_transfer_is_acted_on_before_the_patience() -> None:
    """The median slice moves 10 points in 0.3 s while slice 3 stays far behind: that is lag,
    on a transfer this fast, long before 2 s have passed."""
    watch = LagWatch(count=4, patience=2.0, progress=0.1)
    have = [(i % 4 != 3) and (i // 4 < 4) for i in range(40)]  # others 40%, slice 3 at 0
    assert watch.update(have, now=0.0) == []
    assert watch.update(have, now=0.2) == []  # nothing moved: only time counts
    have[16] = have[17] = have[18] = True  # the other slices reach 50%
    assert watch.update(have, now=0.3) == [3]
    have[3] = have[7] = True  # slice 3 reaches 20%
    assert watch.update(have, now=0.35) == [3]  # 20% < 25% and 30 points behind: still lagging
    have[11] = True  # 30%: not below half the median any more
    assert watch.update(have, now=0.4) == []


def test_early_noise_is_not_lag() -> None:
    watch = LagWatch(count=4, patience=0.0)
    have = [i in (0, 1, 2) for i in range(40)]  # three slices have one piece, one has none
    assert watch.update(have, now=0.0) == []


def test_a_few_next_owners_assist_a_lagging_slice() -> None:
    helpers = [k for k in range(8) if assists(k, lagging=6, count=8, helpers=3)]
    assert helpers == [0, 1, 7]
    assert not assists(6, lagging=6, count=8, helpers=3)  # the owner itself is not a helper
