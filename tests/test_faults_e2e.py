"""Faults a peer daemon must survive, with real processes, sockets and libtorrent: SIGKILL
mid-download, a full disk (a real tmpfs), and releases pruned from disk and from the swarm."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from common.torrent import TorrentSession, torrent_infohash
from common.torrent.metainfo import load
from seeder.localfleet import Daemon, LocalFleet
from seeder.samplerepo import commit_all
from tests.conftest import make_app_repo, shoal

pytestmark = pytest.mark.integration

HOST_IP = "127.0.93.2"  # an address of its own: other suites use 127.0.0.x at the same time
ANY_PORT = ("--torrent-port", "0")
RATE = 500_000  # bytes/s each of the seeder's sessions sends at, so that the peer dies half-way
RESUME_INTERVAL = 1.0  # common.torrent.session.RESUME_INTERVAL


def build(fleet: LocalFleet, repo: Path) -> str:
    return fleet.build_release(repo)


def add_file(repo: Path, name: str, data: bytes, message: str) -> None:
    (repo / name).write_bytes(data)
    commit_all(repo, message)


def cli_json(fleet: LocalFleet, *args: str) -> Any:
    out = shoal(fleet.control, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def rollout(fleet: LocalFleet, rollout_id: str = "") -> dict[str, Any]:
    return cli_json(fleet, "rollout", "status", *([rollout_id] if rollout_id else []))  # type: ignore[no-any-return]


def steps(status: dict[str, Any], host: str) -> dict[str, dict[str, Any]]:
    target = next(t for t in status["targets"] if t["host"] == host)
    return {s["step"]: s for s in target["steps"]}


async def finished(fleet: LocalFleet, rollout_id: str) -> dict[str, Any]:
    while (status := await trio.to_thread.run_sync(rollout, fleet, rollout_id))["state"] not in (
        "succeeded",
        "failed",
    ):
        await trio.sleep(0.3)
    return status


async def start_rollout(fleet: LocalFleet, rid: str) -> str:
    out = await trio.to_thread.run_sync(lambda: shoal(fleet.control, "rollout", "start", rid))
    assert out.returncode == 0, out.stderr
    return str((await trio.to_thread.run_sync(rollout, fleet))["rollout_id"])


async def uploaded(fleet: LocalFleet) -> int:
    return int((await trio.to_thread.run_sync(cli_json, fleet, "seeder", "stats"))["uploaded"])


async def settled_upload(fleet: LocalFleet) -> int:
    """The seeder's upload counter once it stops moving (libtorrent adds on its ~1 s tick)."""
    last = -1
    while (now := await uploaded(fleet)) != last:
        last = now
        await trio.sleep(1.5)
    return now


def piece_size(fleet: LocalFleet, rid: str) -> int:
    info = load((fleet.root / "seeder" / "releases" / rid / "release.torrent").read_bytes()).ti
    assert info is not None
    return int(info.piece_length())


# --- 1. SIGKILL mid-download -----------------------------------------------------------------


