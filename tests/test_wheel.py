"""The package as a user installs it: build the wheel, install it into a fresh virtualenv outside
the source tree, and run the console scripts and ``shoal demo`` from there.

The build runs on a copy of the sources in a temporary directory (``pip wheel`` builds in place and
would leave ``build/`` and ``*.egg-info`` in the tree). One virtualenv per test session: installing
the dependencies takes most of the time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).resolve().parent.parent
# What the build reads: the project file, the readme it names, and the package roots.
PACKAGE_ROOTS = ("common", "seeder", "peer")
BUILD_INPUTS = ("pyproject.toml", "README.md", *PACKAGE_ROOTS)
EXAMPLE_APP = SOURCE / "seeder" / "example_app"

# Every module of the installed packages, imported by the installed interpreter.
IMPORT_ALL = """
import importlib, pkgutil, sys
import common, peer, seeder
for pkg in (common, peer, seeder):
    print(pkg.__name__)
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
        print(info.name)
print("FILE", seeder.__file__)
"""


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run one program to its end (bounded); its stdout, or a failure showing all it printed."""
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    outside: Path  # a working directory outside the source tree
    env: dict[str, str]

    def run(self, program: str, *args: str, timeout: float) -> str:
        """Run a program of the virtualenv from outside the source tree."""
        return _run([str(self.venv / "bin" / program), *args], self.outside, self.env, timeout)


def _source_modules() -> set[str]:
    """Dotted names of every module and package under the package roots of the source tree."""
    names = set()
    for root in PACKAGE_ROOTS:
        for path in (SOURCE / root).rglob("*.py"):
            parts = path.relative_to(SOURCE).with_suffix("").parts
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (SOURCE / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(SOURCE / name, src / name, ignore=ignore)
        else:
            shutil.copy2(SOURCE / name, src / name)
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "-q", "-w", str(dist), str(src)], tmp, env, timeout=300)
    (wheel,) = dist.glob("shoal-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp, env, timeout=120)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], tmp, env, 900)
    outside = tmp / "cwd"
    outside.mkdir()
    return Installed(wheel, venv, outside, env)


def test_wheel_holds_every_module_and_the_example_app(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as zf:
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
    for root in PACKAGE_ROOTS:
        for path in (SOURCE / root).rglob("*.py"):
            assert path.relative_to(SOURCE).as_posix() in modes, f"{path} is not in the wheel"
    app = [p for p in EXAMPLE_APP.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert app, "the example app is missing from the source tree"
    for path in app:
        name = path.relative_to(SOURCE).as_posix()
        assert name in modes, f"{name} is not in the wheel"
        # The peer refuses to run a hook that is not executable.
        assert modes[name] & 0o111 == path.stat().st_mode & 0o111, f"{name} lost its mode bits"


def test_every_installed_module_imports(installed: Installed) -> None:
    lines = installed.run("python", "-c", IMPORT_ALL, timeout=120).splitlines()
    (where,) = [line.removeprefix("FILE ") for line in lines if line.startswith("FILE ")]
    # The installed copy, not the source tree.
    assert Path(where).resolve().is_relative_to(installed.venv.resolve()), where
    imported = {line for line in lines if not line.startswith("FILE ")}
    assert imported == _source_modules()


@pytest.mark.parametrize("script", ["shoal", "shoal-peer"])
def test_console_scripts_answer_help(installed: Installed, script: str) -> None:
    assert "usage:" in installed.run(script, "--help", timeout=60)


def test_demo_runs_from_the_installed_package(installed: Installed) -> None:
    out = installed.run("shoal", "demo", timeout=240)
    assert "demo: 3/3 hosts live on" in out, out
    assert "rollout succeeded" in out, out
