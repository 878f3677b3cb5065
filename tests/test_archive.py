"""Tests for common.archive against real git repositories built in tmp_path."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from common.archive import (
    StreamedUnpack,
    file_digest,
    git_archive,
    list_tree,
    read_file_at,
    unpack,
)
from common.errors import BuildError, ReleaseError


def _git(repo: Path, *args: str, date: str = "2024-01-02T03:04:05+00:00") -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
    }
    ident = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
    result = subprocess.run(
        ["git", *ident, "-c", "init.defaultBranch=main", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        check=True,
    )
    return result.stdout.decode().strip()


def _commit(repo: Path, files: dict[str, bytes], message: str, date: str) -> str:
    for name, data in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message, date=date)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "app"
    repo.mkdir()
    _git(repo, "init", "-q")
    files = {
        "README.md": b"line one\nline two\n",
        "appspec.yml": b"version: 0.0\nos: linux\n",
        "scripts/start.sh": b"#!/bin/sh\necho started\n",
        "data/blob.bin": bytes(range(256)) * 64,
    }
    _commit(repo, files, "first", "2024-01-02T03:04:05+00:00")
    (repo / "scripts/start.sh").chmod(0o755)
    (repo / "scripts/link").symlink_to("start.sh")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "exec", date="2024-01-02T03:05:00+00:00")
    return repo


def _head(repo: Path) -> str:
    return _git(repo, "rev-parse", "HEAD")


def test_archive_is_deterministic(repo: Path, tmp_path: Path) -> None:
    one = git_archive(repo, "main", tmp_path / "out" / "one.tar.zst")
    two = git_archive(repo, "HEAD", tmp_path / "two.tar.zst")
    assert one.path.read_bytes() == two.path.read_bytes()
    assert one.digest == two.digest == file_digest(one.path)
    assert one.digest.startswith("sha256:") and len(one.digest) == 7 + 64
    assert one.size == one.path.stat().st_size
    assert one.commit == _head(repo) and len(one.commit) == 40
    assert one.version == one.commit[:12]
    assert list((tmp_path / "out").iterdir()) == [one.path]  # no temp file left behind


def test_archive_ignores_user_and_repo_config(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = git_archive(repo, "main", tmp_path / "ref.tar.zst")
    # a clone on "another machine" whose user and repo config would change the tar's bytes
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[core]\n\tautocrlf = true\n[tar]\n\tumask = 0077\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "nowhere"))
    _git(clone, "config", "tar.umask", "0077")
    _git(clone, "config", "core.autocrlf", "true")
    # what a naive `git archive` would produce here (CRLF files, 0700 modes) is different:
    naive_env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    naive = ["git", "archive", "--format=tar", "origin/main"]
    hostile = subprocess.run(naive, cwd=clone, env=naive_env, capture_output=True, check=True)
    pinned = ["git", "-c", "tar.umask=0002", "-c", "core.autocrlf=false", *naive[1:]]
    naive_env["GIT_CONFIG_GLOBAL"] = os.devnull
    plain = subprocess.run(pinned, cwd=clone, env=naive_env, capture_output=True, check=True)
    assert hostile.stdout != plain.stdout
    again = git_archive(clone, "origin/main", tmp_path / "again.tar.zst")
    assert again.digest == reference.digest


def test_different_commit_gives_different_digest(repo: Path, tmp_path: Path) -> None:
    first = git_archive(repo, "main", tmp_path / "a.tar.zst")
    _commit(repo, {"README.md": b"changed\n"}, "second", "2024-01-03T00:00:00+00:00")
    second = git_archive(repo, "main", tmp_path / "b.tar.zst")
    assert second.commit != first.commit and second.digest != first.digest
    old = git_archive(repo, first.commit, tmp_path / "c.tar.zst")
    assert old.digest == first.digest


def test_compression_level_changes_bytes_not_content(repo: Path, tmp_path: Path) -> None:
    fast = git_archive(repo, "main", tmp_path / "fast.tar.zst", level=1)
    best = git_archive(repo, "main", tmp_path / "best.tar.zst", level=19)
    assert fast.digest != best.digest
    unpack(fast.path, tmp_path / "fast")
    unpack(best.path, tmp_path / "best")
    assert (tmp_path / "fast/data/blob.bin").read_bytes() == (
        tmp_path / "best/data/blob.bin"
    ).read_bytes()
    with pytest.raises(BuildError, match="level"):
        git_archive(repo, "main", tmp_path / "x.tar.zst", level=0)


def test_version_is_the_tag(repo: Path, tmp_path: Path) -> None:
    _git(repo, "tag", "v1.0")  # lightweight
    assert git_archive(repo, "v1.0", tmp_path / "a").version == "v1.0"
    assert git_archive(repo, "refs/tags/v1.0", tmp_path / "b").version == "v1.0"
    assert git_archive(repo, "main", tmp_path / "c").version == "v1.0"  # found by describe
    head = _commit(repo, {"new.txt": b"x"}, "third", "2024-01-04T00:00:00+00:00")
    _git(repo, "tag", "-a", "-m", "release 2", "v2.0")  # annotated
    info = git_archive(repo, "v2.0", tmp_path / "d")
    assert (info.version, info.commit) == ("v2.0", head)
    assert git_archive(repo, "v1.0", tmp_path / "e").version == "v1.0"
    assert git_archive(repo, "v2.0~1", tmp_path / "f").version == "v1.0"


def test_bad_inputs_raise_build_error(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "out.tar.zst"
    with pytest.raises(BuildError, match=r"^ref 'v9' does not exist in .*app$"):
        git_archive(repo, "v9", dest)
    with pytest.raises(BuildError, match="not a valid git ref"):
        git_archive(repo, "--output=/tmp/x", dest)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(BuildError, match="plain is not a git repository"):
        git_archive(plain, "main", dest)
    with pytest.raises(BuildError, match="scripts is not a git repository"):
        git_archive(repo / "scripts", "main", dest)  # inside a repo, but not one itself
    with pytest.raises(BuildError, match="missing is not a directory"):
        git_archive(tmp_path / "missing", "main", dest)
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    with pytest.raises(BuildError, match="ref 'HEAD' does not exist"):
        git_archive(empty, "HEAD", dest)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(BuildError, match="git is not installed"):
        git_archive(repo, "main", dest)
    assert not dest.exists()


def test_list_tree_and_read_file_at(repo: Path) -> None:
    commit = _head(repo)
    assert list_tree(repo, commit) == {
        "README.md",
        "appspec.yml",
        "scripts/start.sh",
        "scripts/link",
        "data/blob.bin",
    }
    assert read_file_at(repo, commit, "appspec.yml") == b"version: 0.0\nos: linux\n"
    assert read_file_at(repo, commit, "scripts/link") == b"start.sh"
    assert read_file_at(repo, commit, "nope.yml") is None
    assert read_file_at(repo, commit, "scripts") is None  # a directory is not a file
    with pytest.raises(BuildError, match="does not exist"):
        read_file_at(repo, "0" * 40, "appspec.yml")
    with pytest.raises(BuildError, match="cannot list"):
        list_tree(repo, "0" * 40)


def test_unpack_round_trips_content_and_modes(repo: Path, tmp_path: Path) -> None:
    info = git_archive(repo, "main", tmp_path / "r.tar.zst")
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
    good = git_archive(repo, "main", tmp_path / "good.tar.zst").path.read_bytes()
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
    info = git_archive(repo, "main", tmp_path / "r.tar.zst")
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
    good = git_archive(repo, "main", tmp_path / "good.tar.zst").path.read_bytes()
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
