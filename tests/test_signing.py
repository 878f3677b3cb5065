"""Release signatures: the canonical bytes, signing and verifying with real Ed25519 keys, the
key files, the seeder's stored signatures and the peer's check of a Stage (pure, no sockets)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from common import messages as m
from common.crypto.signing import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    SignatureError,
    Signer,
    Verifier,
    canonical_manifest,
    generate_signing_key,
    load_signer,
    load_verifier,
    write_signing_key,
)
from common.errors import ConfigError
from common.release import Manifest
from common.torrent import make_torrent
from peer.trust import Untrusted, load_release_key, verified_manifest
from seeder.signatures import ReleaseSignatures, load_release_signer
from seeder.store import Store
from tests.conftest import MANIFEST


def pair() -> tuple[Signer, Verifier]:
    keys = generate_signing_key()
    return Signer.from_pem(keys.private_pem), Verifier.from_pem(keys.public_pem)


def test_canonical_bytes_ignore_key_order_and_cover_every_field() -> None:
    a = {"b": 1, "a": "x", "n": {"z": [1, 2], "y": None}}
    b = {"n": {"y": None, "z": [1, 2]}, "a": "x", "b": 1}
    assert canonical_manifest(a) == canonical_manifest(b)
    assert canonical_manifest(a) != canonical_manifest({**a, "extra": ""})
    assert canonical_manifest(a).startswith(b"shoal release manifest v1\x00")
    with pytest.raises(SignatureError, match="floats"):
        canonical_manifest({"size": 1.5})


def test_a_signature_verifies_only_with_its_key_over_the_same_manifest() -> None:
    signer, verifier = pair()
    _, other = pair()
    manifest = MANIFEST.to_dict()
    sig = signer.sign(manifest)
    verifier.verify(manifest, sig)
    verifier.verify(dict(reversed(list(manifest.items()))), sig)  # order is not content
    with pytest.raises(SignatureError, match="manifest signature invalid"):
        other.verify(manifest, sig)
    for field, value in [("digest", "sha256:" + "0" * 64), ("commit", "e" * 40), ("x", 1)]:
        with pytest.raises(SignatureError, match="manifest signature invalid"):
            verifier.verify({**manifest, field: value}, sig)
    with pytest.raises(SignatureError, match="manifest signature invalid"):
        verifier.verify(manifest, bytes([sig[0] ^ 1]) + sig[1:])
    with pytest.raises(SignatureError, match="missing"):
        verifier.verify(manifest, b"")
    with pytest.raises(SignatureError, match="3 bytes"):
        verifier.verify(manifest, b"abc")


def test_key_files_are_written_private_and_never_replaced(tmp_path: Path) -> None:
    keys = write_signing_key(tmp_path / "identity")
    private = tmp_path / "identity" / PRIVATE_KEY_FILE
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    signer = load_signer(private)
    verifier = load_verifier(tmp_path / "identity" / PUBLIC_KEY_FILE)
    verifier.verify({"a": 1}, signer.sign({"a": 1}))
    with pytest.raises(ConfigError, match="exists already"):
        write_signing_key(tmp_path / "identity")
    assert private.read_bytes() == keys.private_pem
    with pytest.raises(ConfigError, match="no release-signing key"):
        load_signer(tmp_path / "nope.key")
    (tmp_path / "junk.pub").write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_verifier(tmp_path / "junk.pub")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        load_signer(tmp_path / "junk.pub")


def test_seeder_and_peer_refuse_to_work_without_their_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shoal seeder init --data-dir"):
        load_release_signer(tmp_path / "seeder")
    with pytest.raises(ConfigError, match="enroll this host first"):
        load_release_key(tmp_path / "peer")


def test_stored_signatures_are_made_for_unsigned_releases_and_after_a_key_change(
    store: Store,
) -> None:
    signer, verifier = pair()
    signatures = ReleaseSignatures(store, signer)
    assert store.signature(MANIFEST.release_id) is None
    assert signatures.reconcile() == 1
    sig = store.signature(MANIFEST.release_id)
    assert sig is not None
    verifier.verify(MANIFEST.to_dict(), sig)
    assert signatures.reconcile() == 0  # valid: left alone
    new_signer, new_verifier = pair()
    assert ReleaseSignatures(store, new_signer).reconcile() == 1  # the key was replaced
    resigned = store.signature(MANIFEST.release_id)
    assert resigned is not None and resigned != sig
    new_verifier.verify(MANIFEST.to_dict(), resigned)


def stage_for(tmp_path: Path, signer: Signer) -> tuple[m.Stage, Manifest]:
    payload = tmp_path / "web-1.tar.zst"
    payload.write_bytes(b"release bytes" * 1000)
    torrent, infohash = make_torrent(payload, tracker_url="http://127.0.0.1:1/announce")
    manifest = Manifest("web", "v1", "c" * 40, 13000, "sha256:" + "d" * 64, infohash, payload.name)
    data = manifest.to_dict()
    return m.Stage("r1", data, torrent, signature=signer.sign(data)), manifest


def test_a_peer_accepts_only_a_stage_signed_by_its_key_with_the_signed_torrent(
    tmp_path: Path,
) -> None:
    signer, verifier = pair()
    stage, manifest = stage_for(tmp_path, signer)
    assert verified_manifest(verifier, stage) == manifest

    forger, _ = pair()
    forged = m.Stage("r1", stage.manifest, stage.torrent, signature=forger.sign(stage.manifest))
    with pytest.raises(
        Untrusted, match=f"release {manifest.release_id}: manifest signature invalid"
    ):
        verified_manifest(verifier, forged)

    tampered = {**stage.manifest, "commit": "f" * 40}
    with pytest.raises(Untrusted, match="manifest signature invalid"):
        verified_manifest(
            verifier, m.Stage("r1", tampered, stage.torrent, signature=stage.signature)
        )

    with pytest.raises(Untrusted, match="manifest signature missing"):
        verified_manifest(verifier, m.Stage("r1", stage.manifest, stage.torrent))

    other = tmp_path / "other"
    other.mkdir()
    (other / "web-1.tar.zst").write_bytes(b"other bytes")  # another release's real torrent
    swapped_torrent, _ = make_torrent(other / "web-1.tar.zst", tracker_url="http://x/announce")
    swapped = m.Stage("r1", stage.manifest, swapped_torrent, signature=stage.signature)
    with pytest.raises(Untrusted, match="torrent infohash does not match the signed manifest"):
        verified_manifest(verifier, swapped)
