"""Signed releases over real processes: a seeder whose stored release was tampered with the way
an attacker could (a signature by another key, a changed manifest field, a swapped torrent, a
manifest whose digest is not the archive's) ships it, and the peer refuses each with a clear
report and nothing unpacked; the same release untampered then stages and goes live. Without
its signing key the seeder refuses to start."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from common.crypto.signing import PRIVATE_KEY_FILE, Signer, generate_signing_key, load_signer
from common.errors import ShoalError
from common.torrent import bdecode, make_torrent, piece_size_of
from seeder.authority import identity_dir
from seeder.localfleet import LocalFleet
from tests.conftest import make_app_repo

pytestmark = pytest.mark.integration

_NET = random.Random().randrange(64, 250)
PEER_IP = f"127.{_NET}.1.2"

Tamper = Callable[[dict[str, Any], bytes, bytes], tuple[dict[str, Any], bytes, bytes]]


def stored(db: sqlite3.Connection, rid: str) -> tuple[dict[str, Any], bytes, bytes]:
    manifest, torrent = db.execute(
        "SELECT manifest, torrent FROM releases WHERE release_id=?", (rid,)
    ).fetchone()
    (signature,) = db.execute(
        "SELECT signature FROM signatures WHERE release_id=?", (rid,)
    ).fetchone()
    return json.loads(manifest), bytes(torrent), bytes(signature)


def store(
    db: sqlite3.Connection, rid: str, manifest: dict[str, Any], torrent: bytes, sig: bytes
) -> None:
    with db:
        db.execute(
            "UPDATE releases SET manifest=?, torrent=? WHERE release_id=?",
            (json.dumps(manifest), torrent, rid),
        )
        db.execute("UPDATE signatures SET signature=? WHERE release_id=?", (sig, rid))


def announce_of(torrent: bytes) -> str:
    return bytes(bdecode(torrent)[b"announce"]).decode()


def target_of(fleet: LocalFleet) -> dict[str, Any]:
    out = fleet.cli("rollout", "status", "--json")
    assert out.returncode == 0, out.stderr
    (target,) = json.loads(out.stdout)["targets"]
    assert isinstance(target, dict)
    return target


@pytest.mark.slow
async def test_a_peer_refuses_every_release_that_does_not_verify(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    with trio.fail_after(400):
        await fleet.start_seeder()
        await fleet.start_peer("web-1", PEER_IP)
        async with fleet.client() as client:
            await fleet.wait_connected(client, ["web-1"])
        rid = await trio.to_thread.run_sync(fleet.build_release, repo)
        db = sqlite3.connect(fleet.root / "seeder" / "seeder.db")
        manifest, torrent, signature = stored(db, rid)
        # a torrent of the very same archive that is not the signed one (other piece size): the
        # seeder serves it, a peer would download it fine, only the infohash check stops it
        archive = fleet.root / "seeder" / "releases" / rid / manifest["archive"]
        other_torrent, _ = make_torrent(
            archive, tracker_url=announce_of(torrent), piece_size=2 * piece_size_of(torrent)
        )
        seeder_key = load_signer(identity_dir(fleet.seeder_dir) / PRIVATE_KEY_FILE)
        forger = Signer.from_pem(generate_signing_key().private_pem)
        wrong_digest = {**manifest, "digest": "sha256:" + "0" * 64}
        cases: list[tuple[str, tuple[dict[str, Any], bytes, bytes], str]] = [
            (
                "signed by another key",
                (manifest, torrent, forger.sign(manifest)),
                f"release {rid}: manifest signature invalid",
            ),
            (
                "a manifest field changed after signing",
                ({**manifest, "commit": "f" * 40}, torrent, signature),
                f"release {rid}: manifest signature invalid",
            ),
            (
                "a torrent that is not the signed one",
                (manifest, other_torrent, signature),
                f"release {rid}: torrent infohash does not match the signed manifest",
            ),
            (  # only a seeder that signs a wrong digest gets here: the last line of defence
                "a signed digest that is not the archive's",
                (wrong_digest, torrent, seeder_key.sign(wrong_digest)),
                f"release {rid}: archive digest mismatch",
            ),
        ]
        peer_dir = fleet.peer_dir("web-1")
        for what, tampered, reason in cases:
            store(db, rid, *tampered)
            out = await trio.to_thread.run_sync(fleet.cli, "rollout", "start", rid, "--wait")
            assert out.returncode == 1, (what, out.stdout, out.stderr)
            target = await trio.to_thread.run_sync(target_of, fleet)
            assert target["state"] == "failed" and reason in target["error"], (what, target)
            failed = {s["step"]: s["detail"] for s in target["steps"] if s["state"] == "failed"}
            assert reason in failed["stage"] and reason in failed["verify"], (what, failed)
            assert list((peer_dir / "releases").iterdir()) == [], what  # nothing unpacked
            assert not (peer_dir / "downloads" / rid).exists(), what
            assert not (peer_dir / "current").exists()
        store(db, rid, manifest, torrent, signature)
        db.close()
        out = await trio.to_thread.run_sync(fleet.cli, "rollout", "start", rid, "--wait")
        assert out.returncode == 0, out.stdout + out.stderr
        assert (peer_dir / "current").resolve().name == rid
        log = (fleet.root / "logs" / "web-1.log").read_text()
        assert "manifest signature invalid" in log and "Traceback" not in log


async def test_without_its_signing_key_the_seeder_refuses_to_start(fleet: LocalFleet) -> None:
    """Every release a seeder ships is signed: no key (here: removed after `seeder init`), no
    seeder, and the error says how to make one. (A peer without the pinned public key refuses
    too: tests/test_signing.py; its enrolment bundle always carries it.)"""
    fleet.init_identity()
    (identity_dir(fleet.seeder_dir) / PRIVATE_KEY_FILE).unlink()
    with (
        trio.fail_after(60),
        pytest.raises(ShoalError, match=r"no release-signing key at .*shoal seeder init"),
    ):
        await fleet.start_seeder()
