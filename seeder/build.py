"""Turning a git ref into a release: archive, appspec check, torrent, manifest.

Runs in a worker thread (git, compression and hashing block). Either the whole release lands in
``<data-dir>/releases/<release-id>/`` or nothing does: the work happens in a temporary directory
that is renamed into place only after every check passed.
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common.appspec import AppSpec, check_file_sources, check_hook_locations, parse_appspec
from common.archive import git_archive, read_file_at, tree_modes
from common.errors import AppSpecError, BuildError
from common.release import Manifest, check_app_name
from common.torrent import make_torrent

APPSPEC_NAMES = ("appspec.yml", "appspec.yaml")
GIT_PLAIN_FILE = 0o100644  # git's mode of a file without the executable bit
V1_TORRENT = "release-v1.torrent"  # the v1-only copy, made on first export (release torrent --v1)


@dataclass(frozen=True)
class BuiltRelease:
    manifest: Manifest
    torrent: bytes
    directory: Path
    warnings: tuple[str, ...] = ()  # what the appspec asks for that never takes effect


def build_release(
    repo: Path,
    ref: str,
    *,
    app: str | None,
    releases_dir: Path,
    tracker_url: str,
    piece_size: int = 0,
) -> BuiltRelease:
    """Build (or find, if identical) the release of ``ref`` in ``repo``."""
    repo = repo.resolve()
    if not repo.is_dir():
        raise BuildError(f"{repo} is not a directory")
    app = check_app_name(app or repo.name)
    releases_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=releases_dir))
    try:
        info = git_archive(repo, ref, work / "archive.tmp")
        warnings = _check_appspec(repo, info.commit)
        archive_name = f"{app}-{info.commit[:12]}.tar.zst"
        payload = work / archive_name
        info.path.rename(payload)
        torrent, infohash = make_torrent(payload, tracker_url=tracker_url, piece_size=piece_size)
        manifest = Manifest(
            app=app,
            version=info.version,
            commit=info.commit,
            size=info.size,
            digest=info.digest,
            infohash=infohash,
            archive=archive_name,
        )
        final = releases_dir / manifest.release_id
        if not final.exists():
            (work / "release.torrent").write_bytes(torrent)
            work.rename(final)
        return BuiltRelease(manifest, torrent, final, warnings)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_appspec(repo: Path, commit: str) -> tuple[str, ...]:
    """Validate the commit's appspec against its tree: AppSpecError names what is wrong; the
    warnings name what the spec asks for that will not take effect as written."""
    for name in APPSPEC_NAMES:
        text = read_file_at(repo, commit, name)
        if text is not None:
            break
    else:
        raise AppSpecError(f"commit {commit[:12]} has no appspec.yml at the repository root")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise AppSpecError(f"{name} is not valid UTF-8") from None
    spec = parse_appspec(decoded, source=name)
    tree = tree_modes(repo, commit)
    check_hook_locations(spec, lambda path: path in tree, source=name)
    dirs = {parent for path in tree for parent in _parents(path)}
    check_file_sources(spec, lambda path: path in tree, lambda path: path in dirs, source=name)
    return spec.warnings + _not_executable(spec, tree, name)


def _not_executable(spec: AppSpec, tree: dict[str, int], source: str) -> tuple[str, ...]:
    """Hooks committed without the x bit: the CodeDeploy agent chmods them, shoal does not
    change a release, so each would fail as ``not_executable`` when its event runs."""
    return tuple(
        f"{source}: hooks.{event}[{i}]: {hook.location!r} is not executable in the commit "
        "(mode 644): the hook will fail as not_executable; chmod +x it and commit"
        for event, hooks in spec.hooks.items()
        for i, hook in enumerate(hooks)
        if tree.get(posixpath.normpath(hook.location)) == GIT_PLAIN_FILE
    )


def _parents(path: str) -> list[str]:
    """``a/b/c`` -> ``a``, ``a/b``: the directories a tree path implies."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def v1_torrent(directory: Path, archive: str, tracker_url: str, piece_size: int) -> bytes:
    """The v1-only torrent of a release's archive, made (deterministically) and kept in its
    directory on first use, for BitTorrent clients that read neither v2 nor hybrid torrents."""
    path = directory / V1_TORRENT
    if path.is_file():
        return path.read_bytes()
    torrent, _ = make_torrent(
        directory / archive, tracker_url=tracker_url, piece_size=piece_size, kind="v1"
    )
    partial = path.with_name(f".{V1_TORRENT}.tmp")
    partial.write_bytes(torrent)
    partial.rename(path)
    return torrent
