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
    _state: bytearray = field(default_factory=bytearray)  # per piece: one of the states below
    _pending: int = 0  # pieces asked for or read back, not yet passed on
    _data: dict[int, bytes] = field(default_factory=dict)  # read back, not yet passed on

    _MISSING, _FINISHED, _ASKED, _READ = 0, 1, 2, 3

    def __post_init__(self) -> None:
        if self.num_pieces < 0 or self.window < 1:
            raise ValueError(f"bad InOrder({self.num_pieces}, window={self.window})")
        self._state = bytearray(self.num_pieces)

    @property
    def done(self) -> bool:
        """Every piece has been passed on."""
        return self._next >= self.num_pieces

    @property
    def position(self) -> int:
        """How many pieces have been passed on."""
        return self._next

    @property
    def horizon(self) -> int:
        """Pieces below this index are the ones :meth:`to_read` may ask for: a completed piece
        at or past it changes nothing until the front moves."""
        return self._next + self.window

    def finished(self, piece: int) -> None:
        """``piece`` is complete and verified where the caller reads from (repeats are fine)."""
        self._check(piece)
        if piece >= self._next and self._state[piece] == self._MISSING:
            self._state[piece] = self._FINISHED

    def to_read(self) -> list[int]:
        """Pieces to read back now, in order: completed and within the window."""
        wanted: list[int] = []
        room = self.window - self._pending
        for piece in range(self._next, min(self.horizon, self.num_pieces)):
            if room <= 0:
                break
            if self._state[piece] == self._FINISHED:
                self._state[piece] = self._ASKED
                wanted.append(piece)
                room -= 1
        self._pending += len(wanted)
        return wanted

    def arrived(self, piece: int, data: bytes) -> None:
        """The bytes of a piece asked for by :meth:`to_read`."""
        self._check(piece)
        if self._state[piece] != self._ASKED:
            raise ValueError(f"piece {piece} arrived but was not asked for")
        self._state[piece] = self._READ
        self._data[piece] = data

    def retry(self, piece: int) -> None:
        """A read of ``piece`` failed: ask for it again on the next :meth:`to_read`."""
        self._check(piece)
        if self._state[piece] == self._ASKED:
            self._state[piece] = self._FINISHED
            self._pending -= 1

    def take(self) -> list[bytes]:
        """The bytes that can be passed on now, in file order (possibly none)."""
        out = []
        while self._next < self.num_pieces and self._state[self._next] == self._READ:
            out.append(self._data.pop(self._next))
            self._next += 1
            self._pending -= 1
        return out

    def _check(self, piece: int) -> None:
        if not 0 <= piece < self.num_pieces:
            raise ValueError(f"piece {piece} is out of range (0..{self.num_pieces - 1})")
