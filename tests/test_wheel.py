"""The package as a user installs it: build the wheel, install it into a fresh virtualenv outside
the source tree, and run the console scripts and ``shoal demo`` from there; and the peer-only
install (the wheel without the ``seeder`` extra), which must run ``shoal-peer`` and have ``shoal``
name the missing extra.

The build runs on a copy of the sources in a temporary directory (``pip wheel`` builds in place and
would leave ``build/`` and ``*.egg-info`` in the tree). One virtualenv of each kind per test
session: installing the dependencies takes most of the time.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from seeder.wheelhouse import peer_set
from tests.shoal_wheels import PACKAGE_ROOTS, SOURCE, build_wheel, clean_env, run

# One worker builds the wheel and its virtualenvs once (session fixtures), and runs them all.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("wheel")]

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


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    outside: Path  # a working directory outside the source tree
    env: dict[str, str]

    def run(self, program: str, *args: str, timeout: float) -> str:
        """Run a program of the virtualenv from outside the source tree."""
        return run([str(self.venv / "bin" / program), *args], self.outside, self.env, timeout)


def _source_modules() -> set[str]:
    """Dotted names of every module and package under the package roots of the source tree."""
    names = set()
    for root in PACKAGE_ROOTS:
        for path in (SOURCE / root).rglob("*.py"):
            parts = path.relative_to(SOURCE).with_suffix("").parts
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel-build"))


def _install(tmp: Path, wheel: Path, peer_only: bool = False) -> Installed:
    """``pip install`` of the wheel into a fresh virtualenv; ``peer_only``: the wheel without
    its dependencies, then the peer set of them (what README says a peer-only host does)."""
    env = clean_env()
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp, env, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    if peer_only:
        run([*pip, "--no-deps", str(wheel)], tmp, env, 900)
        run([*pip, *peer_set(_requires(wheel))], tmp, env, 900)
    else:
        run([*pip, str(wheel)], tmp, env, 900)
    outside = tmp / "cwd"
    outside.mkdir()
    return Installed(wheel, venv, outside, env)


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The whole of shoal: ``pip install`` of the wheel."""
    return _install(tmp_path_factory.mktemp("full"), wheel)


@pytest.fixture(scope="session")
def peer_only(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """What a peer-only host installs: the wheel without dependencies, then the peer set."""
    return _install(tmp_path_factory.mktemp("peer-only"), wheel, peer_only=True)


def _requires(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return [
            line.split(":", 1)[1].strip()
            for line in zf.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]


def test_wheel_holds_every_module_and_the_example_app(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
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


def test_wheel_holds_the_systemd_units(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for unit in (SOURCE / "deploy" / "systemd").glob("*.service"):
            name = f"seeder/deploy/systemd/{unit.name}"
            assert name in names, f"{name} is not in the wheel"
            assert zf.read(name) == unit.read_bytes(), f"{name} differs from deploy/systemd/"


# Every subcommand group of `shoal`, as the installed parser knows them.
SUBCOMMANDS = """
import argparse
from seeder.cli import build_parser
for action in build_parser()._actions:
    if isinstance(action, argparse._SubParsersAction):
        for name, sub in action.choices.items():
            print(name)
            for inner in sub._actions:
                if isinstance(inner, argparse._SubParsersAction):
                    for child in inner.choices:
                        print(name, child)
"""


def test_every_shoal_command_answers_help(installed: Installed) -> None:
    commands = [
        line.split() for line in installed.run("python", "-c", SUBCOMMANDS, timeout=60).splitlines()
    ]
    groups = {c[0] for c in commands}
    assert {"seeder", "release", "rollout", "hosts", "demo"} <= groups, groups
    for command in commands:
        out = installed.run("shoal", *command, "--help", timeout=60)
        assert f"usage: shoal {' '.join(command)}" in out, (command, out)


def test_peer_only_install_runs_the_peer_and_shoal_names_what_is_missing(
    peer_only: Installed,
) -> None:
    listed = peer_only.run("python", "-m", "pip", "list", "--format=freeze", timeout=120).lower()
    for dist in ("rich", "h11", "paramiko"):
        assert f"{dist}==" not in listed, f"a peer-only install pulled in {dist}"
    assert "usage: shoal-peer" in peer_only.run("shoal-peer", "--help", timeout=60)
    assert "usage: shoal-peer run" in peer_only.run("shoal-peer", "run", "--help", timeout=60)
    # Every module of the peer side imports without the seeder's dependencies.
    lines = peer_only.run("python", "-c", IMPORT_PEER_SIDE, timeout=120).splitlines()
    expected = {n for n in _source_modules() if n.split(".")[0] in ("common", "peer")}
    assert set(lines) == expected
    proc = subprocess.run(
        [str(peer_only.venv / "bin" / "shoal"), "--help"],
        cwd=peer_only.outside,
        env=peer_only.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc
    assert "install shoal with its dependencies" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


IMPORT_PEER_SIDE = """
import importlib, pkgutil
import common, peer
for pkg in (common, peer):
    print(pkg.__name__)
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
        print(info.name)
"""
