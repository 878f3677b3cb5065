"""Turning an application's ref into a release: fetch, resolve, checkout, build steps, archive,
appspec check, torrent, manifest.

The ref is resolved once, in the freshly fetched mirror, to a commit id; everything after works
on that id, so the ref and the archive always agree. The commit is exported into a temporary
directory (a clean checkout), the build steps run there, the application's directory is packed
deterministically (:mod:`seeder.packing`), and either the whole release lands in
``<data-dir>/releases/<release-id>/`` or nothing does (the work directory is renamed into place
only after every check passed). A failing step, a bad appspec or a git error publishes nothing.
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from common.appspec import AppSpec, parse_appspec
from common.appspec_checks import check_file_sources, check_hook_locations
from common.errors import AppSpecError, BuildError
from common.release import Manifest
from common.torrent import make_torrent
from seeder.app_service import Apps
from seeder.applications import App, BuildSettings
from seeder.buildsteps import SHOAL_YML, OnLine, StepContext, choose_settings, run_steps
from seeder.git import Mirror
from seeder.packing import GIT_FILE, pack, select
from seeder.refs import Commit, Resolved

APPSPEC_NAMES = ("appspec.yml", "appspec.yaml")
V1_TORRENT = "release-v1.torrent"  # the v1-only copy, made on first export (release torrent --v1)


@dataclass(frozen=True)
class Source:
    """What one build is made of: the app, the one commit its ref resolved to, the settings."""

    app: App
    resolved: Resolved
    commit: Commit
    settings: BuildSettings
    settings_from: str  # "seeder", "shoal.yml" or "none"

    def build_record(self) -> dict[str, Any]:
        return {"from": self.settings_from, **self.settings.to_dict(), "subdir": self.app.subdir}


@dataclass(frozen=True)
class BuiltRelease:
    manifest: Manifest
    torrent: bytes
    directory: Path
    source: Source | None = None  # None for a release not built from git (a shoal upgrade)
    warnings: tuple[str, ...] = ()  # what the appspec asks for that never takes effect


async def build_app_release(
    apps: Apps,
    name: str,
    ref: str,
    *,
    releases_dir: Path,
    tracker_url: str,
    piece_size: int = 0,
    on_line: OnLine = lambda step, line: None,
) -> BuiltRelease:
    """Build (or find, if identical) the release of application ``name`` at ``ref``.

    The seeder's own trouble (a full disk, a permission) is a BuildError that names the app and
    the reason, not the paths on the seeder's disk."""
    app = apps.get(name)
    try:
        return await _build(apps, app, ref, releases_dir, tracker_url, piece_size, on_line)
    except OSError as exc:
        raise BuildError(
            f"app {app.name!r}: the seeder could not build it: {exc.strerror or type(exc).__name__}"
        ) from None


async def _build(
    apps: Apps,
    app: App,
    ref: str,
    releases_dir: Path,
    tracker_url: str,
    piece_size: int,
    on_line: OnLine,
) -> BuiltRelease:
    def make_work() -> Path:
        releases_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".build-", dir=releases_dir))

    work = await trio.to_thread.run_sync(make_work)
    try:
        source = await apps.with_mirror(app, lambda mirror: checkout(mirror, app, ref, work))
        context = StepContext(
            app=app.name,
            ref=source.resolved.ref,
            commit=source.resolved.commit,
            version=source.resolved.version,
            home=work / "home",
        )
        await trio.to_thread.run_sync(context.home.mkdir)
        await run_steps(source.settings, work / "src" / app.subdir, context, on_line)
        return await trio.to_thread.run_sync(
            lambda: package(source, work, releases_dir, tracker_url, piece_size)
        )
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: shutil.rmtree(work, ignore_errors=True))


def checkout(mirror: Mirror, app: App, ref: str, work: Path) -> Source:
    """Resolve ``ref`` in the fetched mirror and export that commit into ``work/src``."""
    resolved = mirror.resolve(ref)
    commit = mirror.commit(resolved.commit)
    mirror.export(resolved.commit, work / "src")
    root = work / "src" / app.subdir
    if not root.is_dir() or root.is_symlink():
        raise BuildError(
            f"app {app.name!r}: commit {resolved.commit[:12]} has no directory {app.subdir!r}"
        )
    repo_file, source = None, SHOAL_YML[0]
    for candidate in SHOAL_YML:
        path = root / candidate
        if path.is_file() and not path.is_symlink():
            repo_file, source = path.read_bytes(), candidate
            break
    settings, settings_from = choose_settings(app.build, repo_file, source=source)
    return Source(app, resolved, commit, settings, settings_from)


def package(
    source: Source, work: Path, releases_dir: Path, tracker_url: str, piece_size: int
) -> BuiltRelease:
    """Pack the built tree, check its appspec, make the torrent, publish the release dir."""
    app, commit = source.app, source.resolved.commit
    root = work / "src" / app.subdir
    paths = select(root, source.settings.include, source.settings.exclude)
    if not paths:
        raise BuildError(f"app {app.name!r}: nothing to archive (check include/exclude)")
    out = work / "out"
    out.mkdir()
    archive_name = f"{app.name}-{commit[:12]}.tar.zst"
    packed = pack(root, out / archive_name, mtime=int(source.commit.committed_at), paths=paths)
    warnings = _check_appspec(root, packed.members, commit)
    torrent, infohash = make_torrent(
        out / archive_name, tracker_url=tracker_url, piece_size=piece_size
    )
    manifest = Manifest(
        app=app.name,
        version=source.resolved.version,
        commit=commit,
        size=packed.size,
        digest=packed.digest,
        infohash=infohash,
        archive=archive_name,
        ref=source.resolved.ref,
    )
    final = releases_dir / manifest.release_id
    if not final.exists():
        (out / "release.torrent").write_bytes(torrent)
        out.rename(final)
    return BuiltRelease(manifest, torrent, final, source, warnings)


def _check_appspec(root: Path, tree: dict[str, int], commit: str) -> tuple[str, ...]:
    """Validate the appspec against what the archive holds: AppSpecError names what is wrong;
    the warnings name what the spec asks for that will not take effect as written."""
    for name in APPSPEC_NAMES:
        if name in tree:
            text = (root / name).read_bytes()
            break
    else:
        raise AppSpecError(f"commit {commit[:12]} has no appspec.yml at the release's root")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise AppSpecError(f"{name} is not valid UTF-8") from None
    spec = parse_appspec(decoded, source=name)
    check_hook_locations(spec, lambda path: path in tree, source=name)
    dirs = {parent for path in tree for parent in _parents(path)}
    check_file_sources(spec, lambda path: path in tree, lambda path: path in dirs, source=name)
    return spec.warnings + _not_executable(spec, tree, name)


def _not_executable(spec: AppSpec, tree: dict[str, int], source: str) -> tuple[str, ...]:
    """Hooks archived without the x bit: the CodeDeploy agent chmods them, shoal does not
    change a release, so each would fail as ``not_executable`` when its event runs."""
    return tuple(
        f"{source}: hooks.{event}[{i}]: {hook.location!r} is not executable in the commit "
        "(mode 644): the hook will fail as not_executable; chmod +x it and commit"
        for event, hooks in spec.hooks.items()
        for i, hook in enumerate(hooks)
        if tree.get(posixpath.normpath(hook.location)) == GIT_FILE
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
