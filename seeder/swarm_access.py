"""Which machines the seeder's own BitTorrent sessions accept: a closed swarm.

The slice seeds admit the members of live rollouts only (:mod:`seeder.membership`); the full seed
admits those and the machines an operator granted access to for a while: ``shoal release fetch``
(its own address, for its ``--timeout``) and ``shoal release torrent --allow IP`` (for
``--allow-for`` seconds, so aria2c or ctorrent there can download). Everyone else, holding the
``.torrent`` or not, is refused by libtorrent's IP filter before a byte of the release leaves.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Final

import trio

from common.errors import ConfigError
from common.torrent import SliceSeeds, TorrentSession
from seeder.engine import Engine

log = logging.getLogger("shoal.seeder.swarm_access")

REFRESH: Final = 1.0  # seconds between re-derivations (rollouts end, grants expire)
MAX_GRANT: Final = 7 * 24 * 3600.0
MAX_GRANTS: Final = 1000


class Grants:
    """Time-limited admissions of single IPs to the full seed. Pure: ``now`` is passed in."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def grant(self, ip: str, seconds: float, now: float) -> float:
        """Admit ``ip`` until ``now + seconds`` (an earlier grant is extended, never cut)."""
        try:
            canonical = str(ipaddress.ip_address(ip))
        except ValueError:
            raise ConfigError(f"{ip!r} is not an IP address") from None
        if not 0 < seconds <= MAX_GRANT:  # NaN too
            raise ConfigError(f"a grant lasts between 0 and {MAX_GRANT:.0f} seconds, not {seconds}")
        self.expire(now)
        if canonical not in self._until and len(self._until) >= MAX_GRANTS:
            raise ConfigError(f"{MAX_GRANTS} addresses hold grants already; wait for some to end")
        until = max(self._until.get(canonical, 0.0), now + seconds)
        self._until[canonical] = until
        return until

    def expire(self, now: float) -> None:
        self._until = {ip: t for ip, t in self._until.items() if t > now}

    def active(self, now: float) -> set[str]:
        return {ip for ip, t in self._until.items() if t > now}


class SeederAdmission:
    """Keeps the full seed's and the slice seeds' IP filters equal to what is admitted now.
    ``members()`` is the union of the live rollouts' swarms.

    The engine calls :meth:`apply` the moment that union changes (``Engine.on_swarm``), before
    it tells any target to stage: a target's first connection to the seeder must be admitted,
    because libtorrent does not dial a peer that refused it again for ``min_reconnect_time``
    (60 s by default, 2 s in :mod:`common.torrent.settings`). :meth:`run` re-applies every
    REFRESH for what no event announces (grants expire)."""

    def __init__(
        self,
        full_seed: TorrentSession,
        slice_seeds: SliceSeeds,
        members: Callable[[], set[str]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.full_seed, self.slice_seeds, self.members = full_seed, slice_seeds, members
        self.grants = Grants()
        self.clock = clock
        self._applied: tuple[frozenset[str], frozenset[str]] | None = None

    def grant(self, ip: str, seconds: float) -> float:
        """Admit ``ip`` to the full seed for ``seconds``; the Unix time the grant ends."""
        until = self.grants.grant(ip, seconds, self.clock())
        self.apply()
        log.info("admitted %s to the full seed until %s", ip, time.ctime(until))
        return until

    def apply(self) -> None:
        now = self.clock()
        self.grants.expire(now)
        members = frozenset(self.members())
        full = members | self.grants.active(now)
        if self._applied == (full, members):
            return
        self.full_seed.set_allowed_peers(full)
        self.slice_seeds.set_allowed_peers(members)
        self._applied = (full, members)
        log.debug("full seed admits %d address(es), slice seeds %d", len(full), len(members))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.apply()
        task_status.started()
        while True:
            await trio.sleep(REFRESH)
            self.apply()


def admitting(
    engine: Engine, full_seed: TorrentSession, slice_seeds: SliceSeeds
) -> SeederAdmission:
    """The seeder's admission of ``engine``'s live swarms, applied by the engine itself each time
    they change, before it tells a target to stage (then :meth:`SeederAdmission.run` it)."""
    admitted = SeederAdmission(full_seed, slice_seeds, engine.swarm_addresses)
    engine.on_swarm = admitted.apply
    return admitted
