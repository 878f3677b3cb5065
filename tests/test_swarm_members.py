"""The engine tells each rollout's targets their swarm's members: before the Stage, on a
reconnect, and again (once per tick, however many changed) when a target's address changes or a
host is revoked. A real store and in-memory connections; trio's autojump clock runs the ticks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from common import messages as m
from seeder.engine import Engine
from seeder.store import HostRecord, Store
from tests.test_engine import HOSTS, RELEASE, SEEDER_BT, Peer


@pytest.fixture
async def engine(store: Store, autojump_clock: trio.testing.MockClock) -> AsyncIterator[Engine]:
    for name, (address, port) in HOSTS.items():
        store.upsert_host(HostRecord(name, address, port, {}, None, [], False, 1.0), 1.0)
    engine = Engine(store, seeder_bt=SEEDER_BT)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield engine
        nursery.cancel_scope.cancel()


def members(*ips: str) -> list[str]:
    return sorted({SEEDER_BT[0], *ips})


async def test_targets_learn_their_swarm_and_every_change_to_it(
    engine: Engine, nursery: trio.Nursery
) -> None:
    one, two = [await Peer(n).connect(engine, nursery) for n in ("web-1", "web-2")]
    r = engine.start_rollout(RELEASE, "web-1,web-2")
    first = members(HOSTS["web-1"][0], HOSTS["web-2"][0])
    for peer in (one, two):
        assert await peer.expect(m.SwarmMembers) == m.SwarmMembers(r.rollout_id, first, r.token)
        await peer.expect(m.Stage)
    assert engine.swarm_addresses() == set(first)  # what the seeder's own sessions admit

    # web-2 comes back from another address: web-1 hears of it at the next tick
    engine.host_record(m.Hello("web-2", "127.0.0.99", 6999))
    await trio.sleep(1)
    moved = members(HOSTS["web-1"][0], "127.0.0.99")
    assert await one.expect(m.SwarmMembers) == m.SwarmMembers(r.rollout_id, moved, r.token)

    # web-2 is revoked: it leaves the swarm, and the seeder's sessions stop admitting it
    engine.host_left("web-2")
    await trio.sleep(1)
    alone = members(HOSTS["web-1"][0])
    assert await one.expect(m.SwarmMembers) == m.SwarmMembers(r.rollout_id, alone, r.token)
    assert engine.swarm_addresses() == set(alone)

    # a host outside every live rollout changes nothing for anyone
    engine.host_record(m.Hello("web-3", "127.0.0.77", 6999))
    await trio.sleep(1)
    with trio.move_on_after(2):
        msg = await one.channel.receive()
        pytest.fail(f"web-1 was told {msg} although its swarm did not change")
