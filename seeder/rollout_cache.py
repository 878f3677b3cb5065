"""Which rollouts the engine holds in memory, and where each host's newest rollout is.

Split out of :mod:`seeder.engine` (one concept per file). Every live rollout stays in memory (so
an event costs O(1) in the number of targets), and so do the last :data:`CACHE` finished ones
(for status and show); an older one is loaded from the store when asked for. A rollout is live
while it is not finished or while some of its hosts are still at work. Also here: each host's
newest rollout and each rollout's last timeline number. The engine is the one caller; it writes
the models, this module only decides which of them are kept.
"""

from __future__ import annotations

from collections import OrderedDict

from common.errors import ShoalError
from seeder.model import RolloutModel, TargetModel
from seeder.states import TERMINAL, TargetState
from seeder.store import Store

CACHE = 8  # finished rollouts kept in memory for status and show
ADOPT = 1000  # at most this many live rollouts are reloaded after a restart


class UnknownRollout(ShoalError):
    pass


class RolloutCache:
    """The live rollouts (:attr:`live`), the recently finished ones, host -> newest rollout."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.live: dict[str, RolloutModel] = {}
        self._finished: OrderedDict[str, RolloutModel] = OrderedDict()
        self._by_host: dict[str, str] = {}  # host -> id of the newest rollout it is in
        self._seq: dict[str, int] = {}
        for rollout_id in reversed(store.rollout_ids(live_only=True, limit=ADOPT)):
            self._adopt(rollout_id)

    def _adopt(self, rollout_id: str) -> RolloutModel | None:
        model = self.store.load_rollout(rollout_id)
        if model is None:
            return None
        self._seq[rollout_id] = self.store.max_seq(rollout_id)
        self.keep(model)
        for host in model.targets:
            self._by_host[host] = rollout_id
        return model

    def add(self, model: RolloutModel) -> None:
        """A new rollout: live, the newest of each of its targets."""
        self._seq[model.rollout_id] = 0
        self.live[model.rollout_id] = model
        for host in model.targets:
            self._by_host[host] = model.rollout_id

    def keep(self, model: RolloutModel) -> bool:
        """File a rollout whose state changed under live or finished; whether it just left the
        live set (its swarm closes)."""
        busy = model.counts[TargetState.PENDING] + model.counts[TargetState.STAGING]
        live = model.state not in TERMINAL or model.in_flight or busy
        if live:
            self.live[model.rollout_id] = model
            self._finished.pop(model.rollout_id, None)
            return False
        left = self.live.pop(model.rollout_id, None) is not None
        self._finished[model.rollout_id] = model
        self._finished.move_to_end(model.rollout_id)
        while len(self._finished) > CACHE:
            self._finished.popitem(last=False)
        return left

    def next_seq(self, rollout_id: str) -> int:
        """The number of the rollout's next timeline entry."""
        self._seq[rollout_id] += 1
        return self._seq[rollout_id]

    # --- lookups -------------------------------------------------------------------------------

    def cached(self, rollout_id: str) -> RolloutModel | None:
        """The rollout if it is in memory (live or recently finished)."""
        return self.live.get(rollout_id) or self._finished.get(rollout_id)

    def model(self, rollout_id: str) -> RolloutModel:
        found = self.cached(rollout_id)
        if found is None:
            found = self.store.load_rollout(rollout_id)
            if found is None:
                raise UnknownRollout(f"unknown rollout {rollout_id!r}")
            self._seq.setdefault(rollout_id, self.store.max_seq(rollout_id))
            self.keep(found)
        return found

    def latest(self) -> RolloutModel:
        ids = self.store.rollout_ids(limit=1)
        if not ids:
            raise UnknownRollout("no rollout has been started yet")
        return self.model(ids[0])

    def host_target(self, host: str) -> tuple[str, TargetModel] | None:
        rollout_id = self._by_host.get(host)
        if rollout_id is None:
            return None
        r = self.cached(rollout_id)
        return (rollout_id, r.targets[host]) if r is not None else None

    def live_of(self, host: str) -> RolloutModel | None:
        """The host's newest rollout, if it is live."""
        rollout_id = self._by_host.get(host)
        return self.live.get(rollout_id) if rollout_id is not None else None
