"""Tests for common.archive: unpacking (atomic, refusing unsafe members and corrupt bytes),
streamed unpacking and digests, on archives made as the seeder makes them."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from common.archive import StreamedUnpack, file_digest, unpack
from common.errors import ReleaseError
from seeder.packing import pack_tree


@dataclass(frozen=True)
class Built:
    path: Path
    digest: str


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A release tree (packed by the seeder's packing, as a build does)."""
    repo = tmp_path / "app"
    files = {
        "README.md": b"line one\nline two\n",
        "appspec.yml": b"version: 0.0\nos: linux\n",
        "scripts/start.sh": b"#!/bin/sh\necho started\n",
        "data/blob.bin": bytes(range(256)) * 64,
    }
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    (repo / "scripts/start.sh").chmod(0o755)
    (repo / "scripts/link").symlink_to("start.sh")
    return repo


def archive_of(repo: Path, dest: Path) -> Built:
    return Built(dest, pack_tree(repo, dest, mtime=1_704_164_645).digest)


def test_unpack_round_trips_content_and_modes(repo: Path, tmp_path: Path) -> None:
    info = archive_of(repo, tmp_path / "r.tar.zst")
    dest = tmp_path / "releases" / "r1"
    unpack(info.path, dest)
    assert (dest / "README.md").read_bytes() == b"line one\nline two\n"
    assert (dest / "data/blob.bin").read_bytes() == bytes(range(256)) * 64
    start = dest / "scripts/start.sh"
    assert start.stat().st_mode & 0o777 == 0o755
    assert (dest / "README.md").stat().st_mode & 0o777 == 0o644
    assert subprocess.run([start], capture_output=True, check=True).stdout == b"started\n"
    assert os.readlink(dest / "scripts/link") == "start.sh"
    assert dest.stat().st_mode & 0o777 == 0o755
    assert [p.name for p in (tmp_path / "releases").iterdir()] == ["r1"]
    # idempotent: an existing release directory is left alone
    (dest / "README.md").write_bytes(b"local edit")
    unpack(info.path, dest)
    assert (dest / "README.md").read_bytes() == b"local edit"


def _zst_tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data else None)
    return zstandard.ZstdCompressor().compress(buf.getvalue())


def _member(
    name: str, *, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, len(data), link, 0o644
    return info, data


@pytest.mark.parametrize(
    "evil",
    [
        _member("../evil", data=b"gotcha"),
        _member("/tmp/shoal-evil-absolute", data=b"gotcha"),
        _member("link", kind=tarfile.SYMTYPE, link="../../outside"),
        _member("abs", kind=tarfile.SYMTYPE, link="/etc/passwd"),
        _member("hard", kind=tarfile.LNKTYPE, link="../outside"),
        _member("tty", kind=tarfile.CHRTYPE),
    ],
    ids=["dotdot", "absolute", "symlink-escape", "symlink-absolute", "hardlink-escape", "device"],
)
def test_unsafe_members_are_refused(tmp_path: Path, evil: tuple[tarfile.TarInfo, bytes]) -> None:
    archive = tmp_path / "evil.tar.zst"
    archive.write_bytes(_zst_tar([_member("ok.txt", data=b"fine"), evil]))
    releases = tmp_path / "releases"
    with pytest.raises(ReleaseError, match=r"cannot unpack evil\.tar\.zst"):
        unpack(archive, releases / "r1")
    assert list(releases.iterdir()) == []  # no dest, no temp dir
    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/shoal-evil-absolute").exists()


def test_corrupt_archives_are_refused(repo: Path, tmp_path: Path) -> None:
    good = archive_of(repo, tmp_path / "good.tar.zst").path.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    cases = {
        "garbage": os.urandom(4096),
        "truncated": good[: len(good) // 2],
        "bitflip": bytes(flipped),
        "not-a-tar": zstandard.ZstdCompressor().compress(b"hello " * 1000),
        "empty": b"",
    }
    releases = tmp_path / "releases"
    for name, data in cases.items():
        archive = tmp_path / f"{name}.tar.zst"
        archive.write_bytes(data)
        with pytest.raises(ReleaseError):
            unpack(archive, releases / name)
    with pytest.raises(ReleaseError):
        unpack(tmp_path / "does-not-exist.tar.zst", releases / "x")
    assert list(releases.iterdir()) == []


def test_file_digest_streams(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"a" * (3 * 1024 * 1024 + 5))
    assert file_digest(path) == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


class _Trickle(io.RawIOBase):
    """A reader that hands out at most `step` bytes per read, like a pipe fed piece by piece."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self.step if size < 0 else min(size, self.step)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk


@pytest.mark.parametrize("step", [1, 777, 32 * 1024, 10**9])
def test_streamed_unpack_matches_unpack_and_digest(repo: Path, tmp_path: Path, step: int) -> None:
    info = archive_of(repo, tmp_path / "r.tar.zst")
    data = info.path.read_bytes()
    dest = tmp_path / "releases" / "r1"
    streamed = StreamedUnpack(dest)
    assert streamed.run(_Trickle(data, step)) == info.digest
    assert not dest.exists()  # nothing is published before the caller checked the digest
    streamed.publish()
    unpack(info.path, tmp_path / "plain" / "r1")
    for path in (tmp_path / "plain" / "r1").rglob("*"):
        mirror = dest / path.relative_to(tmp_path / "plain" / "r1")
        assert mirror.lstat().st_mode == path.lstat().st_mode
        if path.is_file() and not path.is_symlink():
            assert mirror.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "releases").iterdir()) == ["r1"]


def test_streamed_unpack_refuses_bad_streams_and_leaves_nothing(repo: Path, tmp_path: Path) -> None:
    good = archive_of(repo, tmp_path / "good.tar.zst").path.read_bytes()
    evil = _zst_tar([_member("ok.txt", data=b"fine"), _member("../evil", data=b"gotcha")])
    releases = tmp_path / "releases"
    for name, data in {"truncated": good[:-100], "garbage": os.urandom(5000), "evil": evil}.items():
        streamed = StreamedUnpack(releases / name)
        with pytest.raises(ReleaseError, match=f"cannot unpack {name} while downloading"):
            streamed.run(_Trickle(data, 4096))
        assert list(releases.iterdir()) == []
    # a stale half-unpacked tree from an interrupted run is replaced, not merged into
    stale = StreamedUnpack(releases / "r1")
    stale.tmp.mkdir()
    (stale.tmp / "leftover").write_text("old")
    stale.run(_Trickle(good, 65536))
    stale.publish()
    assert not (releases / "r1" / "leftover").exists()
    assert (releases / "r1" / "README.md").exists()
