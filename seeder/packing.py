"""A release archive from a directory (a checkout, after its build steps): deterministic bytes.

The same tree gives the same bytes whatever the machine, umask, clock or user: members sorted by
path, every mtime the commit's time, owner 0:0 without names, modes normalised (0755 for
directories and files with any executable bit, 0644 for other files), symlinks kept as links,
PAX format, then zstd single-threaded at a fixed level without the content size (as
:mod:`common.archive`). Empty directories are left out (git has none either); ``include`` and
``exclude`` are gitignore-style patterns (``pathspec``) over paths relative to the directory.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import pathspec
import zstandard

from common.errors import BuildError

LEVEL = 3
CHUNK = 1024 * 1024
GIT_EXEC, GIT_FILE, GIT_LINK = 0o100755, 0o100644, 0o120000  # modes as git's tree shows them


@dataclass(frozen=True)
class Packed:
    size: int  # bytes of the compressed archive
    digest: str  # "sha256:<hex>"
    members: dict[str, int]  # path -> git-style mode (see GIT_*)


def select(root: Path, include: tuple[str, ...], exclude: tuple[str, ...]) -> list[str]:
    """Sorted relative paths of the files and symlinks under ``root`` the patterns keep."""
    inc = pathspec.GitIgnoreSpec.from_lines(include) if include else None
    exc = pathspec.GitIgnoreSpec.from_lines(exclude) if exclude else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for d in list(dirnames):
            if (base / d).is_symlink():  # a link to a directory is a link, not a directory
                dirnames.remove(d)
                filenames.append(d)
        for name in filenames:
            rel = (base / name).relative_to(root).as_posix()
            if inc is not None and not inc.match_file(rel):
                continue
            if exc is not None and exc.match_file(rel):
                continue
            found.append(rel)
    return sorted(found)


def pack(root: Path, dest: Path, *, mtime: int, paths: list[str], level: int = LEVEL) -> Packed:
    """Write the tar.zst of ``paths`` (relative to ``root``) to ``dest``."""
    dirs = sorted({p for path in paths for p in _parents(path)})
    entries = sorted([(d, True) for d in dirs] + [(p, False) for p in paths])
    members: dict[str, int] = {}
    compressor = zstandard.ZstdCompressor(
        level=level, write_checksum=True, write_content_size=False, threads=0
    )
    with dest.open("wb") as raw:
        hashing = _Hashing(raw)
        with (
            compressor.stream_writer(cast("IO[bytes]", hashing), closefd=False) as zst,
            tarfile.open(fileobj=zst, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            for rel, is_dir in entries:
                info = tarfile.TarInfo(rel)
                info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
                path = root / rel
                try:
                    st = path.lstat()
                    if is_dir:
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        tar.addfile(info)
                    elif stat.S_ISLNK(st.st_mode):
                        info.type, info.mode = tarfile.SYMTYPE, 0o777
                        info.linkname = _inside(rel, os.readlink(path))
                        members[rel] = GIT_LINK
                        tar.addfile(info)
                    elif stat.S_ISREG(st.st_mode):
                        executable = bool(st.st_mode & 0o111)
                        info.mode, info.size = (0o755 if executable else 0o644), st.st_size
                        members[rel] = GIT_EXEC if executable else GIT_FILE
                        with path.open("rb") as f:
                            tar.addfile(info, f)
                    else:
                        raise BuildError(f"{rel} is neither a file, a directory nor a symlink")
                except OSError as exc:
                    raise BuildError(f"cannot archive {rel}: {exc.strerror or exc}") from None
        raw.flush()
        os.fsync(raw.fileno())
    dest.chmod(0o644)
    return Packed(hashing.size, f"sha256:{hashing.sha.hexdigest()}", members)


class _Hashing(io.RawIOBase):
    """A writable file that hashes and counts what goes through it to ``out``."""

    def __init__(self, out: io.BufferedWriter) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)


def _inside(rel: str, target: str) -> str:
    """A symlink's target, if it stays inside the release (peers refuse any other)."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if target.startswith("/") or joined == ".." or joined.startswith("../"):
        raise BuildError(f"symlink {rel} points outside the release ({target})")
    return target


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def pack_tree(root: Path, dest: Path, *, mtime: int = 0) -> Packed:
    """The archive of everything under ``root`` but a ``.git`` directory (tests, benchmarks)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return pack(root, dest, mtime=mtime, paths=select(root, (), (".git/",)))
