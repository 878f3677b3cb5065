"""The swarm as an operator and other BitTorrent software see it, with real processes: stable
tracker addresses across seeder restarts, peers and the seeder on the tracker, `shoal release
torrent` and `shoal release fetch`, and a non-libtorrent client (aria2) on a hybrid torrent.

The swarm is closed: the exports here are made with ``--allow IP`` for the machine that uses them
(loopback for the test's own scrapes), which puts a tracker key for IP into the announce URL and
admits IP to the seeder's full seed (tests/test_closed_swarm.py tries it without)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from common.torrent import bdecode, make_torrent, torrent_infohash, tracker_hashes
from seeder.fetch import FetchTimeout, fetch_release
from seeder.localfleet import LocalFleet, free_port
from tests.conftest import make_app_repo, shoal

pytestmark = pytest.mark.integration

# Loopback addresses of this run (other test runs on the machine may use 127.0.0.x at once):
# a peer, and a machine that is not an enrolled host (the tracker may hand it the seeder).
_NET = random.Random().randrange(64, 250)
PEER_IP, FETCH_IP = f"127.{_NET}.0.2", f"127.{_NET}.0.50"


def build(fleet: LocalFleet, repo: Path) -> str:
    return fleet.build_release(repo)


def export(fleet: LocalFleet, release_id: str, out: Path, *allow: str) -> bytes:
    """The release's .torrent, for this machine's loopback address and ``allow``."""
    grants = [arg for ip in ("127.0.0.1", *allow) for arg in ("--allow", ip)]
    done = shoal(
        fleet.control, "release", "torrent", release_id, "--out", str(out), "--json", *grants
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["release_id"] == release_id and info["file"] == str(out)
    return out.read_bytes()


def announce_url(torrent: bytes) -> str:
    return bytes(bdecode(torrent)[b"announce"]).decode()


def without_key(url: str) -> str:
    return urllib.parse.urlsplit(url)._replace(query="").geturl()


def scrape(url: str, info_hashes: list[bytes]) -> dict[bytes, dict[bytes, int]]:
    """BEP 48 scrape, URL derived from the announce URL the way clients derive it."""
    query = "&".join("info_hash=" + urllib.parse.quote_from_bytes(ih) for ih in info_hashes)
    target = url.replace("/announce", "/scrape") + ("&" if "?" in url else "?") + query
    with urllib.request.urlopen(target, timeout=5) as reply:
        files: dict[bytes, dict[bytes, int]] = bdecode(reply.read())[b"files"]
        return files


async def seeds_on_tracker(url: str, torrent: bytes) -> int:
    """Live seeds the tracker lists for the release (the fewest over its two swarms)."""
    hashes = tracker_hashes(torrent)
    files = await trio.to_thread.run_sync(scrape, url, hashes)
    return min(files.get(ih, {}).get(b"complete", 0) for ih in hashes)


async def until_seeds(url: str, torrent: bytes, count: int) -> None:
    while await seeds_on_tracker(url, torrent) != count:
        await trio.sleep(0.2)


@pytest.mark.slow
async def test_torrents_built_before_a_seeder_restart_still_work(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    """Build, restart the seeder, and a new peer stages the old release; the tracker URL in
    the old torrent is the restarted tracker's (the default port follows the control port),
    and the seeder and the peer are listed there, also after the peer restarts."""
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    with trio.fail_after(180):
        control = await fleet.start_seeder()
        release_id = await trio.to_thread.run_sync(build, fleet, repo)
        torrent = await trio.to_thread.run_sync(export, fleet, release_id, tmp_path / "r.torrent")
        url = announce_url(torrent)
        assert without_key(url) == f"http://{control.host}:{control.port + 1}/announce"
        assert "?hk=" in url  # the grant's tracker key (--allow 127.0.0.1)
        await until_seeds(url, torrent, 1)  # the seeder's full seed announces itself
        with pytest.raises(KeyError):  # no key: a failure reason, no files
            await trio.to_thread.run_sync(scrape, without_key(url), tracker_hashes(torrent))

        assert fleet.seeder is not None
        await fleet.stop(fleet.seeder)
        with pytest.raises(OSError):
            await trio.to_thread.run_sync(scrape, url, tracker_hashes(torrent))
        await fleet.start_seeder()
        await until_seeds(url, torrent, 1)  # same URL, and the seeder announced again

        await fleet.start_peer("web-1", PEER_IP)
        async with fleet.client() as client:
            await fleet.wait_connected(client, ["web-1"])
        out = await trio.to_thread.run_sync(
            lambda: shoal(control, "rollout", "start", release_id, "--wait")
        )
        assert out.returncode == 0, out.stdout + out.stderr
        await until_seeds(url, torrent, 2)  # the peer announced through the old torrent's URL

        peer = next(d for d in fleet.daemons if d.name == "web-1")
        await fleet.stop(peer)  # a clean stop announces "stopped"
        await until_seeds(url, torrent, 1)
        await fleet.start_peer("web-1", PEER_IP)
        await until_seeds(url, torrent, 2)  # a restarted peer seeds and announces again

        # an enrolled machine can fetch by hand too (the tracker withholds the seeder from it;
        # the fetch dials the seeder itself, and the tracker names the host's own peer)
        dest = tmp_path / "by-hand"
        out = await trio.to_thread.run_sync(
            lambda: shoal(
                control, "release", "fetch", release_id, "--to", str(dest), "--bind", PEER_IP
            )
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"fetched {release_id}" in out.stdout and "digest verified" in out.stdout


async def test_release_torrent_and_fetch_end_to_end(fleet: LocalFleet, tmp_path: Path) -> None:
    """Export the .torrent (file and stdout agree), fetch the release onto an outside IP from
    the seeder alone, verified; then the documented errors."""
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    with trio.fail_after(180):
        control = await fleet.start_seeder()
        release_id = await trio.to_thread.run_sync(build, fleet, repo)
        torrent = await trio.to_thread.run_sync(export, fleet, release_id, tmp_path / "r.torrent")
        raw = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "seeder.cli",
                    "release",
                    "torrent",
                    release_id,
                    "--seeder",
                    str(control),
                    "--identity",
                    str(fleet.credential),
                ],
                capture_output=True,
                timeout=60,
            )
        )
        assert raw.returncode == 0  # binary-safe on stdout; without --allow, the plain torrent
        assert announce_url(raw.stdout) == without_key(announce_url(torrent))
        assert torrent_infohash(raw.stdout) == torrent_infohash(torrent)

        dest = tmp_path / "fetched"
        out = await trio.to_thread.run_sync(
            lambda: shoal(
                control, "release", "fetch", release_id, "--to", str(dest), "--bind", FETCH_IP,
                "--timeout", "60", "--json",
            )
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        result = json.loads(out.stdout)
        manifest = json.loads((dest / "manifest.json").read_text())
        archive = dest / manifest["archive"]
        assert result["archive"] == str(archive) and result["verified"] is True
        digest = "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest()
        assert digest == manifest["digest"] == result["digest"]
        assert manifest["release_id"] == release_id and manifest["infohash"] == (
            torrent_infohash(torrent)
        )
        assert torrent_infohash((dest / "release.torrent").read_bytes()) == torrent_infohash(
            torrent
        )
        assert sorted(p.name for p in dest.iterdir()) == sorted(
            [archive.name, "manifest.json", "release.torrent"]
        )

        again = await trio.to_thread.run_sync(
            lambda: shoal(control, "release", "fetch", release_id, "--to", str(dest))
        )
        assert again.returncode == 1 and "not empty" in again.stderr
        unknown = await trio.to_thread.run_sync(
            lambda: shoal(control, "release", "fetch", "web-nope", "--to", str(tmp_path / "x"))
        )
        assert unknown.returncode == 1 and "no release 'web-nope'" in unknown.stderr
        assert not (tmp_path / "x").exists()
        missing = await trio.to_thread.run_sync(
            lambda: shoal(control, "release", "torrent", "web-nope", "--out", str(tmp_path / "t"))
        )
        assert missing.returncode == 1 and "no release 'web-nope'" in missing.stderr
        assert not (tmp_path / "t").exists()


async def test_fetch_from_an_unreachable_swarm_times_out_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    payload = tmp_path / "src" / "web-1.tar.zst"
    payload.parent.mkdir()
    payload.write_bytes(b"x" * 300_000)
    dead = free_port("127.0.0.1")
    torrent, infohash = make_torrent(payload, tracker_url=f"http://127.0.0.1:{dead}/announce")
    info: dict[str, Any] = {
        "release": {
            "app": "web",
            "version": "1",
            "commit": "c" * 40,
            "size": 300_000,
            "digest": "sha256:" + hashlib.sha256(payload.read_bytes()).hexdigest(),
            "infohash": infohash,
            "archive": payload.name,
        },
        "torrent": torrent,
        "tracker": f"http://127.0.0.1:{dead}/announce",
        "seeds": [["127.0.0.1", dead]],
    }
    dest = tmp_path / "dest"
    with trio.fail_after(30), pytest.raises(FetchTimeout, match="no data from the swarm"):
        await fetch_release(info, dest, bind=FETCH_IP, patience=2.0)
    assert not dest.exists()
    dest.mkdir()  # an empty directory given by the operator stays, empty
    with trio.fail_after(30), pytest.raises(FetchTimeout):
        await fetch_release(info, dest, bind=FETCH_IP, patience=1.0)
    assert dest.is_dir() and not any(dest.iterdir())


ARIA2C = shutil.which("aria2c")


async def fleet_with_v1_torrent(fleet: LocalFleet, tmp_path: Path) -> tuple[Path, str]:
    """A seeder with one release and its v1-only torrent exported: (torrent file, digest)."""
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    await fleet.start_seeder()
    release_id = await trio.to_thread.run_sync(build, fleet, repo)
    path = tmp_path / "v1.torrent"
    out = await trio.to_thread.run_sync(
        lambda: shoal(
            fleet.control, "release", "torrent", release_id, "--v1", "--out", str(path),
            "--allow", FETCH_IP,
        )
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert b"file tree" not in path.read_bytes() and len(tracker_hashes(path.read_bytes())) == 1
    listed = await trio.to_thread.run_sync(
        lambda: shoal(fleet.control, "release", "list", "--json")
    )
    manifest = next(r for r in json.loads(listed.stdout) if r["release_id"] == release_id)
    return path, str(manifest["digest"])


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def payload_name(torrent: Path) -> str:
    return bytes(bdecode(torrent.read_bytes())[b"info"][b"name"]).decode()


@pytest.mark.skipif(ARIA2C is None, reason="aria2c is not installed (apt-get install -y aria2)")
async def test_aria2_downloads_a_release_through_the_tracker(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    """aria2 1.36 reads the v1 export, learns the seeder from shoal's tracker alone (it is
    given no peer address) and downloads the release intact."""
    assert ARIA2C is not None
    with trio.fail_after(180):
        torrent, digest = await fleet_with_v1_torrent(fleet, tmp_path)
        dest = tmp_path / "aria2"
        port = free_port(FETCH_IP)
        done = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [
                    ARIA2C, "--dir", str(dest), "--seed-time=0", "--enable-dht=false",
                    "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
                    f"--interface={FETCH_IP}", f"--listen-port={port}", "--bt-stop-timeout=60",
                    "--console-log-level=warn", "--summary-interval=0", str(torrent),
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert digest_of(dest / payload_name(torrent)) == digest


TRANSMISSION_SHOW = shutil.which("transmission-show")


@pytest.mark.skipif(
    TRANSMISSION_SHOW is None,
    reason="transmission-show is not installed (apt-get install -y transmission-cli)",
)
async def test_transmission_reads_the_v1_export_but_not_the_hybrid_torrent(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    """Transmission 3.00's parser refuses any torrent with a v2 "file tree", hybrid included,
    and reads the v1 export with the same payload and tracker. (Its downloads cannot be tested
    on loopback: it refuses 127/8 peer addresses.)"""
    assert TRANSMISSION_SHOW is not None
    with trio.fail_after(120):
        v1, _ = await fleet_with_v1_torrent(fleet, tmp_path)
        listed = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "release", "list", "--json")
        )
        release_id = json.loads(listed.stdout)[0]["release_id"]
        hybrid = await trio.to_thread.run_sync(export, fleet, release_id, tmp_path / "h.torrent")
    assert without_key(announce_url(hybrid)) == without_key(announce_url(v1.read_bytes()))

    def show(path: Path) -> subprocess.CompletedProcess[str]:
        assert TRANSMISSION_SHOW is not None
        return subprocess.run([TRANSMISSION_SHOW, str(path)], capture_output=True, text=True)

    shown = show(v1)
    assert shown.returncode == 0 and payload_name(v1) in shown.stdout
    assert tracker_hashes(v1.read_bytes())[0].hex() in shown.stdout
    assert (
        "Error parsing" in show(tmp_path / "h.torrent").stderr + show(tmp_path / "h.torrent").stdout
    )


CTORRENT = shutil.which("ctorrent")


@pytest.mark.skipif(
    CTORRENT is None, reason="ctorrent is not installed (apt-get install -y ctorrent)"
)
async def test_ctorrent_downloads_the_hybrid_release_through_the_tracker(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    """ctorrent (v1 only, refuses v2-only torrents) reads shoal's hybrid torrent itself, joins
    the v1 swarm through shoal's tracker alone and downloads the release intact from the
    seeder. It lingers after finishing, so the test stops it once the file verifies."""
    assert CTORRENT is not None
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    with trio.fail_after(180):
        await fleet.start_seeder()
        release_id = await trio.to_thread.run_sync(build, fleet, repo)
        torrent = tmp_path / "r.torrent"
        # ctorrent announces from its -i address but dials peers from 127.0.0.1: allow both
        await trio.to_thread.run_sync(export, fleet, release_id, torrent, FETCH_IP)
        listed = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "release", "list", "--json")
        )
        digest = next(r for r in json.loads(listed.stdout) if r["release_id"] == release_id)[
            "digest"
        ]
        (tmp_path / "ct").mkdir()
        target = tmp_path / "ct" / payload_name(torrent)
        args = ["-e", "0", "-i", FETCH_IP, "-p", str(free_port(FETCH_IP)), "-s", str(target)]
        with (tmp_path / "ct.log").open("wb") as log:
            process = await trio.lowlevel.open_process(
                [CTORRENT, *args, str(torrent)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path / "ct",
                start_new_session=True,
            )
        try:
            with trio.fail_after(120):
                while not (target.exists() and digest_of(target) == digest):
                    assert process.returncode is None, (tmp_path / "ct.log").read_text()[-2000:]
                    await trio.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
