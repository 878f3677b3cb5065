"""Checks of a parsed appspec against the release's files: hook scripts and file sources exist.

Split out of :mod:`common.appspec` (one concept per file): parsing validates the document on its
own; these checks need the release tree too, given as predicates on paths relative to the
release root (so they work on a directory as well as on an archive's member list). ``release
build`` runs them, so that a spec naming a missing script or source fails the build, not an
activation after the live release was stopped.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from common.appspec import AppSpec
from common.errors import AppSpecError


def check_hook_locations(
    spec: AppSpec, exists: Callable[[str], bool], *, source: str = "appspec.yml"
) -> None:
    """Check that every hook location is a file in the release tree, before anything runs.

    ``exists`` says whether a path, relative to the release root, is a file there (so the check
    works on a directory as well as on an archive's member list). A location is one script, as
    in CodeDeploy: a command with arguments is not a file and is refused with a hint. Locations
    that would escape the root are refused even though :func:`parse_appspec` never produces
    them, since an AppSpec can also be built by hand. All problems are named in one message.
    """
    problems: list[str] = []
    for event, hooks in spec.hooks.items():
        for i, hook in enumerate(hooks):
            location = hook.location
            where = f"hooks.{event}[{i}]"
            normal = posixpath.normpath(location) if location else ""
            if not location or location.startswith("/") or normal.split("/")[0] == "..":
                problems.append(f"{where}: {location!r} points outside the release")
            elif not exists(normal):
                problems.append(f"{where}: {location!r} {_not_a_file(location, exists)}")
    if problems:
        raise AppSpecError(f"{source}: " + "; ".join(problems))


def _not_a_file(location: str, exists: Callable[[str], bool]) -> str:
    words = location.split()
    if len(words) > 1:
        script = posixpath.normpath(words[0])
        hint = f" ({words[0]!r} is)" if exists(script) else ""
        return (
            "is not a file in the release: a location names one script, without arguments"
            f"{hint}; put the arguments inside the script"
        )
    return "is not a file in the release"


def check_file_sources(
    spec: AppSpec, is_file: Callable[[str], bool], is_dir: Callable[[str], bool], *, source: str
) -> None:
    """Check that every ``files`` source is in the release (the agent fails the Install step
    on a missing one, after the live release was stopped); all problems in one message."""
    problems = [
        f"files[{i}]: source {mapping.source!r} is not in the release"
        for i, mapping in enumerate(spec.files)
        if mapping.source != "." and not is_file(mapping.source) and not is_dir(mapping.source)
    ]
    if problems:
        raise AppSpecError(f"{source}: " + "; ".join(problems))
