"""Release archives (a zstd-compressed tar, made by the seeder: :mod:`seeder.packing`): their
digest, unpacking them, and listing what they hold.

Unpacking trusts nothing in the tar: tarfile's ``data`` filter refuses absolute paths, ``..``,
device files and links leaving the tree, and the release directory appears atomically (extract
into a sibling temp dir, then rename) so a half-unpacked release is never seen.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, cast

import zstandard

from common.errors import ReleaseError

CHUNK = 1024 * 1024


def file_digest(path: Path) -> str:
    """``"sha256:<hex>"`` of a file, read in chunks."""
    with path.open("rb") as f:
        return f"sha256:{hashlib.file_digest(f, 'sha256').hexdigest()}"


def unpack(archive: Path, dest: Path) -> None:
    """Extract a release archive into ``dest`` atomically; do nothing if ``dest`` exists.

    Unsafe members (absolute paths, ``..``, device files, links leaving the tree, absolute
    symlinks) are refused by tarfile's ``data`` filter, which also drops owners and set-id bits
    but keeps the executable bits. Absolute names, which that filter would quietly make relative,
    are refused too: git never writes them. Any failure raises ReleaseError and leaves no
    ``dest``.
    """
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        with archive.open("rb") as raw:
            _extract(raw, tmp)
        _publish(tmp, dest)
    except _UNPACK_ERRORS as exc:
        raise ReleaseError(f"cannot unpack {archive.name}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_UNPACK_ERRORS = (tarfile.TarError, zstandard.ZstdError, EOFError, OSError)


class Reader(Protocol):
    """What :class:`StreamedUnpack` reads from: ``read(n)`` gives up to n bytes, b"" at the end."""

    def read(self, size: int = -1, /) -> bytes: ...


def streaming_dir(dest: Path) -> Path:
    """Where :class:`StreamedUnpack` builds the tree of ``dest`` until it is published."""
    return dest.parent / f".{dest.name}.streaming"


class StreamedUnpack:
    """Unpack an archive from a stream of its bytes (a download, piece by piece, in order),
    hashing every byte on the way, so that digest and unpacking are done when the last byte is.

    The tree goes into a hidden sibling of ``dest`` (``.<name>.streaming``, replaced by each
    run); :meth:`publish` renames it to ``dest`` only after the caller has checked the digest,
    so an archive that fails verification is never seen as a release. Same checks as
    :func:`unpack`.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.tmp = streaming_dir(dest)

    def run(self, source: Reader) -> str:
        """Read ``source`` to its end, unpacking it; ``"sha256:<hex>"`` of all it read.
        Blocking (run it in a thread). ReleaseError (and no tree) if the bytes do not unpack."""
        self.discard()
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir()
        hashing = _HashingReader(source)
        try:
            _extract(hashing, self.tmp)
            while hashing.read(CHUNK):  # the tar's trailing padding, if any
                pass
        except _UNPACK_ERRORS as exc:
            self.discard()
            raise ReleaseError(f"cannot unpack {self.dest.name} while downloading: {exc}") from None
        except BaseException:
            self.discard()
            raise
        return f"sha256:{hashing.sha.hexdigest()}"

    def publish(self) -> None:
        """Make the unpacked tree the release directory (a no-op if that exists already)."""
        try:
            if not self.dest.exists():
                _publish(self.tmp, self.dest)
        except OSError as exc:
            raise ReleaseError(f"cannot unpack {self.dest.name}: {exc}") from None
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class _HashingReader:
    """A file-like reader that hashes what passes through it."""

    def __init__(self, raw: Reader) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha.update(data)
        return data


# tarfile's stream buffer (default 10 KiB) and the chunk it copies files in (default 16 KiB):
# bigger reads cost less Python per byte (unpacking 50 MB: 0.08 -> 0.05 cpu-s, bench/README.md).
TAR_BUFSIZE = 1024 * 1024


def _extract(raw: Reader, tmp: Path) -> None:
    """Decompress and untar ``raw`` into ``tmp``, reading it through to the end of the
    compressed frames (which checks zstd's content checksum)."""
    with zstandard.ZstdDecompressor().stream_reader(
        cast("IO[bytes]", raw), read_size=CHUNK, read_across_frames=True, closefd=False
    ) as reader:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=TAR_BUFSIZE) as tar:
            tar.copybufsize = TAR_BUFSIZE  # type: ignore[attr-defined]  # not in typeshed
            tar.extractall(tmp, filter=_strict_data_filter)
        while reader.read(CHUNK):
            pass


def _publish(tmp: Path, dest: Path) -> None:
    tmp.chmod(0o755)
    try:
        tmp.rename(dest)
    except OSError:
        if not dest.exists():
            raise
        # another unpacker of the same release won the race: theirs is as good as ours


def _strict_data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    if os.path.isabs(member.name):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest)


@dataclass(frozen=True)
class ArchiveListing:
    """What a release archive holds, read without unpacking it (for preflight checks)."""

    unpacked_size: int  # bytes of all regular files
    modes: dict[str, int]  # regular files and symlinks -> permission bits (symlinks: of target)
    heads: dict[str, bytes]  # the first line (at most 256 bytes) of files starting with "#!"
    texts: dict[str, bytes]  # the whole content of the members asked for by name


HEAD_BYTES = 256


def list_archive(archive: Path, *, read: tuple[str, ...] = ()) -> ArchiveListing:
    """One streaming pass over a release archive; ReleaseError if it cannot be read."""
    size, modes, heads, texts = 0, {}, {}, {}
    links: dict[str, str] = {}
    try:
        with (
            archive.open("rb") as raw,
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as reader,
            tarfile.open(fileobj=reader, mode="r|") as tar,
        ):
            for member in tar:
                if member.issym():
                    links[member.name] = os.path.normpath(
                        os.path.join(os.path.dirname(member.name), member.linkname)
                    )
                if not member.isfile():
                    continue
                size += member.size
                modes[member.name] = member.mode
                data = tar.extractfile(member)
                if data is None:
                    continue
                if member.name in read:
                    texts[member.name] = data.read(1024 * 1024)
                    first = texts[member.name][:HEAD_BYTES]
                else:
                    first = data.read(HEAD_BYTES)
                if first.startswith(b"#!"):
                    heads[member.name] = first.split(b"\n")[0]
    except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as exc:
        raise ReleaseError(f"cannot read {archive.name}: {exc}") from None
    for name, target in links.items():  # a hook may be a symlink to a script in the release
        if target in modes:
            modes[name] = modes[target]
            if target in heads:
                heads[name] = heads[target]
    return ArchiveListing(size, modes, heads, texts)
