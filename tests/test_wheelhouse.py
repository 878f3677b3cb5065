"""The wheelhouse bundle: platform tags (pure) and a real, deterministic build."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import pytest

from common.errors import BuildError
from seeder.wheelhouse import Target, build_bundle


def test_platform_tags_go_down_from_the_hosts_glibc() -> None:
    tags = Target("3.11", "x86_64", "2.28").platforms()
    assert tags[0] == "manylinux_2_28_x86_64"
    assert "manylinux_2_17_x86_64" in tags and "manylinux_2_29_x86_64" not in tags
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux2014_aarch64" not in Target("3.11", "aarch64", "2.12").platforms()


def test_a_host_without_glibc_is_refused_clearly() -> None:
    with pytest.raises(BuildError, match="without glibc"):
        Target("3.11", "x86_64", None).platforms()


def test_cache_key_names_python_machine_and_libc() -> None:
    assert Target("3.11", "aarch64", "2.31").key == "cp311-aarch64-glibc2.31"


@pytest.mark.integration
@pytest.mark.slow
def test_same_code_same_bundle(tmp_path: Path) -> None:
    """Two builds in two caches give the same wheels (so an unchanged host stays unchanged)."""
    v = sys.version_info
    target = Target(f"{v.major}.{v.minor}", "x86_64", "2.17")
    one = build_bundle(tmp_path / "a", target)
    two = build_bundle(tmp_path / "b", target)
    assert one.install_id == two.install_id
    assert build_bundle(tmp_path / "a", target).archive == one.archive  # cached
    with tarfile.open(one.archive) as tar:
        names = tar.getnames()
    assert any(n.startswith("shoal-") for n in names)
    assert any(n.startswith("libtorrent-") for n in names)
    assert set(names) == set(one.wheels)
