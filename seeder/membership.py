"""Who may trade a rollout's release over BitTorrent: its enrolled targets and the seeder.

Each live rollout's swarm is the BitTorrent addresses of its target hosts (as their Hellos gave
them) plus the seeder's own. A peer is told its rollout's list (:class:`~common.messages.
SwarmMembers`) before the Stage, again whenever it reconnects and whenever the list changes (a
target came back from another address, a host was forgotten or revoked), and admits only those
addresses (libtorrent's IP filter). The seeder's own sessions admit the union over live rollouts
(:mod:`seeder.swarm_access`). A list holds one address per target: about 28 KB for 2,000 hosts.
"""

from __future__ import annotations

from collections.abc import Iterable

from common import messages as m
from seeder.model import RolloutModel
from seeder.store import HostRecord


class Membership:
    """Per-rollout member addresses, derived from the targets and the hosts' addresses (kept
    up to date by :meth:`host_seen`/:meth:`forget`) and cached until either changes."""

    def __init__(self, hosts: Iterable[HostRecord], seeder_ips: Iterable[str]) -> None:
        self._address: dict[str, str] = {h.name: h.address for h in hosts}
        self._seeder = sorted(set(seeder_ips))
        self._cache: dict[str, list[str]] = {}

    def host_seen(self, name: str, address: str) -> bool:
        """A host (re)registered from ``address``; True if that changed any swarm's members."""
        if self._address.get(name) == address:
            return False
        self._address[name] = address
        self._cache.clear()
        return True

    def forget(self, name: str) -> bool:
        """A host is no longer enrolled (revoked): it leaves every swarm. True if it was in."""
        if self._address.pop(name, None) is None:
            return False
        self._cache.clear()
        return True

    def addresses(self, r: RolloutModel) -> list[str]:
        found = self._cache.get(r.rollout_id)
        if found is None:
            ips = {self._address[h] for h in r.targets if h in self._address}
            found = sorted(ips | set(self._seeder))
            self._cache[r.rollout_id] = found
        return found

    def message(self, r: RolloutModel) -> m.SwarmMembers:
        return m.SwarmMembers(rollout_id=r.rollout_id, addresses=self.addresses(r), token=r.token)

    def union(self, rollouts: Iterable[RolloutModel]) -> set[str]:
        """Every address in any of ``rollouts``' swarms (the seeder's own sessions admit these)."""
        out: set[str] = set()
        for r in rollouts:
            out.update(self.addresses(r))
        return out
