"""The file work of the Install step: copy the appspec's ``files``, then apply ``permissions``.

Semantics follow the CodeDeploy agent so existing appspec files behave the same:

- A directory source copies its *contents* into the destination directory; a file (or symlink)
  source is copied *into* the destination directory under its own name. Missing directories are
  created; symlinks are copied as symlinks; file modes and times are kept (``shutil.copy2``).
- An existing destination file is replaced (OVERWRITE, shoal's default) or left alone (RETAIN).
  Each file is written to a temporary name next to it and renamed into place, so a running
  program never sees a half-written file.
- Permissions apply to what this Install installed (pass the list :func:`apply_files` returned):
  for a directory ``object``, the paths strictly below it (not the object itself), selected by
  ``pattern`` (``**`` = all descendants; otherwise a ``*`` glob on direct children's names),
  minus ``except`` (globs on direct children's names), filtered by ``type``. A file ``object``
  gets the permission itself. Owner and group are set before the mode, so a setuid/setgid mode
  survives the chown. Symlinks are never changed (chmod would follow them).

Two deliberate differences: permission entries that overlap are applied in order (later wins)
where CodeDeploy refuses them; file_exists_behavior DISALLOW is refused by the appspec parser.

Everything here is synchronous and blocking: the caller runs it in a worker thread.
"""

from __future__ import annotations

import grp
import os
import posixpath
import pwd
import re
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from common.appspec import AppSpec, Permission
from common.errors import ShoalError


class InstallError(ShoalError):
    """The Install step could not copy a file or set a permission; the message names the path."""


class _Installer:
    """Copies one spec's files, remembering what it installed and where each file came from."""

    def __init__(self, spec: AppSpec, release_dir: Path) -> None:
        self.retain = spec.file_exists_behavior == "RETAIN"
        self.root = release_dir.resolve()
        self.installed: list[str] = []
        self.sources: dict[str, str] = {}
        self.where = ""

    def fail(self, problem: str) -> InstallError:
        return InstallError(f"{self.where}: {problem}")

    def source(self, relative: str) -> Path:
        """The mapping's source in the release; it may not reach outside through a symlink."""
        if relative == ".":
            return self.root
        path = self.root / relative
        if not path.parent.resolve().is_relative_to(self.root) or not os.path.lexists(path):
            raise self.fail(f"source {relative!r} is not in the release")
        return path

    def ensure_dir(self, path: Path, *, record: bool) -> None:
        """Make ``path`` a directory. New directories are recorded; an existing one only if
        ``record`` (subdirectories of a copied tree, so permissions are stable on redeploy)."""
        missing: list[Path] = []
        probe = path
        while not probe.is_dir():
            if os.path.lexists(probe):
                raise self.fail(f"{probe} exists and is not a directory")
            missing.append(probe)
            probe = probe.parent
        if not missing and record:
            self.installed.append(str(path))
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except OSError as exc:
                raise self.fail(f"cannot create directory {directory}: {exc.strerror}") from exc
            self.installed.append(str(directory))

    def copy_tree(self, source: Path, destination: Path) -> None:
        try:
            with os.scandir(source) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            raise self.fail(f"cannot read {source}: {exc.strerror or exc}") from exc
        for entry in entries:
            target = destination / entry.name
            if entry.is_dir(follow_symlinks=False):
                self.ensure_dir(target, record=True)
                self.copy_tree(Path(entry.path), target)
            else:
                self.copy_file(Path(entry.path), target)

    def copy_file(self, source: Path, destination: Path) -> None:
        key = str(destination)
        if key in self.sources:
            raise self.fail(
                f"{destination} would be installed from both {self.sources[key]} and {source}"
            )
        self.sources[key] = str(source)
        info = source.lstat()
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            raise self.fail(f"{source} is not a regular file or symlink")
        if os.path.lexists(destination):
            if destination.is_dir() and not destination.is_symlink():
                raise self.fail(f"cannot install {source.name}: {destination} is a directory")
            if self.retain:
                return
        temporary = destination.with_name(f".{destination.name}.shoal-{os.getpid()}.tmp")
        try:
            if os.path.lexists(temporary):
                temporary.unlink()
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), temporary)
            else:
                shutil.copy2(source, temporary)
            os.replace(temporary, destination)
        except OSError as exc:
            if os.path.lexists(temporary):
                temporary.unlink()
            raise self.fail(f"cannot install {destination}: {exc.strerror or exc}") from exc
        self.installed.append(key)


