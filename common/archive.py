"""Release archives: a deterministic ``git archive`` tarball compressed with zstd; unpacking it.

Determinism matters because the archive's bytes decide the torrent's info-hash: the same commit
built twice (or on two seeders) must give the same release. So ``git`` runs without the user's or
the system's config (which could change line endings, the tar umask, or add filters), on the full
commit sha (the tar's mtimes are then the commit time), and zstd compresses single-threaded at a
fixed level without the content size in the frame header.

Unpacking trusts nothing in the tar: tarfile's ``data`` filter refuses absolute paths, ``..``,
device files and links leaving the tree, and the release directory appears atomically (extract
into a sibling temp dir, then rename) so a half-unpacked release is never seen.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, cast

import zstandard

from common.errors import BuildError, ReleaseError

CHUNK = 1024 * 1024
# Settings that change what `git archive` writes, pinned so the repository's own config can't
# change the bytes either (user and system config are not read at all, see _env).
GIT_CONFIG = ("-c", "core.autocrlf=false", "-c", "core.eol=lf", "-c", "tar.umask=0002")


@dataclass(frozen=True)
class ArchiveInfo:
    """A built archive: where it is, what it holds and how to recognise it."""

    path: Path
    commit: str  # full sha of the archived commit
    size: int  # bytes of the compressed file
    digest: str  # "sha256:<hex>" of the compressed file
    version: str  # a tag pointing at the commit, else the 12-character short sha


def git_archive(repo: Path, ref: str, dest: Path, *, level: int = 3) -> ArchiveInfo:
    """Deterministic zstd-compressed tar of ``ref`` in ``repo``, written atomically to ``dest``.

    The ref is resolved to its full commit sha first and that sha is archived, so the tar's
    timestamps are the commit's and a moving branch can't change between the two steps. A missing
    ref, a path that is not a git repository, or git missing raises BuildError naming the problem.
    """
    if not 1 <= level <= 22:
        raise BuildError(f"zstd level {level} is out of range (1..22)")
    commit = resolve_commit(repo, ref)
    version = _version(repo, ref, commit)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, tempfile.TemporaryFile() as stderr:
            size, digest = _compress_archive(repo, commit, out, stderr, level)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)
    return ArchiveInfo(path=dest, commit=commit, size=size, digest=digest, version=version)


def _compress_archive(
    repo: Path, commit: str, out: IO[bytes], stderr: IO[bytes], level: int
) -> tuple[int, str]:
    """Stream `git archive` through zstd into ``out``; (compressed size, digest)."""
    # stderr goes to a file, not a pipe: a chatty git can't block while we read stdout.
    cmd = ["git", *GIT_CONFIG, "archive", "--format=tar", commit]
    try:
        proc = subprocess.Popen(
            cmd, cwd=repo, env=_env(repo), stdout=subprocess.PIPE, stderr=stderr
        )
    except FileNotFoundError:
        raise BuildError("git is not installed (not found on PATH)") from None
    compressor = zstandard.ZstdCompressor(
        level=level, write_checksum=True, write_content_size=False, threads=0
    ).compressobj()
    sha, size = hashlib.sha256(), 0
    with proc:  # on error: closes the pipe (git gets SIGPIPE) and reaps it
        assert proc.stdout is not None
        while chunk := proc.stdout.read(CHUNK):
            data = compressor.compress(chunk)
            sha.update(data)
            size += out.write(data)
        tail = compressor.flush()
        sha.update(tail)
        size += out.write(tail)
    if proc.returncode != 0:
        stderr.seek(0)
        error = _first_line(stderr.read())
        raise BuildError(f"git archive of {commit[:12]} in {repo} failed: {error}")
    return size, f"sha256:{sha.hexdigest()}"


def resolve_commit(repo: Path, ref: str) -> str:
    """The full sha of the commit ``ref`` names in ``repo``; BuildError if there is none."""
    _check_repo(repo)
    _check_rev(ref)
    result = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if result.returncode != 0:
        raise BuildError(f"ref {ref!r} does not exist in {repo}")
    return result.stdout.decode().strip()


def list_tree(repo: Path, commit: str) -> set[str]:
    """Every file path (symlinks and submodules included) in ``commit``, relative to the root."""
    _check_rev(commit)
    result = _git(repo, "ls-tree", "-r", "-z", "--full-tree", "--name-only", commit)
    if result.returncode != 0:
        raise BuildError(f"cannot list {commit!r} in {repo}: {_first_line(result.stderr)}")
    return {os.fsdecode(name) for name in result.stdout.split(b"\0") if name}


def tree_modes(repo: Path, commit: str) -> dict[str, int]:
    """Like :func:`list_tree`, with git's mode of each path (0o100755 executable, 0o100644
    plain, 0o120000 symlink, 0o160000 submodule)."""
    _check_rev(commit)
    result = _git(repo, "ls-tree", "-r", "-z", "--full-tree", commit)
    if result.returncode != 0:
        raise BuildError(f"cannot list {commit!r} in {repo}: {_first_line(result.stderr)}")
    modes = {}
    for entry in result.stdout.split(b"\0"):
        if entry:
            info, _, name = entry.partition(b"\t")
            modes[os.fsdecode(name)] = int(info.split()[0], 8)
    return modes


def read_file_at(repo: Path, commit: str, path: str) -> bytes | None:
    """Contents of the file ``path`` in ``commit`` (raw blob), or None if it is absent or not a
    file. A symlink reads as its target text. BuildError if ``commit`` itself does not exist."""
    _check_rev(commit)
    spec = f"{commit}:{path}"
    kind = _git(repo, "cat-file", "-t", spec)
    if kind.returncode != 0:
        resolve_commit(repo, commit)  # raises if the commit, not the path, is the problem
        return None
    if kind.stdout.strip() != b"blob":
        return None
    result = _git(repo, "cat-file", "blob", spec)
    if result.returncode != 0:
        raise BuildError(f"cannot read {spec!r} in {repo}: {_first_line(result.stderr)}")
    return result.stdout


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


def _version(repo: Path, ref: str, commit: str) -> str:
    """The tag the caller named, else a tag exactly at the commit, else the short sha."""
    name = ref.removeprefix("refs/tags/")
    tag = f"refs/tags/{name}"
    if _git(repo, "show-ref", "--verify", "--quiet", tag).returncode == 0:
        peeled = _git(repo, "rev-parse", "--verify", "--quiet", f"{tag}^{{commit}}")
        if peeled.stdout.decode().strip() == commit:
            return name
    described = _git(repo, "describe", "--tags", "--exact-match", commit)
    if described.returncode == 0 and described.stdout.strip():
        return described.stdout.decode().strip()
    return commit[:12]


def _check_repo(repo: Path) -> None:
    if not repo.is_dir():
        raise BuildError(f"{repo} is not a directory")
    result = _git(repo, "rev-parse", "--git-dir")
    if result.returncode != 0:
        error = _first_line(result.stderr)
        if "not a git repository" in error:
            raise BuildError(f"{repo} is not a git repository")
        raise BuildError(f"{repo}: {error}")  # e.g. "detected dubious ownership"


def _check_rev(rev: str) -> None:
    if not rev or rev.startswith("-") or "\0" in rev:
        raise BuildError(f"{rev!r} is not a valid git ref")


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", *GIT_CONFIG, *args], cwd=repo, env=_env(repo), capture_output=True, check=False
        )
    except FileNotFoundError:
        if not repo.is_dir():
            raise BuildError(f"{repo} is not a directory") from None
        raise BuildError("git is not installed (not found on PATH)") from None


def _env(repo: Path) -> dict[str, str]:
    """The caller's environment minus anything that changes git's behaviour.

    No GIT_* variables (a GIT_DIR from a surrounding hook would redirect everything), no system or
    global config, C locale for stable messages, and a ceiling so that a directory *inside* some
    other repository is not mistaken for a repository itself.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CEILING_DIRECTORIES=str(repo.resolve().parent),
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
    )
    return env


def _first_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[0].removeprefix("fatal: ") if lines else "(no message)"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
