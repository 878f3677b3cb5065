"""Where shoal itself is installed on a host (shared by ``shoal fleet`` and the peer's upgrade).

    PREFIX/versions/<version>/          one virtualenv per installed version of shoal
    PREFIX/versions/<version>/INSTALLED the wheel hashes it was built from (written last: the
                                        version is complete only once this file exists)
    PREFIX/current -> versions/<version>  switched atomically (new symlink + rename over)
    PREFIX/bin/shoal-peer               the launcher (peer/launcher.py): what the service runs
    PREFIX/bundles/                     uploaded wheelhouse archives (removed after install)
    DATA_DIR                            the peer's data dir (journal, releases, identity/)
    CONFIG                              the peer's YAML config (peer/config.py reads it)

The service runs the launcher, which runs ``PREFIX/current/bin/shoal-peer`` as its child, so
switching ``current`` and restarting is an upgrade, and switching back is a rollback; the launcher
belongs to no version, so it can do the switching back when a new version does not come back.

A version is an opaque name chosen by whoever installs it (``shoal fleet`` uses
``<package version>-<wheelhouse digest>``); it names one directory, so it must be a plain file
name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from common.errors import ConfigError

DEFAULT_PREFIX = PurePosixPath("/opt/shoal")
DEFAULT_DATA_DIR = PurePosixPath("/var/lib/shoal-peer")
DEFAULT_CONFIG = PurePosixPath("/etc/shoal/peer.yml")
DEFAULT_UNIT_DIR = PurePosixPath("/etc/systemd/system")
UNIT_NAME = "shoal-peer.service"
INSTALLED = "INSTALLED"  # marker + wheel hashes inside a version's virtualenv
PIDFILE = "shoal-peer.pid"  # under the data dir, for --service none
LOGFILE = "shoal-peer.log"  # under the data dir, for --service none

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def check_version(version: str) -> str:
    """A version name usable as one directory name (no ``/``, no ``..``), else ConfigError."""
    if not _VERSION_RE.match(version) or ".." in version:
        raise ConfigError(f"version {version!r} is not a plain name ([A-Za-z0-9._+-], <=128)")
    return version


@dataclass(frozen=True)
class InstallLayout:
    """The paths of one installation of shoal on one host (POSIX paths of *that* host)."""

    prefix: PurePosixPath = DEFAULT_PREFIX
    data_dir: PurePosixPath = DEFAULT_DATA_DIR
    config: PurePosixPath = DEFAULT_CONFIG
    unit_dir: PurePosixPath = DEFAULT_UNIT_DIR
    unit_name: str = UNIT_NAME

    def __post_init__(self) -> None:
        for what in ("prefix", "data_dir", "config", "unit_dir"):
            path = getattr(self, what)
            if not path.is_absolute():
                raise ConfigError(f"install {what} {str(path)!r} must be an absolute path")
        if "/" in self.unit_name or not self.unit_name.endswith(".service"):
            raise ConfigError(f"unit name {self.unit_name!r} must be NAME.service")

    @property
    def versions(self) -> PurePosixPath:
        return self.prefix / "versions"

    def version_dir(self, version: str) -> PurePosixPath:
        return self.versions / check_version(version)

    def installed_marker(self, version: str) -> PurePosixPath:
        return self.version_dir(version) / INSTALLED

    @property
    def current(self) -> PurePosixPath:
        return self.prefix / "current"

    def program(self, name: str = "shoal-peer") -> PurePosixPath:
        """A console script of the current version (what the launcher runs)."""
        return self.current / "bin" / name

    @property
    def launcher(self) -> PurePosixPath:
        """The launcher, ``PREFIX/bin/shoal-peer`` (what the service runs)."""
        return self.prefix / "bin" / "shoal-peer"

    @property
    def bundles(self) -> PurePosixPath:
        return self.prefix / "bundles"

    @property
    def unit(self) -> PurePosixPath:
        return self.unit_dir / self.unit_name

    @property
    def pidfile(self) -> PurePosixPath:
        return self.data_dir / PIDFILE

    @property
    def logfile(self) -> PurePosixPath:
        return self.data_dir / LOGFILE

    @property
    def identity(self) -> PurePosixPath:
        return self.data_dir / "identity"


def current_version(prefix: Path) -> str | None:
    """The version ``prefix/current`` points at on this machine, or None if there is none."""
    try:
        target = os.readlink(prefix / "current")
    except (FileNotFoundError, NotADirectoryError):
        return None
    return PurePosixPath(target).name


def switch_current(prefix: Path, version: str) -> None:
    """Point ``prefix/current`` at ``versions/<version>`` atomically, on this machine.

    The version must be complete (its INSTALLED marker exists). A new symlink is made under a
    temporary name and renamed over ``current``: a reader sees the old or the new target, never
    none.
    """
    target = Path("versions") / check_version(version)
    if not (prefix / target / INSTALLED).is_file():
        raise ConfigError(f"version {version!r} is not (completely) installed under {prefix}")
    tmp = prefix / f".current.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, prefix / "current")


def switch_command(prefix: PurePosixPath, version: str) -> str:
    """The shell command that does :func:`switch_current` on a remote host (POSIX sh)."""
    target = f"versions/{check_version(version)}"
    tmp = shlex.quote(str(prefix / ".current.new"))
    cur = shlex.quote(str(prefix / "current"))
    return f"ln -sfn {shlex.quote(target)} {tmp} && mv -fT {tmp} {cur}"


def wheelhouse_digest(wheels: Mapping[str, str]) -> str:
    """The digest of a wheel set (file name -> sha256): same wheels, same digest."""
    lines = "".join(f"{name} {sha}\n" for name, sha in sorted(wheels.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def install_id(version: str, wheels: Mapping[str, str]) -> str:
    """The version directory's name for a wheel set: ``<package version>-<digest prefix>``."""
    return check_version(f"{version}-{wheelhouse_digest(wheels)[:12]}")


def installed_manifest(wheels: Mapping[str, str]) -> str:
    """The INSTALLED marker's contents: one ``sha256  name`` line per wheel."""
    return "".join(f"{sha}  {name}\n" for name, sha in sorted(wheels.items()))
