"""What the peer's jobs share: its layout, journal, reporter and torrent session."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from common.torrent import TorrentSession
from peer.fencing import Fence
from peer.journal import Journal
from peer.layout import Layout
from peer.replies import Replies
from peer.reports import Reporter
from peer.space import RESERVE, UNPACK_RATIO


@dataclass
class PeerContext:
    name: str
    layout: Layout
    journal: Journal
    reporter: Reporter
    torrents: TorrentSession
    keep_releases: int = 5
    min_free: int = RESERVE  # bytes staging always leaves free on the data disk
    unpack_ratio: float = UNPACK_RATIO  # unpacked size / archive size, for the space check
    activation_lock: trio.Lock = field(default_factory=trio.Lock)
    replies: Replies = field(default_factory=Replies)
    fence: Fence = field(init=False)

    def __post_init__(self) -> None:
        self.fence = Fence(self.journal)
