"""Shared fixtures: a test app in a real git repo, and a real local fleet of processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from common.appspec import LIFECYCLE_EVENTS
from common.release import Manifest
from seeder.client import IDENTITY_ENV
from seeder.localfleet import LocalFleet, credential_for
from seeder.samplerepo import commit_all
from seeder.store import Store

# A release record for tests of the seeder's bookkeeping (no archive behind it).
MANIFEST = Manifest(
    app="demo",
    version="v1",
    commit="c" * 40,
    size=3,
    digest="d" * 64,
    infohash="ab" * 32,
    archive="demo-v1.tar.zst",
)

HOOK = """#!/bin/sh
set -eu
DATA_DIR="$(dirname "$(dirname "$RELEASE_DIR")")"
echo "$LIFECYCLE_EVENT $RELEASE_ID" >> "$DATA_DIR/events.log"
echo "hook $LIFECYCLE_EVENT of $RELEASE_ID on $(hostname)"
if [ -e "$DATA_DIR/fail-$LIFECYCLE_EVENT" ]; then echo "told to fail"; exit 3; fi
if [ -e "$DATA_DIR/slow-$LIFECYCLE_EVENT" ]; then sleep 3; fi
"""

APPSPEC = """version: 0.0
os: linux
hooks:
""" + "".join(
    f"  {event}:\n    - location: hooks/{event}.sh\n      timeout: 30\n"
    for event in LIFECYCLE_EVENTS
)


def make_app_repo(path: Path, version: str = "1") -> Path:
    """A git repo whose every hook appends ``$LIFECYCLE_EVENT $RELEASE_ID`` to events.log."""
    (path / "hooks").mkdir(parents=True)
    (path / "appspec.yml").write_text(APPSPEC)
    for event in LIFECYCLE_EVENTS:
        script = path / "hooks" / f"{event}.sh"
        script.write_text(HOOK)
        script.chmod(0o755)
    (path / "VERSION").write_text(version + "\n")
    commit_all(path, f"version {version}")
    return path


def commit_version(repo: Path, version: str) -> str:
    (repo / "VERSION").write_text(version + "\n")
    return commit_all(repo, f"version {version}")


def shoal(control: object, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``shoal`` CLI against a seeder (a LocalFleet's: with its admin credential)."""
    credential = credential_for(str(control))
    env = {**os.environ, **({IDENTITY_ENV: str(credential)} if credential else {})}
    return subprocess.run(
        [sys.executable, "-m", "seeder.cli", *args, "--seeder", str(control)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A seeder store holding the MANIFEST release record (tests may override it)."""
    s = Store(tmp_path / "seeder.db")
    s.add_release(MANIFEST, b"torrent-bytes", 1.0)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[LocalFleet]:
    local = LocalFleet(tmp_path / "fleet")
    try:
        yield local
    finally:
        await local.stop_all()


def _schedule_rank(item: pytest.Item) -> int:
    if item.get_closest_marker("slow"):
        return 0
    return 1 if item.get_closest_marker("integration") else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, then the other integration tests, then the unit tests. pytest-xdist
    hands tests to its workers in this order, so the minute-long ones start at once and the
    workers finish together, instead of one of them running a long test alone at the end."""
    items.sort(key=_schedule_rank)
