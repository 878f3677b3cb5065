"""The release's ``appspec.yml``: the AWS CodeDeploy format, parsed and validated up front.

A release says which hook scripts run at which lifecycle event, which files it installs where,
and which permissions those installed files get, in the CodeDeploy "EC2/On-Premises" AppSpec
format, so that existing appspec files work unchanged. Everything is validated when the spec is
read, before anything on a host stops, so that a typo fails the rollout at stage time with a
one-line message naming the problem and its key path (``hooks.BeforeInstall[0]: ...``) instead
of half-way through an activation.

Where the CodeDeploy agent silently ignores part of a spec, the spec is accepted and the part
named in :attr:`AppSpec.warnings`, which ``release build`` shows; where the agent would fail,
parsing fails. YAML is read by :mod:`common.yamldoc` (PyYAML's safe loader, refusing duplicate
keys). Paths inside the release (hook locations, file sources) are normalised to relative POSIX
paths at parse time and may never escape the release root, so callers can join them onto the
release directory without further checks. That the scripts and sources a spec names are in the
release tree is checked by :mod:`common.appspec_checks`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from common.errors import AppSpecError
from common.yamldoc import LiteralInt, YamlError, load_yaml

LIFECYCLE_EVENTS: tuple[str, ...] = (
    "BeforeBlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
    "BeforeInstall",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
)
"""Events a release may attach scripts to, in the order they run on activation."""

PREVIOUS_RELEASE_EVENTS: tuple[str, ...] = (
    "BeforeBlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
)
"""Events whose scripts come from the release being replaced (as in CodeDeploy): they run before
the new release is installed, so they are the live release's own way to stop and leave traffic."""

AGENT_EVENTS: tuple[str, ...] = ("DownloadBundle", "Install", "BlockTraffic", "AllowTraffic")
"""The agent's own steps (as in CodeDeploy): scripts attached to them never run."""

LEGACY_EVENTS: Mapping[str, str] = MappingProxyType(
    {
        "BeforeELBRemove": "BeforeBlockTraffic",
        "AfterELBRemove": "AfterBlockTraffic",
        "BeforeELBAdd": "BeforeAllowTraffic",
        "AfterELBAdd": "AfterAllowTraffic",
    }
)
"""Old CodeDeploy names of the traffic events, named in the error for a spec that uses them."""

DEFAULT_TIMEOUT = 3600
MAX_TIMEOUT = 3600
FILE_EXISTS_BEHAVIORS: tuple[str, ...] = ("OVERWRITE", "RETAIN")
PERMISSION_TYPES: tuple[str, ...] = ("file", "directory")
APPSPEC_NAMES: tuple[str, ...] = ("appspec.yml", "appspec.yaml")

_TOP_KEYS = ("version", "os", "files", "permissions", "hooks", "file_exists_behavior")
_HOOK_KEYS = ("location", "timeout", "runas")
_FILE_KEYS = ("source", "destination")
_PERMISSION_KEYS = ("object", "pattern", "except", "owner", "group", "mode", "type")
_UNSUPPORTED_PERMISSION_KEYS = ("acls", "context")
_MODE_RE = re.compile(r"[0-7]{1,4}")


@dataclass(frozen=True)
class Hook:
    """One script run at a lifecycle event; ``location`` is relative to the release root."""

    location: str
    timeout: int = DEFAULT_TIMEOUT
    runas: str | None = None


@dataclass(frozen=True)
class FileMapping:
    """Copy ``source`` (relative to the release root, ``.`` = all of it) to ``destination``.

    As in CodeDeploy, a directory source copies its *contents* into ``destination``; a file
    source is copied *into* the directory ``destination`` under its own name.
    """

    source: str
    destination: str


@dataclass(frozen=True)
class Permission:
    """Ownership and mode to set on installed paths at or below ``object``.

    ``pattern`` (``**`` = everything below, recursively; otherwise a ``*`` glob on the names of
    the direct children) and ``except_`` (globs on direct children's names) select the paths,
    ``type`` restricts them to files and/or directories. ``mode`` is an octal string.
    """

    object: str
    pattern: str = "**"
    except_: tuple[str, ...] = ()
    owner: str | None = None
    group: str | None = None
    mode: str | None = None
    type: tuple[str, ...] = PERMISSION_TYPES


