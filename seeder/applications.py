"""Applications: what the seeder may build releases of, and how.

An application is a name, a git remote, the branch its ``app refs --commits`` follows, the
directory of the repository that is the release (``subdir``), and optional build settings. The
seeder only ever builds from an application's mirror of its remote: a client names an
application, never a path (issue 9 item 6).

Pure logic: validation of operator input and the record itself. The record is a plain dataclass
serialised as a dict, so later settings (promotion rules, ...) add fields with defaults without a
new table.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from common.errors import ConfigError
from common.release import check_app_name

STEPS = ("before_build", "build", "after_build")
DEFAULT_STEP_TIMEOUT = 600.0  # seconds one build step may run before its process group is killed
MAX_STEP_TIMEOUT = 6 * 3600.0
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SCP_LIKE = re.compile(r"^(?:[A-Za-z0-9._~+-]+@)?[A-Za-z0-9][A-Za-z0-9.-]*:(?![:/]{2})[^:]")
SCHEMES = ("https", "http", "ssh", "git", "file")
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!/)(?!.*/$)[A-Za-z0-9._/-]{1,200}(?<!\.lock)$")


class UnknownApp(ConfigError):
    """No application of that name is registered (the message names only the name)."""


def unknown_app(name: str) -> UnknownApp:
    return UnknownApp(f"no application named {name!r} (`shoal app list` shows them)")


@dataclass(frozen=True)
class BuildSettings:
    """Commands run in a clean checkout before the archive is made, and what the archive holds.

    Empty everything means: no steps, the archive is the application's directory at the commit."""

    before_build: str = ""
    build: str = ""
    after_build: str = ""
    timeout: float = DEFAULT_STEP_TIMEOUT  # seconds, per step
    include: tuple[str, ...] = ()  # gitignore-style patterns; empty: everything
    exclude: tuple[str, ...] = ()

    def steps(self) -> list[tuple[str, str]]:
        """(step name, command) of the declared steps, in the order they run."""
        return [(name, getattr(self, name)) for name in STEPS if getattr(self, name)]

    def declared(self) -> bool:
        return self != BuildSettings()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["include"] = list(self.include)
        data["exclude"] = list(self.exclude)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str) -> BuildSettings:
        """Checked settings from a dict (the store, a request, or shoal.yml)."""
        unknown = sorted(set(data) - {*STEPS, "timeout", "include", "exclude"})
        if unknown:
            raise ConfigError(
                f"{source}: unknown build setting(s) {', '.join(unknown)} (expected "
                f"{', '.join(STEPS)}, timeout, include, exclude)"
            )
        steps = {}
        for name in STEPS:
            value = data.get(name) or ""
            if not isinstance(value, str):
                raise ConfigError(f"{source}: {name} must be one shell command (a string)")
            if "\0" in value:
                raise ConfigError(f"{source}: {name} contains a NUL byte")
            steps[name] = value.strip()
        return cls(
            **steps,
            timeout=check_timeout(data.get("timeout", DEFAULT_STEP_TIMEOUT), source),
            include=check_patterns(data.get("include") or (), f"{source}: include"),
            exclude=check_patterns(data.get("exclude") or (), f"{source}: exclude"),
        )


