"""Test helper: wheels of the current source tree, optionally as another version of shoal.

The build runs on a copy of the sources in a temporary directory (``pip wheel`` builds in place
and would leave ``build/`` and ``*.egg-info`` in the tree). A *new version* is the same tree with
``version`` bumped in its pyproject.toml, and optionally files changed (a broken version).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent
PACKAGE_ROOTS = ("common", "seeder", "peer")
# What the build reads: the project file, the readme it names, and the package roots.
BUILD_INPUTS = ("pyproject.toml", "README.md", *PACKAGE_ROOTS)


def clean_env() -> dict[str, str]:
    """The environment without this interpreter's venv or source path leaking in."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run(args: list[str], cwd: Path, env: Mapping[str, str], timeout: float) -> str:
    """Run one program to its end (bounded); its stdout, or a failure showing all it printed."""
    proc = subprocess.run(
        args, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def build_wheel(
    work: Path, *, version: str | None = None, patch: Mapping[str, str] | None = None
) -> Path:
    """A wheel of the source tree (as ``version``, with ``patch``'s files replaced) in ``work``."""
    src = work / "src"
    src.mkdir(parents=True)
    for name in BUILD_INPUTS:
        if (SOURCE / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(SOURCE / name, src / name, ignore=ignore)
        else:
            shutil.copy2(SOURCE / name, src / name)
    if version is not None:
        project = src / "pyproject.toml"
        text, count = re.subn(
            r'^version = "[^"]*"$', f'version = "{version}"', project.read_text(), flags=re.M
        )
        assert count == 1, "no version line in pyproject.toml"
        project.write_text(text)
    for name, text in (patch or {}).items():
        (src / name).write_text(text)
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)]
    run(pip, work, clean_env(), timeout=300)
    (built,) = dist.glob("shoal-*.whl")
    return built