@dataclass(frozen=True)
class AppSpec:
    """A validated appspec. ``hooks`` holds only the events the release defines.

    ``file_exists_behavior`` is CodeDeploy's top-level key of that name (an addition to the
    original interface so appspec files that set it still parse); shoal's default is OVERWRITE.
    """

    version: str
    os: str
    files: tuple[FileMapping, ...] = ()
    permissions: tuple[Permission, ...] = ()
    hooks: Mapping[str, tuple[Hook, ...]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    file_exists_behavior: str = "OVERWRITE"
    warnings: tuple[str, ...] = field(default=(), compare=False)
    """What the spec asks for that never takes effect (as with the CodeDeploy agent, which
    ignores it silently): shown to the operator at ``release build``."""


class _Parser:
    """Walks the loaded YAML document; every error names ``source`` and the key path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def fail(self, path: str, problem: str) -> NoReturn:
        raise AppSpecError(self._where(path) + problem)

    def warn(self, path: str, problem: str) -> None:
        self.warnings.append(self._where(path) + problem)

    def _where(self, path: str) -> str:
        return f"{self.source}: {path}: " if path else f"{self.source}: "

    def mapping(self, value: object, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """A mapping; unknown keys are ignored with a warning, as the agent ignores them."""
        if not isinstance(value, dict):
            subject = "" if path else "the document "
            self.fail(path, f"{subject}must be a mapping, not {_kind(value)}")
        for key in value:
            if key not in allowed:
                self.warn(
                    path,
                    f"unknown key {key!r} is ignored (expected one of: {', '.join(allowed)})",
                )
        return {k: v for k, v in value.items() if k in allowed}

    def sequence(self, value: object, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"must be a list, not {_kind(value)}")
        return value

    def string(self, value: object, path: str, what: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"{what} must be a non-empty string")
        return value.strip()

    def inside(self, value: object, path: str, what: str, *, root_ok: bool = True) -> str:
        """A path inside the release: leading '/' means the release root, as in CodeDeploy."""
        text = self.string(value, path, what)
        normal = posixpath.normpath(text.lstrip("/") or ".")
        if normal == ".." or normal.startswith("../"):
            self.fail(path, f"{what} {text!r} points outside the release")
        if normal == "." and not root_ok:
            self.fail(path, f"{what} {text!r} must name a file in the release")
        return normal

    def absolute(self, value: object, path: str, what: str) -> str:
        text = self.string(value, path, what)
        if not text.startswith("/"):
            self.fail(path, f"{what} {text!r} must be an absolute path")
        return posixpath.normpath(text)

    def document(self, doc: object) -> AppSpec:
        if doc is None:
            self.fail("", "the document is empty")
        if isinstance(doc, dict) and "Resources" in doc:
            self.fail(
                "Resources",
                "this is an ECS or Lambda appspec; shoal runs EC2/On-Premises appspecs "
                "(version, os, files, permissions, hooks)",
            )
        top = self.mapping(doc, "", _TOP_KEYS)
        if "version" not in top:
            self.fail("version", "missing (must be 0.0)")
        if "os" not in top:
            self.fail("os", "missing (must be linux)")
        version = top["version"]
        if isinstance(version, bool) or version not in (0, "0.0"):
            self.fail("version", f"{version!r} is not supported (must be 0.0)")
        if top["os"] == "windows":
            self.fail(
                "os", "'windows' is not supported: shoal deploys to linux hosts only (os: linux)"
            )
        if top["os"] != "linux":
            self.fail("os", f"{top['os']!r} is not supported (shoal deploys to linux only)")
        behavior = top.get("file_exists_behavior", "OVERWRITE")
        if behavior not in FILE_EXISTS_BEHAVIORS:
            hint = ""
            if behavior == "DISALLOW":
                hint = " (shoal does not track which files earlier releases installed)"
            choices = ", ".join(FILE_EXISTS_BEHAVIORS)
            self.fail("file_exists_behavior", f"{behavior!r} is not supported{hint}; use {choices}")
        entries = self.sequence(top.get("files"), "files")
        files = tuple(self.file(e, f"files[{i}]") for i, e in enumerate(entries))
        entries = self.sequence(top.get("permissions"), "permissions")
        permissions = [self.permission(e, f"permissions[{i}]") for i, e in enumerate(entries)]
        hooks = self.hooks(top.get("hooks"))
        return AppSpec(
            version="0.0",
            os="linux",
            files=files,
            permissions=tuple(p for p in permissions if p is not None),
            hooks=hooks,
            file_exists_behavior=behavior,
            warnings=tuple(self.warnings),
        )

    def file(self, entry: object, path: str) -> FileMapping:
        data = self.mapping(entry, path, _FILE_KEYS)
        for key in _FILE_KEYS:
            if key not in data:
                self.fail(path, f"{key!r} is required")
        return FileMapping(
            source=self.inside(data["source"], path, "'source'"),
            destination=self.absolute(data["destination"], path, "'destination'"),
        )

    def hooks(self, value: object) -> Mapping[str, tuple[Hook, ...]]:
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, dict):
            self.fail("hooks", f"must be a mapping of lifecycle events, not {_kind(value)}")
        hooks: dict[str, tuple[Hook, ...]] = {}
        for event, entries in value.items():
            path = f"hooks.{event}"
            if event in LEGACY_EVENTS:
                self.fail(path, f"{event!r} is an old name: use {LEGACY_EVENTS[event]!r}")
            if event not in LIFECYCLE_EVENTS and event not in AGENT_EVENTS:
                self.fail(
                    path,
                    f"unknown lifecycle event {event!r} "
                    f"(expected one of: {', '.join(LIFECYCLE_EVENTS)})",
                )
            if entries is not None and not isinstance(entries, list):
                self.fail(path, f"must be a list of scripts, not {_kind(entries)}")
            scripts = tuple(self.hook(e, f"{path}[{i}]") for i, e in enumerate(entries or ()))
            if event in AGENT_EVENTS:
                if scripts:
                    self.warn(
                        path,
                        f"{event!r} is the agent's own step: its {len(scripts)} script(s) "
                        "never run and are ignored",
                    )
                continue
            hooks[event] = scripts
        return MappingProxyType(hooks)

    def hook(self, entry: object, path: str) -> Hook:
        data = self.mapping(entry, path, _HOOK_KEYS)
        if "location" not in data:
            self.fail(path, "'location' is required")
        timeout = data.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            self.fail(path, "'timeout' must be an integer number of seconds")
        if not 0 < timeout <= MAX_TIMEOUT:
            self.fail(path, f"'timeout' {timeout} must be between 1 and {MAX_TIMEOUT} seconds")
        runas = data.get("runas")
        return Hook(
            location=self.inside(data["location"], path, "'location'", root_ok=False),
            timeout=int(timeout),
            runas=None if runas is None else self.string(runas, path, "'runas'"),
        )

    def permission(self, entry: object, path: str) -> Permission | None:
        """One entry; None (with a warning) for a relative object, which matches nothing."""
        if isinstance(entry, dict):
            for key in _UNSUPPORTED_PERMISSION_KEYS:
                if key in entry:
                    self.fail(path, f"{key!r} is not supported by shoal")
        data = self.mapping(entry, path, _PERMISSION_KEYS)
        if "object" not in data:
            self.fail(path, "'object' is required")
        obj = self.string(data["object"], path, "'object'")
        pattern = self.string(data.get("pattern", "**"), path, "'pattern'")
        if pattern != "**" and "/" in pattern:
            self.fail(path, f"'pattern' {pattern!r} must match names, not paths")
        excepts = self.sequence(data.get("except"), f"{path}.except")
        types = data.get("type", list(PERMISSION_TYPES))
        if not isinstance(types, list) or not types:
            self.fail(path, "'type' must be a non-empty list of: file, directory")
        for kind in types:
            if kind not in PERMISSION_TYPES:
                self.fail(path, f"'type' {kind!r} is not one of: file, directory")
        owner, group = data.get("owner"), data.get("group")
        mode = None if data.get("mode") is None else self.mode(data["mode"], path)
        if not obj.startswith("/"):
            # The agent compares objects with the absolute paths it installs: a relative one
            # matches nothing, so the entry silently has no effect. shoal does the same, aloud.
            self.warn(
                path,
                f"'object' {obj!r} is a relative path; permissions apply to installed paths "
                "(absolute, like files[].destination), so this entry matches nothing and "
                "is ignored",
            )
            return None
        return Permission(
            object=self.absolute(obj, path, "'object'"),
            pattern=pattern,
            except_=tuple(self.string(e, f"{path}.except", "each entry") for e in excepts),
            owner=None if owner is None else self.string(owner, path, "'owner'"),
            group=None if group is None else self.string(group, path, "'group'"),
            mode=mode,
            type=tuple(dict.fromkeys(types)),
        )

    def mode(self, value: object, path: str) -> str:
        """CodeDeploy's mode: 1-4 octal digits, written as a YAML number or string."""
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.fail(path, "'mode' must be octal digits such as 644 or 4755")
        # YAML 1.1 reads 0644 as the octal number 420; LiteralInt keeps what was written, so
        # 'mode: 0644' means 0644 (CodeDeploy would have used the decimal digits "420").
        text = value.text if isinstance(value, LiteralInt) else str(value).strip()
        if not _MODE_RE.fullmatch(text):
            self.fail(path, f"'mode' {text!r} must be 1 to 4 octal digits such as 644 or 4755")
        return text.zfill(3)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, int) and not isinstance(value, bool):
        return "an int"  # not "LiteralInt"
    return f"a {type(value).__name__}"


def parse_appspec(text: str, *, source: str = "appspec.yml") -> AppSpec:
    """Parse and validate appspec text; AppSpecError with a one-line message on any problem."""
    try:
        doc = load_yaml(text)
    except YamlError as exc:
        raise AppSpecError(f"{source}: {exc}") from exc
    return _Parser(source).document(doc)


def load_appspec(release_root: Path) -> AppSpec:
    """Read ``appspec.yml`` (or ``appspec.yaml``) at the root of an unpacked release."""
    for name in APPSPEC_NAMES:
        path = release_root / name
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise AppSpecError(f"{name}: cannot be read: {exc}") from exc
            return parse_appspec(text, source=name)
    raise AppSpecError(f"the release has no {' or '.join(APPSPEC_NAMES)} at its root")
