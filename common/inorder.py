"""Pieces that complete in any order, handed on in file order: the plan of an in-order reader.

A swarm completes pieces rarest-first, not front to back, but a digest and a decompressor need
the bytes in order. :class:`InOrder` decides which completed pieces to read back and when their
bytes can be passed on; the reading itself (libtorrent's ``read_piece``) is the caller's. At most
``window`` pieces are read ahead of the first piece not yet passed on, so memory stays bounded
however far ahead the swarm runs.

Pure logic: no IO, no libtorrent; tested with pieces fed out of order.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class InOrder:
    num_pieces: int
    window: int = 32
    _next: int = 0  # the first piece not yet passed on
    _finished: set[int] = field(default_factory=set)  # completed, not yet asked for
    _asked: set[int] = field(default_factory=set)  # read requested, data not yet here
    _data: dict[int, bytes] = field(default_factory=dict)  # read back, not yet passed on

    def __post_init__(self) -> None:
        if self.num_pieces < 0 or self.window < 1:
            raise ValueError(f"bad InOrder({self.num_pieces}, window={self.window})")

    @property
    def done(self) -> bool:
        """Every piece has been passed on."""
        return self._next >= self.num_pieces

    @property
    def position(self) -> int:
        """How many pieces have been passed on."""
        return self._next

    def finished(self, piece: int) -> None:
        """``piece`` is complete and verified where the caller reads from (repeats are fine)."""
        self._check(piece)
        if piece >= self._next and piece not in self._asked and piece not in self._data:
            self._finished.add(piece)

    def to_read(self) -> list[int]:
        """Pieces to read back now, in order: completed and within the window."""
        room = self.window - len(self._asked) - len(self._data)
        limit = self._next + self.window
        wanted = sorted(p for p in self._finished if p < limit)[: max(room, 0)]
        self._finished.difference_update(wanted)
        self._asked.update(wanted)
        return wanted

    def arrived(self, piece: int, data: bytes) -> None:
        """The bytes of a piece asked for by :meth:`to_read`."""
        self._check(piece)
        if piece not in self._asked:
            raise ValueError(f"piece {piece} arrived but was not asked for")
        self._asked.discard(piece)
        self._data[piece] = data

    def retry(self, piece: int) -> None:
        """A read of ``piece`` failed: ask for it again on the next :meth:`to_read`."""
        if piece in self._asked:
            self._asked.discard(piece)
            self._finished.add(piece)

    def take(self) -> list[bytes]:
        """The bytes that can be passed on now, in file order (possibly none)."""
        out = []
        while self._next in self._data:
            out.append(self._data.pop(self._next))
            self._next += 1
        return out

    def _check(self, piece: int) -> None:
        if not 0 <= piece < self.num_pieces:
            raise ValueError(f"piece {piece} is out of range (0..{self.num_pieces - 1})")
