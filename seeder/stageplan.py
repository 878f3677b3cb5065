"""What a rollout's targets are told to stage: the Stage message of one release, per host.

Each host gets the release's manifest, its signature (see :mod:`seeder.signatures`) and torrent,
a random sample of the other targets as swarm
peers and, when the seeder splits its upload into slices (see :mod:`common.pieces`), its own
slice and the slice seeds' addresses. Built once per (rollout, release).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from common import messages as m
from common.errors import ShoalError
from common.pieces import slice_count
from seeder.model import RolloutModel
from seeder.store import Store

# (release id, slice count) -> the [ip, port] of each slice seed offering that release
SliceProvider = Callable[[str, int], Awaitable[list[tuple[str, int]]]]

SWARM_PEERS = 30


class UnknownRelease(ShoalError):
    pass


async def stage_message(
    store: Store,
    r: RolloutModel,
    release_id: str,
    *,
    seeder_bt: tuple[str, int],
    slice_seeds: SliceProvider | None,
) -> Callable[[str], m.Stage]:
    """What every target of a rollout is told to stage (computed once per release)."""
    found = store.release(release_id)
    if found is None:
        raise UnknownRelease(f"release {release_id} is gone")
    manifest, torrent = found
    records = {h.name: h for h in store.hosts()}
    names = sorted(h for h, t in r.targets.items() if t.release_id == release_id)
    index = {name: i for i, name in enumerate(names)}
    addresses = [[records[n].address, records[n].bt_port] for n in names if n in records]
    count = slice_count(len(names))
    seeds = await slice_seeds(release_id, count) if slice_seeds else []
    manifest_dict = manifest.to_dict()
    signature = store.signature(release_id) or b""  # none: the peer refuses, saying so

    def message(host: str) -> m.Stage:
        mine = records.get(host)
        own = [mine.address, mine.bt_port] if mine is not None else None
        sample = random.sample(addresses, min(len(addresses), SWARM_PEERS + 1))
        peers = [a for a in sample if a != own][:SWARM_PEERS]
        if slice_seeds is None:  # the seeder is one plain seed in the swarm
            peers.insert(0, [seeder_bt[0], seeder_bt[1]])
        i = index.get(host, count)
        return m.Stage(
            rollout_id=r.rollout_id,
            manifest=manifest_dict,
            torrent=torrent,
            peers=peers,
            slice=[i, count] if slice_seeds and i < count else [],
            slice_seeds=[[ip, port] for ip, port in seeds],
            token=r.token,
            signature=signature,
        )

    return message
