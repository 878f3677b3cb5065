"""Real git remotes for the application tests: a bare repository and a work clone that pushes
to it (fixed identity and dates, so commits are reproducible)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from seeder.samplerepo import GIT_IDENTITY, git
from tests.conftest import make_app_repo


@dataclass
class Remote:
    bare: Path  # the remote the seeder mirrors
    work: Path  # a clone that commits and pushes
    day: int = 1  # each new commit or tag is dated a day after the one before

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def git(self, *args: str) -> str:
        self.day += 1
        date = f"2026-02-{self.day:02d}T00:00:00Z" if self.day < 29 else "2026-03-01T00:00:00Z"
        env = {**os.environ, **GIT_IDENTITY, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        out = subprocess.run(
            ["git", *args], cwd=self.work, env=env, check=True, capture_output=True, text=True
        )
        return out.stdout.strip()

    def commit(self, name: str, text: str, message: str, *, tag: str | None = None) -> str:
        (self.work / name).parent.mkdir(parents=True, exist_ok=True)
        (self.work / name).write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        if tag:
            self.git("tag", "-a", "-m", f"release {tag}", tag)
        return self.git("rev-parse", "HEAD")

    def push(self) -> None:
        git(self.work, "push", "-q", "--all", "origin")
        git(self.work, "push", "-q", "--tags", "origin")
        git(self.bare, "update-server-info")  # for the dumb HTTP remote


def make_remote(root: Path) -> Remote:
    """A bare repository holding the test app (tests/conftest.py make_app_repo) on main."""
    work = make_app_repo(root / "work")
    bare = root / "remote.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(bare))
    git(work, "remote", "add", "origin", str(bare))
    remote = Remote(bare, work)
    remote.push()
    return remote
