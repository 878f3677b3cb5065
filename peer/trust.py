"""What a peer checks before it stages anything: that the seeder signed the release.

The pinned key is ``DATA/identity/release-signing.pub``, put there when the host was enrolled
(``shoal enroll`` bundle or ``shoal-peer join``); the daemon does not start without it. A Stage
is accepted only if its signature is that key's over the manifest map exactly as received
(:func:`common.crypto.signing.canonical_manifest`), and its torrent's infohash is the one the
signed manifest names (the torrent's piece hashes then vouch for every byte downloaded; the
archive digest is checked again after the download, before anything is unpacked into place).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from common import messages as m
from common.crypto.signing import PUBLIC_KEY_FILE, SignatureError, Verifier, load_verifier
from common.errors import ConfigError, ShoalError
from common.release import Manifest
from common.torrent import torrent_infohash

IDENTITY_DIR: Final = "identity"


class Untrusted(ShoalError):
    """A Stage that does not verify; the message is the report's detail."""


def release_key_path(data_dir: Path) -> Path:
    return data_dir / IDENTITY_DIR / PUBLIC_KEY_FILE


def load_release_key(data_dir: Path) -> Verifier:
    """The pinned release-signing public key, or a ConfigError saying how a host gets one."""
    path = release_key_path(data_dir)
    if not path.exists():
        raise ConfigError(
            f"no release-signing public key at {path}: enroll this host first "
            f"(`shoal enroll NAME --out FILE` on the seeder, then `shoal-peer run --bundle FILE`,"
            f" or `shoal-peer join --seeder HOST:PORT --token T --data-dir {data_dir}`)"
        )
    return load_verifier(path)


def verified_manifest(key: Verifier, cmd: m.Stage) -> Manifest:
    """The Stage's manifest, once its signature and its torrent's infohash check out."""
    name = _claimed_id(cmd.manifest)
    try:
        key.verify(cmd.manifest, cmd.signature)
    except SignatureError as exc:
        raise Untrusted(f"release {name}: {exc}") from None
    manifest = Manifest.from_dict(cmd.manifest)
    try:
        infohash = torrent_infohash(cmd.torrent)
    except ShoalError as exc:
        raise Untrusted(f"release {name}: the torrent is not valid: {exc}") from None
    if infohash != manifest.infohash:
        raise Untrusted(
            f"release {name}: torrent infohash does not match the signed manifest "
            f"(torrent {infohash[:16]}..., manifest {manifest.infohash[:16]}...)"
        )
    return manifest


def _claimed_id(manifest: dict[str, object]) -> str:
    """The release id a (not yet verified) manifest claims, safe to print."""
    claimed = manifest.get("release_id")
    text = claimed if isinstance(claimed, str) else "?"
    return repr(text[:80]) if not text.isprintable() else text[:80]
