"""The dependency rule: seeder and peer never import each other; common imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"seeder": {"peer"}, "peer": {"seeder"}, "common": {"seeder", "peer"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_dependency_rule(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found in {package}/"
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_packages(f) & FORBIDDEN[package]) for f in files
    }
    assert {f: bad for f, bad in offenders.items() if bad} == {}


def test_only_the_adapter_imports_libtorrent() -> None:
    users = {
        str(f.relative_to(ROOT).parent)
        for pkg in ("common", "seeder", "peer")
        for f in sorted((ROOT / pkg).rglob("*.py"))
        if "libtorrent" in imported_packages(f)
    }
    assert users == {"common/torrent"}
