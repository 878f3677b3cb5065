"""The tracker's pure state: who is in which swarm, who has expired, whom to hand out.

It takes ``now`` as an argument and does no IO, so it is tested without sockets or sleeps (see
:mod:`seeder.tracker` for the HTTP shell around it).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

Addr: TypeAlias = tuple[str, int]

# Announce defaults, in seconds. Every libtorrent-based client announces at most every
# min_announce_interval (300 s unless its operator lowered it, as shoal's own peers do), so the
# expiry must outlast 300 s with room to spare: 3 x 120 s = 360 s. shoal's peers follow the
# 120 s interval and so miss two announces before they are forgotten, and a restarted tracker
# knows its swarms again within 120 s.
DEFAULT_INTERVAL = 120
EXPIRY_INTERVALS = 3


class SwarmFull(Exception):
    """An announce would grow the tracker beyond its limits; the client is told to go away."""


@dataclass(slots=True)
class PeerEntry:
    """What the tracker remembers about one peer."""

    peer_id: bytes
    left: int  # bytes still missing; 0 = a seed
    last_seen: float  # time of its last announce


@dataclass(slots=True)
class Swarm:
    peers: dict[Addr, PeerEntry] = field(default_factory=dict)
    completed: int = 0  # "completed" announces seen (BEP 48 ``downloaded``)


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    """BEP 48 figures of one swarm: live seeds, live leechers, completions seen."""

    complete: int
    incomplete: int
    downloaded: int


class Swarms:
    """Pure swarm state: info_hash → :class:`Swarm`. No clock reads, no IO.

    A peer is forgotten ``ttl`` seconds after its last announce (crashed hosts don't announce
    ``stopped``), and at once when it announces ``stopped``.

    Handout policy (:meth:`announce`): the requester never gets itself. A *seed* (``left == 0``)
    gets only peers that still need pieces, because two seeds have nothing to trade (libtorrent
    drops seed-to-seed connections anyway). A *leecher* gets a mix: up to ``seed_share`` of its
    ``numwant`` are seeds (at least one when any exists, so it can always finish) and the rest
    are other leechers, so that leechers trade pieces among themselves and the central seeder
    uploads each piece about once instead of once per host. If one kind runs short the other
    fills the gap. Within each kind the choice is random, to spread load over all seeds and to
    give every host a different neighbourhood; pass a seeded ``rng`` for reproducible tests.

    *Origins* are the seeder's own full seeds (``origins``, fixed addresses). They are listed and
    counted like any seed, but handed out only to requesters the caller allows
    (``origin_ok``): a rollout's hosts must get the seeder from their rollout, which decides the
    slice each may fetch from it, never from the tracker. An origin itself gets no peers: it
    never dials out, so it uploads only to whoever was sent to it.
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_INTERVAL * EXPIRY_INTERVALS,
        seed_share: float = 0.5,
        max_swarms: int = 10_000,
        max_peers_per_swarm: int = 10_000,
        origins: Collection[Addr] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.ttl = ttl
        self.seed_share = seed_share
        self.max_swarms = max_swarms
        self.max_peers_per_swarm = max_peers_per_swarm
        self.origins = frozenset(origins)
        self._rng = rng or random.Random()
        self._swarms: dict[bytes, Swarm] = {}
        self._last_sweep: float | None = None

    def announce(
        self,
        info_hash: bytes,
        ip: str,
        port: int,
        event: str,
        left: int,
        numwant: int,
        now: float,
        *,
        peer_id: bytes = b"",
        origin_ok: bool = True,
    ) -> list[Addr]:
        """Record one announce and return up to ``numwant`` other peers (see the class policy).

        Raises :class:`SwarmFull` when a new swarm or a new peer would exceed the limits.
        """
        self._maybe_sweep(now)
        me = (ip, port)
        swarm = self._live(info_hash, now)
        if event == "stopped":
            swarm.peers.pop(me, None)
            self._drop_if_empty(info_hash)
            return []
        if me not in swarm.peers:
            if info_hash not in self._swarms and len(self._swarms) >= self.max_swarms:
                raise SwarmFull("too many swarms")
            if len(swarm.peers) >= self.max_peers_per_swarm:
                raise SwarmFull("swarm is full")
        if event == "completed":
            swarm.completed += 1
        swarm.peers[me] = PeerEntry(peer_id=peer_id, left=left, last_seen=now)
        self._swarms[info_hash] = swarm
        if me in self.origins:
            return []
        return self._select(swarm.peers, me, left, numwant, origin_ok)

    def __len__(self) -> int:
        """Number of swarms currently tracked (expired ones may linger until the next sweep)."""
        return len(self._swarms)

    def peers(self, info_hash: bytes, now: float) -> list[Addr]:
        """Every live peer of one swarm, sorted (diagnostics and tests)."""
        return sorted(self._live(info_hash, now).peers)

    def peer_id(self, info_hash: bytes, addr: Addr) -> bytes:
        """The peer id a listed peer announced with (b"" if unknown)."""
        entry = self._swarms.get(info_hash, Swarm()).peers.get(addr)
        return entry.peer_id if entry is not None else b""

    def counts(self, info_hash: bytes, now: float) -> tuple[int, int]:
        """(complete, incomplete): live seeds (origins included) and live leechers."""
        stats = self._stats(self._live(info_hash, now))
        return stats.complete, stats.incomplete

    def scrape(self, info_hashes: Iterable[bytes], now: float) -> dict[bytes, ScrapeStats]:
        """BEP 48 figures of the swarms asked for (all if none are), known ones only."""
        wanted = list(info_hashes) or list(self._swarms)
        return {
            ih: self._stats(swarm)
            for ih in dict.fromkeys(wanted)
            if (swarm := self._live(ih, now)).peers
        }

    def expire(self, now: float) -> None:
        """Forget every peer older than ``ttl`` and every swarm left empty."""
        for info_hash in list(self._swarms):
            self._live(info_hash, now)
            self._drop_if_empty(info_hash)
        self._last_sweep = now

    @staticmethod
    def _stats(swarm: Swarm) -> ScrapeStats:
        seeds = sum(1 for entry in swarm.peers.values() if entry.left == 0)
        return ScrapeStats(seeds, len(swarm.peers) - seeds, swarm.completed)

    def _maybe_sweep(self, now: float) -> None:
        # Swarms nobody announces to any more are only dropped by a full sweep; doing one at
        # most once per ttl keeps the cost amortised without a timer task.
        if self._last_sweep is None:
            self._last_sweep = now
        elif now - self._last_sweep >= self.ttl:
            self.expire(now)

    def _live(self, info_hash: bytes, now: float) -> Swarm:
        """The swarm with expired peers removed (an empty, unregistered one if unknown)."""
        swarm = self._swarms.get(info_hash) or Swarm()
        for addr in [a for a, e in swarm.peers.items() if now - e.last_seen > self.ttl]:
            del swarm.peers[addr]
        return swarm

    def _drop_if_empty(self, info_hash: bytes) -> None:
        if info_hash in self._swarms and not self._swarms[info_hash].peers:
            del self._swarms[info_hash]

    def _select(
        self, peers: dict[Addr, PeerEntry], me: Addr, left: int, numwant: int, origin_ok: bool
    ) -> list[Addr]:
        if numwant <= 0:
            return []
        others = [(a, e) for a, e in peers.items() if a != me]
        seeds = [a for a, e in others if e.left == 0 and (origin_ok or a not in self.origins)]
        leechers = [a for a, e in others if e.left != 0]
        if left == 0:
            return self._sample(leechers, numwant)
        seed_quota = min(len(seeds), max(1, int(numwant * self.seed_share)))
        chosen_leechers = self._sample(leechers, numwant - seed_quota)
        chosen_seeds = self._sample(seeds, numwant - len(chosen_leechers))
        return chosen_seeds + chosen_leechers

    def _sample(self, pool: list[Addr], k: int) -> list[Addr]:
        return self._rng.sample(pool, min(k, len(pool))) if k > 0 else []
