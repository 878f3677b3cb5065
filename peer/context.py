"""What the peer's jobs share: its layout, journal, reporter, torrent session and the key
releases must be signed with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import trio

from common.crypto.signing import Verifier
from common.torrent import TorrentSession
from peer.fencing import Fence
from peer.journal import Journal
from peer.layout import Layout
from peer.replies import Replies
from peer.reports import Reporter
from peer.restart import RestartRequest
from peer.space import RESERVE, UNPACK_RATIO
from peer.swarm import SwarmFilter


@dataclass
class PeerContext:
    name: str
    layout: Layout
    journal: Journal
    reporter: Reporter
    torrents: TorrentSession
    release_key: Verifier  # the seeder's pinned release-signing key (peer.trust)
    keep_releases: int = 5
    min_free: int = RESERVE  # bytes staging always leaves free on the data disk
    unpack_ratio: float = UNPACK_RATIO  # unpacked size / archive size, for the space check
    activation_lock: trio.Lock = field(default_factory=trio.Lock)
    replies: Replies = field(default_factory=Replies)
    fence: Fence = field(init=False)
    prefix: Path | None = None  # the install prefix it runs from (upgrades need one)
    upgrade_timeout: float = 120.0  # seconds a new version has to connect after an upgrade
    restart: RestartRequest = field(default_factory=RestartRequest)
    labels: dict[str, str] = field(default_factory=dict)  # what the next hello says
    relabelled: trio.Event = field(default_factory=trio.Event)  # set: say hello again
    swarm: SwarmFilter = field(init=False)

    def __post_init__(self) -> None:
        self.fence = Fence(self.journal)
        self.swarm = SwarmFilter(self.torrents)  # closed until the seeder names the members

    def set_labels(self, labels: dict[str, str]) -> None:
        """New labels (a reload): the connection says hello again with them."""
        self.labels = dict(labels)
        self.relabelled.set()