def apply_files(spec: AppSpec, release_dir: Path) -> list[str]:
    """Copy every ``files`` mapping out of ``release_dir``; return the paths installed.

    The list holds, in order, every file written and every directory created or filled (as
    absolute path strings); pass it to :func:`apply_permissions`. Files skipped under RETAIN are
    not in it. InstallError names the mapping and path on the first failure.
    """
    installer = _Installer(spec, release_dir)
    for index, mapping in enumerate(spec.files):
        installer.where = f"files[{index}]"
        source = installer.source(mapping.source)
        destination = Path(mapping.destination)
        if source.is_dir() and not source.is_symlink():
            installer.ensure_dir(destination, record=False)
            installer.copy_tree(source, destination)
        else:
            installer.ensure_dir(destination, record=False)
            installer.copy_file(source, destination / source.name)
    return installer.installed


def apply_permissions(spec: AppSpec, installed: Iterable[str] | None = None) -> None:
    """Apply ``permissions`` in order to the paths they select.

    With ``installed`` (what :func:`apply_files` returned) only those paths are candidates, as in
    CodeDeploy. Without it, every path found below each ``object`` on disk is: simpler, but it
    also touches files that did not come from this release.
    """
    known = None if installed is None else {posixpath.normpath(p) for p in installed}
    for index, permission in enumerate(spec.permissions):
        where = f"permissions[{index}]"
        uid, gid = _ids(permission, where)
        for path in _selected(permission, known, where):
            try:
                if uid != -1 or gid != -1:
                    os.chown(path, uid, gid, follow_symlinks=False)
                if permission.mode is not None:
                    os.chmod(path, int(permission.mode, 8))
            except OSError as exc:
                raise InstallError(
                    f"{where}: cannot set permissions on {path}: {exc.strerror or exc}"
                ) from exc


def _ids(permission: Permission, where: str) -> tuple[int, int]:
    """Owner and group ids (-1: leave unchanged); an unknown name is an InstallError."""
    uid = gid = -1
    if permission.owner is not None:
        try:
            uid = pwd.getpwnam(permission.owner).pw_uid
        except KeyError:
            raise InstallError(f"{where}: owner {permission.owner!r} does not exist") from None
    if permission.group is not None:
        try:
            gid = grp.getgrnam(permission.group).gr_gid
        except KeyError:
            raise InstallError(f"{where}: group {permission.group!r} does not exist") from None
    return uid, gid


def _selected(permission: Permission, known: set[str] | None, where: str) -> list[str]:
    """The paths one permission entry applies to, in a stable order."""
    base = posixpath.normpath(permission.object)
    if not os.path.lexists(base):
        return []
    if not os.path.isdir(base):
        if permission.pattern != "**" or permission.except_:
            raise InstallError(
                f"{where}: {base} is a file; 'pattern' and 'except' need a directory object"
            )
        chosen = "file" in permission.type and (known is None or base in known)
        return [base] if chosen and not os.path.islink(base) else []
    prefix = base.rstrip("/") + "/"
    candidates = (
        sorted(p for p in known if p.startswith(prefix)) if known is not None else _walk(base)
    )
    pattern = _glob(permission.pattern) if permission.pattern != "**" else None
    excepts = [_glob(e) for e in permission.except_]
    chosen_paths: list[str] = []
    for path in candidates:
        name = path[len(prefix) :]
        direct = "/" not in name
        if pattern is not None and not (direct and pattern.fullmatch(name)):
            continue
        if direct and any(e.fullmatch(name) for e in excepts):
            continue
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        kind = "directory" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else None
        if kind in permission.type:
            chosen_paths.append(path)
    return chosen_paths


def _walk(base: str) -> Iterator[str]:
    for directory, dirs, files in os.walk(base):
        dirs.sort()
        for name in sorted(dirs + files):
            yield os.path.join(directory, name)


def _glob(pattern: str) -> re.Pattern[str]:
    """CodeDeploy's simple glob: ``*`` matches any run of characters, nothing else is special."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)