def check_timeout(value: object, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{source}: timeout must be a number of seconds, not {value!r}")
    if not 0 < value <= MAX_STEP_TIMEOUT:
        raise ConfigError(
            f"{source}: timeout {value} is not in (0, {MAX_STEP_TIMEOUT:.0f}] seconds"
        )
    return float(value)


def check_patterns(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{what} must be a list of glob patterns")
    out = []
    for pattern in value:
        if not isinstance(pattern, str) or not pattern.strip() or "\0" in pattern:
            raise ConfigError(f"{what}: {pattern!r} is not a glob pattern")
        out.append(pattern.strip())
    return tuple(out)


@dataclass(frozen=True)
class App:
    name: str
    repo: str  # as the operator gave it; never carries a password (check_repo_url refuses it)
    branch: str = "main"
    subdir: str = ""  # "" = the repository root
    build: BuildSettings = field(default_factory=BuildSettings)
    created_at: float = 0.0
    updated_at: float = 0.0
    created_by: str = ""

    def settings(self) -> dict[str, Any]:
        """What decides a build (compared by ``app add`` of an existing name)."""
        return {
            "repo": self.repo,
            "branch": self.branch,
            "subdir": self.subdir,
            "build": self.build.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.settings(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "created_by": self.created_by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> App:
        return cls(
            name=str(data["name"]),
            repo=str(data["repo"]),
            branch=str(data.get("branch") or "main"),
            subdir=str(data.get("subdir") or ""),
            build=BuildSettings.from_dict(dict(data.get("build") or {}), source="stored app"),
            created_at=float(data.get("created_at", 0.0)),
            updated_at=float(data.get("updated_at", 0.0)),
            created_by=str(data.get("created_by", "")),
        )


def new_app(params: dict[str, Any], *, now: float, by: str) -> App:
    """An application from an ``app.add`` request, every field checked."""
    return App(
        name=check_app_name(str(params.get("name", ""))),
        repo=check_repo_url(str(params.get("repo", ""))),
        branch=check_branch(str(params.get("branch") or "main")),
        subdir=check_subdir(str(params.get("subdir") or "")),
        build=BuildSettings.from_dict(dict(params.get("build") or {}), source="build settings"),
        created_at=now,
        updated_at=now,
        created_by=by,
    )


def changed_app(app: App, params: dict[str, Any], *, now: float) -> App:
    """``app.set``: the given settings replaced, the others kept. ``build`` replaces the
    build settings key by key; ``clear_build`` drops them all first."""
    updated = app
    if params.get("repo") is not None:
        updated = replace(updated, repo=check_repo_url(str(params["repo"])))
    if params.get("branch") is not None:
        updated = replace(updated, branch=check_branch(str(params["branch"])))
    if params.get("subdir") is not None:
        updated = replace(updated, subdir=check_subdir(str(params["subdir"])))
    base = BuildSettings() if params.get("clear_build") else updated.build
    build_changes = dict(params.get("build") or {})
    if build_changes or params.get("clear_build"):
        merged = {**base.to_dict(), **build_changes}
        updated = replace(updated, build=BuildSettings.from_dict(merged, source="build settings"))
    return replace(updated, updated_at=now)


def check_repo_url(url: str) -> str:
    """Any URL git can fetch, or an absolute path on the seeder. A URL with a password is refused
    (the seeder's own credential helper or SSH key holds credentials, never the database); the
    message does not repeat the password."""
    url = url.strip()
    if not url or "\0" in url or "\n" in url or url.startswith("-"):
        raise ConfigError("--repo must be a git URL (https://, ssh://, git@host:path, file://)")
    if _SCHEME.match(url):
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError as exc:
            raise ConfigError(f"--repo {redact_url(url)} is not a valid URL: {exc}") from None
        if password is not None:
            raise ConfigError(
                f"--repo {redact_url(url)} carries a password: credentials are the seeder's own"
                " (its SSH key or git credential helper), never part of an application"
            )
        if parts.scheme.lower() not in SCHEMES:
            raise ConfigError(
                f"--repo {redact_url(url)}: scheme {parts.scheme!r} is not one of "
                f"{', '.join(SCHEMES)}"
            )
        if parts.scheme not in ("file",) and not parts.hostname:
            raise ConfigError(f"--repo {url} has no host")
        return url
    if url.startswith("/") or _SCP_LIKE.match(url):
        return url
    raise ConfigError(
        f"--repo {url!r} is neither a URL (https://, ssh://, file://, git@host:path) nor an "
        "absolute path on the seeder"
    )


_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/@\s:]*):([^/@\s]*)@")


def redact_url(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced by ***."""
    return _CREDENTIALS.sub(r"\1\2:***@", text)


def check_branch(branch: str) -> str:
    if not _BRANCH.match(branch):
        raise ConfigError(f"--branch {branch!r} is not a valid branch name")
    return branch


def check_subdir(subdir: str) -> str:
    """A relative directory inside the repository, normalised ('' for the root)."""
    subdir = subdir.strip()
    if subdir in ("", ".", "./"):
        return ""
    norm = posixpath.normpath(subdir)
    if subdir.startswith("/") or norm == ".." or norm.startswith("../") or "\0" in subdir:
        raise ConfigError(f"--subdir {subdir!r} must be a relative path inside the repository")
    return norm
