"""The installed layout shared by ``shoal fleet`` and the peer's self-upgrade."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from common.errors import ConfigError
from common.install_layout import (
    InstallLayout,
    check_version,
    current_version,
    switch_command,
    switch_current,
)


def test_paths_follow_the_prefix_and_data_dir() -> None:
    lay = InstallLayout(PurePosixPath("/srv/h1/opt"), PurePosixPath("/srv/h1/data"))
    assert lay.version_dir("0.1.0-abc") == PurePosixPath("/srv/h1/opt/versions/0.1.0-abc")
    assert lay.program() == PurePosixPath("/srv/h1/opt/current/bin/shoal-peer")
    assert lay.pidfile == PurePosixPath("/srv/h1/data/shoal-peer.pid")
    assert lay.unit == PurePosixPath("/etc/systemd/system/shoal-peer.service")


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../x", "a..b", "-x", "a b"])
def test_version_names_are_plain_directory_names(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a plain name"):
        check_version(bad)


def test_relative_paths_are_refused() -> None:
    with pytest.raises(ConfigError, match="prefix 'opt' must be an absolute path"):
        InstallLayout(PurePosixPath("opt"))


def _install(prefix: Path, version: str) -> None:
    (prefix / "versions" / version / "bin").mkdir(parents=True)
    (prefix / "versions" / version / "INSTALLED").write_text("x\n")


def test_switch_current_is_a_symlink_swap(tmp_path: Path) -> None:
    assert current_version(tmp_path) is None
    _install(tmp_path, "1")
    _install(tmp_path, "2")
    switch_current(tmp_path, "1")
    assert current_version(tmp_path) == "1"
    switch_current(tmp_path, "2")
    assert os.readlink(tmp_path / "current") == "versions/2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "versions"]


def test_switch_refuses_an_incomplete_version(tmp_path: Path) -> None:
    (tmp_path / "versions" / "3").mkdir(parents=True)  # no INSTALLED marker: half-installed
    with pytest.raises(ConfigError, match="not \\(completely\\) installed"):
        switch_current(tmp_path, "3")
    assert current_version(tmp_path) is None


def test_the_remote_switch_command_does_the_same(tmp_path: Path) -> None:
    _install(tmp_path, "1")
    _install(tmp_path, "2")
    for v in ("1", "2"):
        subprocess.run(["sh", "-c", switch_command(PurePosixPath(tmp_path), v)], check=True)
        assert current_version(tmp_path) == v
    assert not (tmp_path / ".current.new").exists()
