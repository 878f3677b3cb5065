"""The shoal upgrade release: a wheelhouse as a deterministic archive, its checks, its uploads."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from common.archive import unpack
from common.errors import BuildError, ConfigError
from common.install_layout import install_id
from common.release import Manifest
from seeder.upgrade_release import META, build_upgrade, wheel_version
from seeder.upgrades import Uploads

TRACKER = "http://127.0.0.1:7701/announce"


def _wheel(directory: Path, name: str, body: bytes = b"x") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("payload", body)
    return path


@pytest.fixture
def wheels(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "wheels"
    return {
        p.name: p
        for p in (
            _wheel(src, "shoal-0.2.0-py3-none-any.whl", b"shoal"),
            _wheel(src, "trio-0.35.0-py3-none-any.whl", b"trio"),
        )
    }


def test_same_wheels_same_release_and_the_archive_holds_them(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    one = build_upgrade(wheels, releases_dir=tmp_path / "a", tracker_url=TRACKER)
    two = build_upgrade(wheels, releases_dir=tmp_path / "b", tracker_url=TRACKER)
    assert one.manifest == two.manifest
    mf = one.manifest
    assert (mf.app, mf.version, mf.kind) == ("shoal", "0.2.0", "shoal")
    assert mf.release_id.startswith("shoal-0.2.0-")
    archive = one.directory / mf.archive
    assert archive.read_bytes() == (two.directory / mf.archive).read_bytes()
    # A peer unpacks it with the same code as an app release.
    unpack(archive, tmp_path / "unpacked")
    meta = json.loads((tmp_path / "unpacked" / META).read_text())
    assert sorted((tmp_path / "unpacked" / "wheels").iterdir()) == sorted(
        tmp_path / "unpacked" / "wheels" / n for n in wheels
    )
    assert meta["install_id"] == install_id("0.2.0", meta["wheels"])
    assert Manifest.from_dict(mf.to_dict()) == mf


def test_other_wheels_another_release(wheels: dict[str, Path], tmp_path: Path) -> None:
    one = build_upgrade(wheels, releases_dir=tmp_path / "r", tracker_url=TRACKER)
    other = dict(wheels)
    other["msgpack-1.1.0-py3-none-any.whl"] = _wheel(
        tmp_path / "w2", "msgpack-1.1.0-py3-none-any.whl"
    )
    two = build_upgrade(other, releases_dir=tmp_path / "r", tracker_url=TRACKER)
    assert one.manifest.release_id != two.manifest.release_id


@pytest.mark.parametrize(
    ("names", "error"),
    [
        (["trio-0.35.0-py3-none-any.whl"], "it has no shoal wheel"),
        (
            ["shoal-0.1.0-py3-none-any.whl", "shoal-0.2.0-py3-none-any.whl"],
            "2 shoal wheels (0.1.0, 0.2.0)",
        ),
        (["shoal-0.1.0.tar.gz"], "is not a wheel file name"),
        (["../shoal-0.1.0-py3-none-any.whl"], "is not a wheel file name"),
        (["shoal-py3-none-any.whl"], "is not a valid wheel file name"),
    ],
)
def test_a_wheelhouse_needs_exactly_one_shoal_wheel(names: list[str], error: str) -> None:
    with pytest.raises(BuildError, match=error.replace("(", r"\(").replace(")", r"\)")):
        wheel_version(names)


def test_a_file_that_is_no_zip_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "shoal-0.2.0-py3-none-any.whl"
    fake.write_bytes(b"not a zip")
    with pytest.raises(BuildError, match="not a wheel"):
        build_upgrade({fake.name: fake}, releases_dir=tmp_path / "r", tracker_url=TRACKER)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())  # nothing left


def test_uploads_check_order_size_names_and_digests(tmp_path: Path) -> None:
    uploads = Uploads(tmp_path / "uploads")
    upload = uploads.begin()
    name = "shoal-0.2.0-py3-none-any.whl"
    assert uploads.put(upload, name, 0, b"abc") == 3
    with pytest.raises(ConfigError, match="offset 0, but 3 bytes are stored"):
        uploads.put(upload, name, 0, b"abc")
    assert uploads.put(upload, name, 3, b"def") == 6
    with pytest.raises(BuildError, match="not a wheel file name"):
        uploads.put(upload, "../../etc/passwd", 0, b"x")
    import hashlib

    good = hashlib.sha256(b"abcdef").hexdigest()
    with pytest.raises(BuildError, match="arrived damaged"):
        uploads.files(upload, {name: "0" * 64})
    with pytest.raises(BuildError, match="missing"):
        uploads.files(upload, {name: good, "trio-1-py3-none-any.whl": good})
    assert uploads.files(upload, {name: good}) == {name: tmp_path / "uploads" / upload / name}
    uploads.discard(upload)
    with pytest.raises(ConfigError, match="no upload"):
        uploads.put(upload, name, 0, b"x")


def test_old_uploads_expire(tmp_path: Path) -> None:
    now = [1_000_000_000.0]
    uploads = Uploads(tmp_path / "uploads", clock=lambda: now[0])
    first = uploads.begin()
    now[0] += 2 * 3600 + (tmp_path / "uploads" / first).stat().st_mtime - now[0]
    uploads.begin()
    assert not (tmp_path / "uploads" / first).exists()
