"""Small git repositories of sample apps, for the demo, the tests and the benchmark.

Commits use a fixed identity and date, so the same files give the same commit (and therefore the
same release id) on every machine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "shoal sample",
    "GIT_AUTHOR_EMAIL": "sample@shoal.invalid",
    "GIT_COMMITTER_NAME": "shoal sample",
    "GIT_COMMITTER_EMAIL": "sample@shoal.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with the fixed identity; its stdout."""
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_IDENTITY},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit_all(repo: Path, message: str, *, tag: str | None = None) -> str:
    """Commit every file in ``repo`` (creating the repository if needed); the commit sha."""
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    if tag:
        git(repo, "tag", tag)
    return git(repo, "rev-parse", "HEAD")
