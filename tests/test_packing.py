"""seeder.packing: the same tree gives the same bytes whatever the file times, umask and owner;
include/exclude decide what goes in; links leaving the release are refused."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from common.errors import BuildError
from seeder.packing import GIT_EXEC, GIT_FILE, GIT_LINK, pack, select


def tree(root: Path, *, mtime: int, umask: int) -> Path:
    old = os.umask(umask)
    try:
        (root / "hooks").mkdir(parents=True)
        (root / "dist" / "maps").mkdir(parents=True)
        (root / "empty").mkdir()
        (root / "appspec.yml").write_text("version: 0.0\nos: linux\n")
        (root / "hooks" / "start.sh").write_text("#!/bin/sh\n")
        (root / "hooks" / "start.sh").chmod(0o700 & ~umask | 0o100)
        (root / "dist" / "app.js").write_text("x = 1\n")
        (root / "dist" / "maps" / "app.js.map").write_text("{}\n")
        (root / "notes.txt").write_text("not shipped\n")
        os.symlink("hooks/start.sh", root / "start")
    finally:
        os.umask(old)
    for p in root.rglob("*"):
        os.utime(p, (mtime, mtime), follow_symlinks=False)
    return root


def members(archive: Path) -> list[tuple[str, int, int, int, str]]:
    with (
        archive.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as z,
        tarfile.open(fileobj=z, mode="r|") as tar,
    ):
        return [(m.name, m.mode, m.mtime, m.uid, m.uname) for m in tar]


def test_same_tree_same_bytes_whatever_times_and_umask(tmp_path: Path) -> None:
    a = tree(tmp_path / "a", mtime=1_000, umask=0o022)
    b = tree(tmp_path / "b", mtime=2_000_000, umask=0o077)
    pa = pack(a, tmp_path / "a.tar.zst", mtime=1_700_000_000, paths=select(a, (), ()))
    pb = pack(b, tmp_path / "b.tar.zst", mtime=1_700_000_000, paths=select(b, (), ()))
    assert (tmp_path / "a.tar.zst").read_bytes() == (tmp_path / "b.tar.zst").read_bytes()
    assert pa == pb
    assert pa.members["hooks/start.sh"] == GIT_EXEC and pa.members["notes.txt"] == GIT_FILE
    assert pa.members["start"] == GIT_LINK
    listed = members(tmp_path / "a.tar.zst")
    assert [m[0] for m in listed] == sorted(m[0] for m in listed)
    assert all(m[2] == 1_700_000_000 and m[3] == 0 and m[4] == "" for m in listed)
    modes = {m[0]: m[1] for m in listed}
    assert modes["hooks/start.sh"] == 0o755 and modes["notes.txt"] == 0o644
    assert "empty" not in modes, "empty directories are left out"


def test_include_and_exclude_decide_what_goes_in(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", mtime=0, umask=0o022)
    paths = select(root, ("appspec.yml", "hooks/", "dist/"), ("*.map",))
    assert paths == ["appspec.yml", "dist/app.js", "hooks/start.sh"]
    assert select(root, (), ("dist/", "notes.txt")) == ["appspec.yml", "hooks/start.sh", "start"]


def test_a_link_out_of_the_release_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    os.symlink("../../etc/passwd", root / "evil")
    with pytest.raises(BuildError, match="symlink evil points outside the release"):
        pack(root, tmp_path / "x.tar.zst", mtime=0, paths=select(root, (), ()))


def test_a_fifo_left_by_a_build_is_refused_by_name(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "ok.txt").write_text("ok\n")
    os.mkfifo(root / "pipe")
    with pytest.raises(BuildError, match="pipe is neither a file, a directory nor a symlink"):
        pack(root, tmp_path / "x.tar.zst", mtime=0, paths=select(root, (), ()))
