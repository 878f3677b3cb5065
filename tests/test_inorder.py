"""InOrder: pieces completed and read back in any order come out in file order, bounded."""

from __future__ import annotations

import random

import pytest

from common.inorder import InOrder


def drive(order: InOrder, completion: list[int], reads_reversed: bool) -> tuple[bytes, int]:
    """Complete pieces in `completion` order, answer reads (optionally newest first); returns
    the bytes passed on and the most pieces ever held (asked or read) at once."""
    out, held = b"", 0
    for piece in completion:
        order.finished(piece)
        asked = order.to_read()
        held = max(held, order._pending)
        for p in reversed(asked) if reads_reversed else asked:
            order.arrived(p, bytes([p % 256]) * 3)
            held = max(held, order._pending)
        out += b"".join(order.take())
    return out, held


@pytest.mark.parametrize("seed", range(5))
def test_random_completion_order_comes_out_in_file_order(seed: int) -> None:
    pieces = list(range(200))
    random.Random(seed).shuffle(pieces)
    order = InOrder(200, window=8)
    out, held = drive(order, pieces, reads_reversed=bool(seed % 2))
    # Everything completed, but pieces far ahead of the cursor may still wait for the window.
    while not order.done:
        asked = order.to_read()
        assert asked, "no progress though every piece is complete"
        for p in asked:
            order.arrived(p, bytes([p % 256]) * 3)
        out += b"".join(order.take())
    assert out == b"".join(bytes([p % 256]) * 3 for p in range(200))
    assert held <= 8


def test_nothing_passes_a_missing_piece() -> None:
    order = InOrder(4, window=4)
    for p in (1, 2, 3):
        order.finished(p)
    asked = order.to_read()
    assert asked == [1, 2, 3]
    for p in asked:
        order.arrived(p, b"x")
    assert order.take() == []
    order.finished(0)
    assert order.to_read() == [0]
    order.arrived(0, b"0")
    assert order.take() == [b"0", b"x", b"x", b"x"]
    assert order.done and order.position == 4


def test_window_bounds_read_ahead() -> None:
    order = InOrder(100, window=3)
    for p in range(1, 100):
        order.finished(p)
    assert order.to_read() == [1, 2]  # piece 0 is missing: only pieces below 0 + 3
    order.finished(0)
    assert order.to_read() == [0]  # the window is full now (3 asked)
    assert order.to_read() == []


def test_repeated_completion_is_asked_once_and_retry_asks_again() -> None:
    order = InOrder(2, window=2)
    order.finished(0)
    order.finished(0)
    assert order.to_read() == [0]
    order.finished(0)  # libtorrent said it again while the read is under way
    assert order.to_read() == []
    order.retry(0)
    assert order.to_read() == [0]
    order.arrived(0, b"a")
    assert order.take() == [b"a"]
    order.finished(0)  # already passed on: ignored
    assert order.to_read() == []


def test_bad_input_is_refused() -> None:
    order = InOrder(2)
    with pytest.raises(ValueError, match="out of range"):
        order.finished(2)
    with pytest.raises(ValueError, match="not asked for"):
        order.arrived(1, b"")
    with pytest.raises(ValueError):
        InOrder(3, window=0)


def test_empty_torrent_is_done() -> None:
    assert InOrder(0).done
