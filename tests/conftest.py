"""Shared fixtures: a test app in a real git repo, and a real local fleet of processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from seeder.localfleet import LocalFleet

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}

HOOK = """#!/bin/sh
set -eu
DATA_DIR="$(dirname "$(dirname "$RELEASE_DIR")")"
echo "$LIFECYCLE_EVENT $RELEASE_ID" >> "$DATA_DIR/events.log"
echo "hook $LIFECYCLE_EVENT of $RELEASE_ID on $(hostname)"
if [ -e "$DATA_DIR/fail-$LIFECYCLE_EVENT" ]; then echo "told to fail"; exit 3; fi
"""

APPSPEC = """version: 0.0
os: linux
hooks:
""" + "".join(
    f"  {event}:\n    - location: hooks/{event}.sh\n      timeout: 30\n"
    for event in (
        "ApplicationStop",
        "BeforeInstall",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
    )
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def make_app_repo(path: Path, version: str = "1") -> Path:
    """A git repo whose every hook appends ``$LIFECYCLE_EVENT $RELEASE_ID`` to events.log."""
    (path / "hooks").mkdir(parents=True)
    (path / "appspec.yml").write_text(APPSPEC)
    for event in (
        "ApplicationStop",
        "BeforeInstall",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
    ):
        script = path / "hooks" / f"{event}.sh"
        script.write_text(HOOK)
        script.chmod(0o755)
    (path / "VERSION").write_text(version + "\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", f"version {version}")
    return path


def commit_version(repo: Path, version: str) -> str:
    (repo / "VERSION").write_text(version + "\n")
    git(repo, "commit", "-qam", f"version {version}")
    return git(repo, "rev-parse", "HEAD")


def shoal(control: object, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``shoal`` CLI against a seeder."""
    return subprocess.run(
        [sys.executable, "-m", "seeder.cli", *args, "--seeder", str(control)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[LocalFleet]:
    local = LocalFleet(tmp_path / "fleet")
    try:
        yield local
    finally:
        await local.stop_all()
