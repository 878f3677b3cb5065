"""Fencing and abort on a real peer process, over a real socket, with real libtorrent.

The test plays the seeder's control side itself (the real protocol, over mutual TLS with the real
seeder's certificate, on a real TCP listener), so it can send exactly the commands a fencing or
aborting seeder sends; a real seeder process builds the releases, enrolls the peer and seeds the
releases over BitTorrent.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from common import messages as m
from common.addr import Address
from common.channel import Channel
from common.crypto.signing import PRIVATE_KEY_FILE, load_signer
from common.errors import ConnectionClosed
from common.protocol import Role
from common.tls import ServerTLS
from seeder.authority import SeederCA, identity_dir
from seeder.localfleet import LocalFleet, free_port
from tests.conftest import commit_version, make_app_repo, shoal

pytestmark = pytest.mark.integration

PEER_IP = "127.0.78.2"


class FakeControl:
    """One peer's control connection, seen from the seeder's side: what it sent, what to send."""

    def __init__(self, tls: ServerTLS) -> None:
        self.tls = tls
        self.channel: Channel | None = None
        self.connected = trio.Event()
        self.hellos = 0
        self.inbox_send, self.inbox = trio.open_memory_channel[m.Message](1000)

    async def serve(self, port: int, *, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        task_status.started()
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, transport: trio.SocketStream) -> None:
        try:
            stream, _ = await self.tls.accept(transport)
        except ConnectionClosed:
            return
        channel = Channel(stream, Role.SERVER)
        try:
            hello = await channel.receive()
            assert isinstance(hello, m.Hello)
            await channel.send(m.Welcome(heartbeat_interval=5.0))
            self.channel = channel
            self.hellos += 1
            self.connected.set()
            while True:
                msg = await channel.receive()
                if isinstance(msg, m.StepReport):
                    await channel.send(m.Ack(seq=msg.seq))
                if not isinstance(msg, m.Heartbeat | m.OutputLine):
                    await self.inbox_send.send(msg)
        except ConnectionClosed:
            pass
        finally:
            self.connected = trio.Event()
            await channel.aclose()

    async def send(self, msg: m.Message) -> None:
        await self.connected.wait()
        assert self.channel is not None
        await self.channel.send(msg)

    async def wait_hellos(self, count: int) -> None:
        while self.hellos < count:
            await trio.sleep(0.05)

    async def expect(self, match: Any) -> m.Message:
        """The next message for which ``match`` is true (others are skipped)."""
        async for msg in self.inbox:
            if match(msg):
                return msg
        raise AssertionError("the peer went away")


def report(rollout: str, step: str, *states: str) -> Any:
    return lambda msg: (
        isinstance(msg, m.StepReport)
        and (msg.rollout_id, msg.step) == (rollout, step)
        and msg.state in states
    )


async def staged(control: FakeControl, rollout: str) -> None:
    done = await control.expect(report(rollout, "stage", "succeeded", "failed"))
    assert isinstance(done, m.StepReport) and done.state == "succeeded", done


def release(fleet: LocalFleet, repo: Path) -> tuple[dict[str, Any], bytes]:
    """A release built by the real seeder, whose full seed admits the peer (a grant: the swarm
    is closed and the peer is in none of the real seeder's rollouts)."""
    rid = fleet.build_release(repo)
    shown = json.loads(shoal(fleet.control, "release", "show", rid, "--json").stdout)
    manifest = dict(shown["manifest"])
    torrent = (fleet.root / "seeder" / "releases" / rid / "release.torrent").read_bytes()
    grant = shoal(fleet.control, "release", "torrent", rid, "--allow", PEER_IP, "--json")
    assert grant.returncode == 0, grant.stderr
    return manifest, torrent


def stage(
    fleet: LocalFleet, rollout: str, release: tuple[dict[str, Any], bytes], token: int, bt: int
) -> list[m.Message]:
    """What the seeder sends for a stage: the swarm's members, then the Stage, signed with the
    fleet's release key (the stand-in seeder signs as the real one would)."""
    signer = load_signer(identity_dir(fleet.seeder_dir) / PRIVATE_KEY_FILE)
    manifest, torrent = release
    return [
        m.SwarmMembers(rollout, ["127.0.0.1", PEER_IP], token),
        m.Stage(
            rollout,
            manifest,
            torrent,
            peers=[["127.0.0.1", bt]],
            token=token,
            signature=signer.sign(manifest),
        ),
    ]


@asynccontextmanager
async def peer_process(root: Path, control: Address, bundle: Path) -> AsyncIterator[LocalFleet]:
    peers = LocalFleet(root, control=control, bundles={"fx-1": bundle})
    try:
        await peers.start_peer("fx-1", PEER_IP)
        yield peers
    finally:
        await peers.stop_all()


async def test_older_tokens_are_refused_and_abort_kills_the_running_hook(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    bt_port = free_port("127.0.0.1")
    fleet.init_identity()
    control = FakeControl(SeederCA(fleet.seeder_dir).open_server_tls(dt.datetime.now(dt.UTC)))
    control_port = free_port("127.0.0.1")
    with trio.fail_after(180):
        await fleet.start_seeder(extra=("--no-slices", "--torrent-listen", f"127.0.0.1:{bt_port}"))
        mf1, t1 = await trio.to_thread.run_sync(release, fleet, repo)
        # r2's ApplicationStart runs far longer than the test waits: only a kill ends it early.
        start_hook = repo / "hooks" / "ApplicationStart.sh"
        start_hook.write_text(start_hook.read_text() + "sleep 25\n")
        await trio.to_thread.run_sync(commit_version, repo, "2")
        mf2, t2 = await trio.to_thread.run_sync(release, fleet, repo)
        home = tmp_path / "peers" / "hosts" / "fx-1"

        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve, control_port)
            address = Address("127.0.0.1", control_port)
            bundle = await fleet.enroll("fx-1")
            async with peer_process(tmp_path / "peers", address, bundle) as peers:
                # Rollout ro-1 (token 5) activates r1 fully.
                for msg in stage(fleet, "ro-1", (mf1, t1), 5, bt_port):
                    await control.send(msg)
                await staged(control, "ro-1")
                await control.send(m.Activate("ro-1", mf1["release_id"], token=5))
                done = await control.expect(report("ro-1", "activate", "succeeded", "failed"))
                assert isinstance(done, m.StepReport) and done.state == "succeeded", done

                # Rollout ro-2 (token 6): abort with kill while ApplicationStart runs.
                for msg in stage(fleet, "ro-2", (mf2, t2), 6, bt_port):
                    await control.send(msg)
                await staged(control, "ro-2")
                await control.send(m.Activate("ro-2", mf2["release_id"], token=6))
                await control.expect(report("ro-2", "ApplicationStart", "running"))
                await control.send(m.Abort("ro-2", token=6, kill=True))
                with trio.fail_after(20):  # well before the hook would end on its own
                    hook = await control.expect(
                        report("ro-2", "ApplicationStart", "failed", "succeeded")
                    )
                assert isinstance(hook, m.StepReport) and hook.result == "killed", hook
                assert "the rollout was aborted" in hook.detail
                failed = await control.expect(report("ro-2", "activate", "failed"))
                assert isinstance(failed, m.StepReport) and failed.result == "killed"
                assert os.readlink(home / "current").endswith(mf1["release_id"])
                ran = (home / "events.log").read_text().split()
                assert "ValidateService" not in ran[ran.index(mf2["release_id"]) :]

                # A new activation of the aborted rollout starts nothing.
                await control.send(m.Activate("ro-2", mf2["release_id"], attempt=2, token=6))
                again = await control.expect(report("ro-2", "activate", "failed"))
                assert isinstance(again, m.StepReport) and again.result == "aborted"

                # An older rollout's commands are refused and do nothing.
                for msg in stage(fleet, "ro-old", (mf2, t2), 4, bt_port):
                    await control.send(msg)
                refused = await control.expect(lambda msg: isinstance(msg, m.Refused))
                assert isinstance(refused, m.Refused)
                assert (refused.rollout_id, refused.token) == ("ro-old", 4)
                assert "older than 6" in refused.reason
                await control.send(m.Activate("ro-1", mf1["release_id"], attempt=2, token=5))
                refused = await control.expect(lambda msg: isinstance(msg, m.Refused))
                assert isinstance(refused, m.Refused) and refused.rollout_id == "ro-1"

                # The newest token survives a restart of the peer.
                await peers.stop(peers.daemons[0])
                await peers.start_peer("fx-1", PEER_IP)
                await control.wait_hellos(2)
                for msg in stage(fleet, "ro-1", (mf1, t1), 5, bt_port):
                    await control.send(msg)
                refused = await control.expect(lambda msg: isinstance(msg, m.Refused))
                assert isinstance(refused, m.Refused) and refused.token == 5
            nursery.cancel_scope.cancel()

        with sqlite3.connect(home / "state.db") as db:
            steps = db.execute(
                "SELECT rollout_id, step, attempt FROM steps WHERE rollout_id != 'ro-2'"
                " AND NOT (rollout_id = 'ro-1' AND attempt = 1)"
            ).fetchall()
        assert steps == [], "a refused command did something"
        assert os.readlink(home / "current").endswith(mf1["release_id"])
