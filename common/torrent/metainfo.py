"""Torrent files: deterministic hybrid (v1+v2) torrents of release archives, and reading them.

Hybrid, not v2-only: v1-only clients (aria2, Transmission 3, rtorrent, ctorrent) refuse v2-only
torrents but download hybrid ones, and an operator may use any of them on a release. The extra
SHA-1 pass costs little at build time (figures in bench/README.md, from
``python -m bench.torrent_build``) and changes nothing for the slice plan: a single-file hybrid
torrent has the same pieces and no pad files. The release keeps its v2 infohash as its id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import libtorrent as lt

from common.errors import TorrentError
from common.torrent.bencoding import bdecode, bencode

KiB: Final = 1024
MiB: Final = 1024 * KiB
MIN_PIECE_SIZE: Final = 32 * KiB
MAX_PIECE_SIZE: Final = 4 * MiB
TARGET_PIECES: Final = 2048
# libtorrent's create_torrent flags per kind of torrent. Releases are hybrid. A v1-only copy is
# for clients whose parsers choke on the v2 "file tree" (its empty-string keys): Transmission
# 3.00 refuses hybrid torrents and aria2 1.36 drops those keys and so announces a wrong v1 hash.
KINDS: Final = {"hybrid": 0, "v1": lt.create_torrent.v1_only, "v2": lt.create_torrent.v2_only}


def choose_piece_size(size: int) -> int:
    """Piece size for a payload of `size` bytes: about TARGET_PIECES pieces, a power of two
    clamped to 32 KiB..4 MiB (32 KiB up to 64 MB, 512 KiB at 1 GiB, 4 MiB from 8 GiB).

    A peer can forward a piece only once it has all of it, so small pieces keep the swarm's
    pipeline short (measured in bench/README.md: 32 KiB beat 64, 128 and 256 KiB for a 50 MB
    release on 16 hosts); big releases get bigger pieces to bound the HAVE traffic and hashing.
    """
    wanted = max(1, -(-size // TARGET_PIECES))
    return min(MAX_PIECE_SIZE, max(MIN_PIECE_SIZE, 1 << (wanted - 1).bit_length()))


def make_torrent(
    payload: Path, *, tracker_url: str, piece_size: int = 0, kind: str = "hybrid"
) -> tuple[bytes, str]:
    """Private, hybrid (v1 SHA-1 + v2 SHA-256) single-file torrent of `payload` announcing to
    `tracker_url`; with `kind` "v1" or "v2", a v1-only or v2-only one (see :data:`KINDS`).

    Returns (bencoded torrent bytes, infohash hex). Deterministic: the same file bytes, file name
    and arguments give byte-identical output (no creation date, creator or mtime), so a release
    rebuilt from the same commit has the same infohash. `piece_size` 0 means
    :func:`choose_piece_size`. Hashes the whole file: run it in a thread for big payloads.
    """
    if kind not in KINDS:
        raise TorrentError(f"unknown torrent kind {kind!r} (one of {', '.join(KINDS)})")
    if piece_size and (piece_size < 16 * KiB or piece_size & (piece_size - 1)):
        raise TorrentError(f"piece size {piece_size} is not a power of two >= 16 KiB")
    try:
        if not payload.is_file():
            raise TorrentError(f"cannot make a torrent of {payload}: not a regular file")
        size = payload.stat().st_size
        entry = lt.create_file_entry(payload.name, size)
        piece_size = piece_size or choose_piece_size(size)
        ct = lt.create_torrent([entry], piece_size, KINDS[kind])
        ct.set_priv(True)
        ct.add_tracker(tracker_url)
        lt.set_piece_hashes(ct, str(payload.parent))
        tree = ct.generate()
    except (OSError, RuntimeError) as e:
        raise TorrentError(f"cannot make a torrent of {payload}: {e}") from e
    tree.pop(b"creation date", None)
    tree.pop(b"created by", None)
    data = lt.bencode(tree)  # generate_buf() raises UnicodeDecodeError in 2.1.1
    return data, torrent_infohash(data)


def with_announce(torrent: bytes, url: str) -> bytes:
    """The same torrent announcing to ``url`` instead (the info dict, so the infohash, is
    untouched): how a tracker key travels in an exported ``.torrent``."""
    meta = bdecode(torrent)
    if not isinstance(meta, dict) or b"info" not in meta:
        raise TorrentError("not a valid torrent: no info dict")
    meta[b"announce"] = url.encode()
    meta.pop(b"announce-list", None)
    out = bencode(meta)
    if torrent_infohash(out) != torrent_infohash(torrent):
        raise TorrentError("re-encoding the torrent changed its infohash")
    return out


def torrent_infohash(torrent: bytes) -> str:
    """Hex infohash of bencoded torrent bytes (the value :func:`make_torrent` returns).

    For v2 and hybrid torrents this is the 64-digit SHA-256 infohash; trackers see its first
    20 bytes (the first 40 hex digits), and the v1 hash as well for a hybrid torrent
    (:func:`tracker_hashes`)."""
    return hexhash(load(torrent).info_hashes)


def tracker_hashes(torrent: bytes) -> list[bytes]:
    """The 20-byte info-hashes a torrent is announced (and scraped) under: the v1 hash, then the
    v2 hash truncated to 20 bytes (both for a hybrid torrent)."""
    ih = load(torrent).info_hashes
    hashes = [ih.v1.to_bytes()] if ih.has_v1() else []
    return hashes + ([ih.v2.to_bytes()[:20]] if ih.has_v2() else [])


def piece_size_of(torrent: bytes) -> int:
    """The piece size of bencoded torrent bytes."""
    info = load(torrent).ti
    if info is None:
        raise TorrentError("torrent has no metadata")
    return int(info.piece_length())


def torrent_hashes(torrent: bytes) -> dict[str, str]:
    """The torrent's full info-hashes in hex, by version: ``{"v1": ..., "v2": ...}`` (hybrid)."""
    ih = load(torrent).info_hashes
    hashes = {"v1": ih.v1.to_bytes().hex()} if ih.has_v1() else {}
    return hashes | ({"v2": ih.v2.to_bytes().hex()} if ih.has_v2() else {})


def load(torrent: bytes) -> lt.add_torrent_params:
    try:
        return lt.load_torrent_buffer(torrent)
    except RuntimeError as e:
        raise TorrentError(f"not a valid torrent: {e}") from e


def hexhash(ih: lt.info_hash_t) -> str:
    return (ih.v2.to_bytes() if ih.has_v2() else ih.v1.to_bytes()).hex()


def check_payload(ti: lt.torrent_info | None, save_path: Path) -> None:
    """Refuse to seed files that are missing or of the wrong size (seed_mode would trust them)."""
    if ti is None:
        raise TorrentError("torrent has no metadata")
    files = ti.layout()
    for i in range(files.num_files()):
        if files.file_flags(i) & lt.file_storage.flag_pad_file:
            continue
        path = save_path / files.file_path(i)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise TorrentError(f"cannot seed {path}: {e}") from e
        if size != files.file_size(i):
            raise TorrentError(f"cannot seed {path}: {size} bytes, expected {files.file_size(i)}")


def single_file(files: lt.file_storage) -> int | None:
    """The size of the one file of a single-file torrent (v2 pads it to whole pieces with a
    pad file, which does not count), or None if it has several."""
    payload = [i for i in range(files.num_files()) if not files.file_flags(i) & files.flag_pad_file]
    return files.file_size(0) if payload == [0] else None