@pytest.mark.slow
async def test_a_peer_killed_mid_download_fetches_again_at_most_what_it_had_not_written(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    add_file(repo, "blob.bin", os.urandom(8_000_000), "a release worth interrupting")
    # The seeder sends slowly (not the peer reading slowly: the seeder's counter would then
    # include what waits in the socket buffers, megabytes on loopback).
    with trio.fail_after(180):
        await fleet.start_seeder(extra=("--torrent-setting", f"upload_rate_limit={RATE}"))
        peer = await fleet.start_peer("web-1", HOST_IP, extra=ANY_PORT)
        async with fleet.client() as client:
            await fleet.wait_connected(client, ["web-1"])
        rid = await trio.to_thread.run_sync(build, fleet, repo)
        size = int(
            next(r for r in cli_json(fleet, "release", "list") if r["release_id"] == rid)["size"]
        )
        rollout_id = await start_rollout(fleet, rid)
        # Watched on one open connection, not a CLI process per look: on a loaded machine a
        # CLI start can take longer than the whole download.
        async with fleet.client() as client:
            while int((await client.call("seeder.stats"))["uploaded"]) < size // 2:
                await trio.sleep(0.1)
        await fleet.stop(peer, signal.SIGKILL)  # no shutdown: only what was saved survives
        at_kill = await settled_upload(fleet)  # every byte the killed peer received
        assert at_kill < size * 0.9, "the download was not interrupted"

        await fleet.start_peer("web-1", HOST_IP, extra=ANY_PORT)
        status = await finished(fleet, rollout_id)
        assert status["state"] == "succeeded", status
        total = await settled_upload(fleet)

    # The bound: one piece per connection (the seeder's slice seed and its full seed) plus
    # what was received but not yet written: one flush interval at the rate of both
    # connections (RATE each), plus half an interval of slack for the flush itself.
    connections = 2
    bound = connections * piece_size(fleet, rid) + 1.5 * RESUME_INTERVAL * connections * RATE
    assert at_kill > 2 * bound, "the kill came too early to tell kept bytes from lost ones"
    again = total - size
    print(f"FIGURES size={size} at_kill={at_kill} total={total} again={again} bound={bound}")
    assert again <= bound, f"sent {again} bytes twice (bound {bound}); at kill {at_kill}"
    # The peer's own counter says the same: after the restart it fetched only what it lacked.
    detail = steps(status, "web-1")["download"]["detail"]
    fetched = int(detail.split(" bytes fetched now")[0].rsplit(" ", 1)[-1])
    assert fetched <= size - at_kill + bound, detail
    assert fetched < size - size // 3, detail  # far from the whole release again


SWARM_MEMBER_IP = "127.0.0.1"  # the seeder's: in every rollout's swarm (see README, closed swarm)

# --- 5. pruned releases are not seeded -------------------------------------------------------


async def _serves(ip: str, port: int, torrent: bytes, dest: Path, wait: float) -> int:
    """Bytes a fresh session gets from one peer only, within `wait` seconds. It dials from the
    seeder's address: a peer admits only its rollout's swarm (the hosts and the seeder)."""
    async with trio.open_nursery() as nursery:
        session = TorrentSession(SWARM_MEMBER_IP)
        await nursery.start(session.run)
        with trio.move_on_after(wait):
            await session.download(torrent, dest, peers=[(ip, port)])
        got = session.stats().downloaded
        nursery.cancel_scope.cancel()
    return got


@pytest.mark.slow
async def test_pruned_releases_are_no_longer_seeded(fleet: LocalFleet, tmp_path: Path) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    with trio.fail_after(240):
        await fleet.start_seeder(extra=("--keep-releases", "1"))
        await fleet.start_peer("web-1", HOST_IP, extra=(*ANY_PORT, "--keep", "1"))
        async with fleet.client() as client:
            await fleet.wait_connected(client, ["web-1"])
        rids = []
        for n in range(3):
            add_file(repo, "payload.bin", os.urandom(300_000), f"release {n}")
            rid = await trio.to_thread.run_sync(build, fleet, repo)
            out = await trio.to_thread.run_sync(
                lambda rid=rid: shoal(fleet.control, "rollout", "start", rid, "--wait")
            )
            assert out.returncode == 0, out.stdout + out.stderr
            rids.append(rid)
        old, previous, current = rids
        home = fleet.peer_dir("web-1")
        assert not (home / "releases" / old).exists()
        assert (home / "releases" / previous).is_dir()  # the rollback target is kept

        # The seeder keeps 1 (the newest) plus the host's current and previous; it stops the rest
        # (its reconcile runs on every build and rollout start, and every 5 s: wait for one).
        await trio.sleep(6)
        stats = await trio.to_thread.run_sync(cli_json, fleet, "seeder", "stats")
        assert stats["seeding"] == sorted([previous, current])

        # The peer no longer offers the pruned release to the swarm, and still offers the others.
        hosts = await trio.to_thread.run_sync(cli_json, fleet, "hosts")
        port = int(hosts[0]["bt_port"])
        torrents = {
            r: (fleet.root / "seeder" / "releases" / r / "release.torrent").read_bytes()
            for r in rids
        }
        assert await _serves(HOST_IP, port, torrents[previous], tmp_path / "p", 20) > 0
        assert await _serves(HOST_IP, port, torrents[old], tmp_path / "o", 4) == 0


# --- 2. a full disk --------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` at `path` (root only); unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def free(path: Path) -> int:
    return shutil.disk_usage(path).free


def fill(path: Path) -> Path:
    """Write a file until the disk is full; it stays until the caller removes it."""
    filler = path / "filler"
    # unbuffered: nothing is left to flush (and fail) when the file closes on a full disk
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\xff" * (1 << 20))
    return filler


async def alive_after(daemon: Daemon, seconds: float) -> bool:
    await trio.sleep(seconds)
    return daemon.process.returncode is None


@pytest.mark.slow
async def test_a_full_disk_fails_the_stage_cleanly_and_the_daemon_stays_up(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", 48) as disk:
        repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
        home = disk / "web-1"
        # LocalFleet puts a peer's data under root/hosts/<name>: make that the tmpfs.
        fleet.peer_dir("web-1").parent.mkdir(parents=True)
        fleet.peer_dir("web-1").symlink_to(home)
        flags = (*ANY_PORT, "--min-free", "4M")
        with trio.fail_after(300):
            await fleet.start_seeder()
            peer = await fleet.start_peer("web-1", HOST_IP, extra=flags)
            async with fleet.client() as client:
                await fleet.wait_connected(client, ["web-1"])
            good = await trio.to_thread.run_sync(build, fleet, repo)
            out = await trio.to_thread.run_sync(
                lambda: shoal(fleet.control, "rollout", "start", good, "--wait")
            )
            assert out.returncode == 0, out.stdout + out.stderr
            assert os.readlink(home / "current").endswith(good)
            free_before = free(disk)

            # a. Too big to fit: refused before a byte is downloaded, with the numbers.
            add_file(repo, "big.bin", os.urandom(14_000_000), "too big for this disk")
            big = await trio.to_thread.run_sync(build, fleet, repo)
            status = await finished(fleet, await start_rollout(fleet, big))
            assert status["state"] == "failed"
            download = steps(status, "web-1")["download"]
            assert download["state"] == "failed"
            assert "not enough disk space" in download["detail"], download
            assert not (home / "downloads" / big).exists()
            assert await alive_after(peer, 1.0)

            # A restarted peer that gets the same stage command again refuses again: no crash loop.
            await fleet.stop(peer)
            peer = await fleet.start_peer("web-1", HOST_IP, extra=flags)
            async with fleet.client() as client:
                await fleet.wait_connected(client, ["web-1"])
            status = await finished(fleet, await start_rollout(fleet, big))
            assert "not enough disk space" in steps(status, "web-1")["download"]["detail"]
            assert await alive_after(peer, 1.0)

            # b. Fits as an archive, not unpacked (zeros compress ~1000x): ENOSPC at unpack.
            (repo / "big.bin").unlink()
            add_file(repo, "zeros.bin", bytes(80_000_000), "unpacks to more than the disk")
            bomb = await trio.to_thread.run_sync(build, fleet, repo)
            status = await finished(fleet, await start_rollout(fleet, bomb))
            unpack = steps(status, "web-1")["unpack"]
            assert unpack["state"] == "failed" and "disk is full" in unpack["detail"], unpack
            assert not (home / "releases" / bomb).exists()
            assert not (home / "downloads" / bomb).exists()
            assert [p.name for p in (home / "releases").iterdir()] == [good]  # no leftovers
            assert free(disk) >= free_before - 1_000_000  # the space came back
            assert await alive_after(peer, 1.0)

            # c. The disk fills while downloading (something else wrote to it): libtorrent's
            #    ENOSPC fails the step, the journal cannot write either (same disk) but the
            #    report reaches the seeder from memory, and the partial download is removed.
            await fleet.stop(peer)
            slow = (*flags, "--torrent-setting", f"download_rate_limit={RATE}")
            peer = await fleet.start_peer("web-1", HOST_IP, extra=slow)
            async with fleet.client() as client:
                await fleet.wait_connected(client, ["web-1"])
            (repo / "zeros.bin").unlink()
            add_file(repo, "mid.bin", os.urandom(6_000_000), "fits, until the disk fills")
            mid = await trio.to_thread.run_sync(build, fleet, repo)
            rollout_id = await start_rollout(fleet, mid)
            partial = home / "downloads" / mid
            while not partial.is_dir() or not any(partial.iterdir()):
                await trio.sleep(0.1)
            filler = await trio.to_thread.run_sync(fill, disk)
            try:
                status = await finished(fleet, rollout_id)
                assert status["state"] == "failed"
                download = steps(status, "web-1")["download"]
                assert download["state"] == "failed", download
                assert "No space left" in download["detail"], download
                assert not partial.exists()
                assert await alive_after(peer, 1.0)
            finally:
                filler.unlink()
            assert os.readlink(home / "current").endswith(good)

            # After all that, the same daemon still deploys what fits.
            (repo / "mid.bin").unlink()
            add_file(repo, "small.bin", b"small", "small again")
            small = await trio.to_thread.run_sync(build, fleet, repo)
            out = await trio.to_thread.run_sync(
                lambda: shoal(fleet.control, "rollout", "start", small, "--wait")
            )
            assert out.returncode == 0, out.stdout + out.stderr
            assert os.readlink(home / "current").endswith(small)
            await fleet.stop_all()


# --- 4. a corrupted seeding peer -------------------------------------------------------------


async def _leech(ip: str, port: int, torrent: bytes, dest: Path, wait: float) -> tuple[int, int]:
    """(failed, verified) bytes of a fresh session that fetches from one peer for `wait` s
    (from the seeder's address, like _serves)."""
    async with trio.open_nursery() as nursery:
        session = TorrentSession(SWARM_MEMBER_IP)
        await nursery.start(session.run)
        with trio.move_on_after(wait):
            await session.download(torrent, dest, peers=[(ip, port)])
        got = session.transfer(torrent_infohash(torrent))
        nursery.cancel_scope.cancel()
    return got.failed, got.verified


@pytest.mark.slow
async def test_a_peer_whose_staged_file_changed_stops_serving_bad_pieces(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    add_file(repo, "blob.bin", os.urandom(3_000_000), "several pieces")
    with trio.fail_after(180):
        await fleet.start_seeder()
        await fleet.start_peer("web-1", HOST_IP, extra=ANY_PORT)
        async with fleet.client() as client:
            await fleet.wait_connected(client, ["web-1"])
        rid = await trio.to_thread.run_sync(build, fleet, repo)
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "start", rid, "--wait")
        )
        assert out.returncode == 0, out.stdout + out.stderr
        torrent = (fleet.root / "seeder" / "releases" / rid / "release.torrent").read_bytes()
        size = int(load(torrent).ti.total_size())  # type: ignore[union-attr]
        archive = next(
            p
            for p in (fleet.peer_dir("web-1") / "downloads" / rid).iterdir()
            if not p.name.startswith(".")
        )
        await trio.sleep(11)  # one look at the good file (every 10 s)
        with archive.open("r+b") as f:  # a bad disk, or an operator's mistake
            f.seek(size // 2)
            f.write(os.urandom(200_000))
        log = fleet.root / "logs" / "web-1.log"
        while "re-checking torrent" not in log.read_text():
            await trio.sleep(0.5)
        await trio.sleep(2)  # the re-check of a 3 MB file
        port = int((await trio.to_thread.run_sync(cli_json, fleet, "hosts"))[0]["bt_port"])
        # The seeder's full seed is on the tracker too: stop it, so web-1 is the only source.
        assert fleet.seeder is not None
        await fleet.stop(fleet.seeder)
        failed, verified = await _leech(HOST_IP, port, torrent, tmp_path / "leech", 6)
    assert failed == 0, "the peer served a piece it should have known was bad"
    assert 0 < verified < size  # the good pieces are still offered, the changed ones are not
