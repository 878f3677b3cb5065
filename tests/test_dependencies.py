"""Each side imports only what its install pulls in: peer/ and common/ the peer set of the
dependencies (what a peer-only host installs, and ``shoal fleet install`` ships), seeder/ all.

Pure: reads the sources' imports (ast) and pyproject.toml; the installs themselves are checked in
tests/test_wheel.py.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from seeder.entry import SEEDER_ONLY
from seeder.wheelhouse import peer_set

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"common", "peer", "seeder"}


def _project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    assert isinstance(project, dict)
    return project


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements if not r.startswith("shoal[")}


def _third_party_imports(*roots: str) -> dict[str, set[str]]:
    """Top-level import name -> the files importing it, for every non-stdlib, non-shoal import."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in (ROOT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    tops = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                for top in tops:
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _distributions(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    mapping = importlib.metadata.packages_distributions()
    out: dict[str, set[str]] = {}
    for name, files in imports.items():
        for dist in mapping.get(name, [name]):
            out.setdefault(dist.lower(), set()).update(files)
    return out


def test_peer_and_common_import_only_the_peer_set() -> None:
    base = _names(peer_set(list(_project()["dependencies"])))  # type: ignore[call-overload]
    used = _distributions(_third_party_imports("peer", "common"))
    extra = {dist: files for dist, files in used.items() if dist not in base}
    assert not extra, f"peer/common import packages a peer-only install lacks: {extra}"


def test_seeder_imports_only_the_dependencies() -> None:
    allowed = _names(list(_project()["dependencies"]))  # type: ignore[call-overload]
    used = _distributions(_third_party_imports("seeder"))
    extra = {dist: files for dist, files in used.items() if dist not in allowed}
    assert not extra, f"seeder/ imports packages `pip install shoal` does not pull in: {extra}"


def test_the_seeder_only_list_names_dependencies() -> None:
    deps = _names(list(_project()["dependencies"]))  # type: ignore[call-overload]
    assert set(SEEDER_ONLY.values()) <= deps
    assert set(SEEDER_ONLY.values()).isdisjoint(_names(peer_set(sorted(deps))))


def test_shipped_systemd_units_are_the_documented_ones() -> None:
    from seeder.units import UNITS, unit_text

    documented = sorted(p.name for p in (ROOT / "deploy" / "systemd").glob("*.service"))
    assert documented == sorted(UNITS)
    for name in UNITS:
        assert unit_text(name) == (ROOT / "deploy" / "systemd" / name).read_text(), (
            f"seeder/deploy/systemd/{name} differs from deploy/systemd/{name}: copy it over"
        )
