"""What an operator may name to build: branches, tags and commits of a mirror, and resolving a
name to exactly one commit. Pure logic over what :mod:`seeder.git` read.

A ref resolves to one commit or is refused: ``main`` (a branch), ``v1.2`` (a tag), a full or
short (at least 4 hex digits) commit id, or a full ref name (``refs/tags/v1.2``), each optionally
followed by git's ancestry suffixes (``main~3``, ``v1.2^``). When a name
fits several things that name different commits (a branch and a tag of the same name, a short
sha shared by several commits, a branch named like a sha prefix), the refusal lists them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from common.errors import ConfigError

MIN_SHORT_SHA = 4
SHORT = 12  # the short sha shown and used as a version


class RefError(ConfigError):
    """A ref that names no commit, or more than one."""


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    email: str
    authored_at: float
    committed_at: float
    subject: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "short": self.sha[:SHORT]}


@dataclass(frozen=True)
class Ref:
    name: str  # full name: refs/heads/main, refs/tags/v1
    commit: str
    created: float = 0.0  # tags: the tag's (annotated) or commit's (light) date
    info: Commit | None = None  # the commit it names

    @property
    def short(self) -> str:
        return self.name.removeprefix("refs/heads/").removeprefix("refs/tags/")

    @property
    def kind(self) -> str:
        return "branch" if self.name.startswith("refs/heads/") else "tag"


@dataclass(frozen=True)
class RefTable:
    refs: tuple[Ref, ...]

    def branches(self) -> list[Ref]:
        return [r for r in self.refs if r.kind == "branch"]

    def tags(self) -> list[Ref]:
        """Newest first (as git sorted them: by tag date)."""
        return [r for r in self.refs if r.kind == "tag"]

    def get(self, name: str) -> Ref | None:
        return next((r for r in self.refs if r.name == name), None)

    def tags_at(self, commit: str) -> list[str]:
        """The tags of ``commit``, newest first (the first names a release built from it)."""
        return [r.short for r in self.tags() if r.commit == commit]


@dataclass(frozen=True)
class Resolved:
    """The one commit a ref names, and how: ``kind`` is branch, tag or commit."""

    ref: str
    commit: str
    kind: str
    version: str  # the tag named (or one at the commit), else the short sha

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ANCESTRY = re.compile(r"^(?P<base>[^~^]+)(?P<path>(?:[~^][0-9]{0,4})+)$")


def split_ancestry(ref: str) -> tuple[str, str]:
    """``main~3`` -> (``main``, ``~3``); a ref without ``~``/``^`` -> (ref, "")."""
    found = _ANCESTRY.match(ref)
    if found is None:
        return ref, ""
    return found["base"], found["path"]


def resolve_ref(app: str, ref: str, table: RefTable, shas: list[str]) -> Resolved:
    """Resolve ``ref`` (without an ancestry suffix: see :func:`split_ancestry`) against the
    mirror's refs and the commits whose id starts with it."""
    ref = ref.strip()
    if not ref or ref.startswith("-") or any(c in ref for c in "\0\n :~^?*[\\"):
        raise RefError(f"{ref!r} is not a ref of app {app!r} (a branch, tag or commit id)")
    candidates: dict[str, tuple[str, str]] = {}  # what -> (commit, kind)
    names = [ref] if ref.startswith("refs/") else [f"refs/heads/{ref}", f"refs/tags/{ref}"]
    for name in names:
        found = table.get(name)
        if found is not None:
            candidates[f"{found.kind} {found.short}"] = (found.commit, found.kind)
    lowered = ref.lower()
    for sha in shas:
        if sha.startswith(lowered) and len(lowered) >= MIN_SHORT_SHA:
            candidates[f"commit {sha[:SHORT]}"] = (sha, "commit")
    commits = {commit for commit, _ in candidates.values()}
    if not candidates:
        hint = f" (a short sha needs at least {MIN_SHORT_SHA} hex digits)" if len(ref) < 4 else ""
        raise RefError(
            f"app {app!r} has no branch, tag or commit {ref!r}{hint}; "
            f"`shoal app refs {app}` lists them"
        )
    if len(commits) > 1:
        listed = ", ".join(
            f"{what} ({commit[:SHORT]})" if not what.startswith("commit") else what
            for what, (commit, _) in sorted(candidates.items())
        )
        raise RefError(f"ref {ref!r} of app {app!r} is ambiguous: it names {listed}")
    commit = commits.pop()
    kinds = {kind for c, kind in candidates.values() if c == commit}
    kind = "tag" if "tag" in kinds else "branch" if "branch" in kinds else "commit"
    tag = ref.removeprefix("refs/tags/") if kind == "tag" else None
    at = table.tags_at(commit)
    version = tag or (at[0] if at else commit[:SHORT])
    return Resolved(ref=ref, commit=commit, kind=kind, version=version)
