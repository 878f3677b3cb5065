"""Which machines this peer trades releases with over BitTorrent: a closed swarm.

Only the members of its current rollout, as the seeder lists them (:class:`~common.messages.
SwarmMembers`: the rollout's enrolled targets and the seeder), may connect to this host's
BitTorrent port or be dialled from it; everyone else is refused by libtorrent's IP filter, so an
outsider holding a release's ``.torrent`` gets nothing from here. Until the seeder has named the
members (start-up, before the first rollout) nobody is admitted. A list for an older rollout
(a lower fencing token) than the one in force is ignored.
"""

from __future__ import annotations

import logging

from common import messages as m
from common.torrent import TorrentSession

log = logging.getLogger("shoal.peer.swarm")


class SwarmFilter:
    def __init__(self, torrents: TorrentSession) -> None:
        self.torrents = torrents
        self.token = -1
        self.rollout_id: str | None = None
        self.addresses: list[str] = []
        torrents.set_allowed_peers(())

    def update(self, msg: m.SwarmMembers) -> bool:
        """Admit ``msg``'s members (only); False if it is older than the list in force."""
        if msg.token < self.token:
            log.info("ignoring swarm members of %s (older token %d)", msg.rollout_id, msg.token)
            return False
        if (msg.token, msg.addresses) != (self.token, self.addresses):
            self.torrents.set_allowed_peers(msg.addresses)
            log.info("swarm of %s: %d member address(es)", msg.rollout_id, len(msg.addresses))
        self.token, self.rollout_id, self.addresses = msg.token, msg.rollout_id, list(msg.addresses)
        return True
