"""A release of shoal itself: a wheelhouse (shoal and its dependencies) as a deterministic archive.

The archive is a tar (sorted names, mtime 0, owner 0, mode 0644, no pax headers) compressed with
zstd as :mod:`common.archive` does for apps, so the same wheels always give the same bytes, the
same infohash and the same release id. It holds ``wheels/<file>.whl`` and ``shoal-upgrade.json``
(the version, the install id of the version directory, the wheels' digests). The manifest says
``kind: shoal`` and the version of the shoal wheel; its ``commit`` is the digest of the wheel set
(the same digest ``shoal fleet install`` names its version directories by). Peers install it
(peer/upgrade.py) instead of running hooks.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import zstandard
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from common.errors import BuildError
from common.install_layout import install_id, wheelhouse_digest
from common.release import Manifest
from common.torrent import make_torrent
from seeder.build import BuiltRelease

APP = "shoal"
WHEEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,200}\.whl$")
MAX_WHEELS = 500
LEVEL = 3
META = "shoal-upgrade.json"  # the archive's description of itself (peer/upgrade.py reads it)


def wheel_version(names: list[str]) -> str:
    """The version of the one shoal wheel among ``names`` (BuildError if none or several)."""
    found = []
    for name in names:
        if not WHEEL_NAME.match(name):
            raise BuildError(f"{name!r} is not a wheel file name (NAME-VERSION-...-PLATFORM.whl)")
        try:
            dist, version, _, _ = parse_wheel_filename(name)
        except InvalidWheelFilename as exc:
            raise BuildError(f"{name!r} is not a valid wheel file name: {exc}") from None
        if dist == APP:
            found.append(str(version))
    if len(found) != 1:
        what = "no shoal wheel" if not found else f"{len(found)} shoal wheels ({', '.join(found)})"
        raise BuildError(f"the wheelhouse must hold exactly one shoal wheel; it has {what}")
    return found[0]


def build_upgrade(
    wheels: dict[str, Path], *, releases_dir: Path, tracker_url: str, piece_size: int = 0
) -> BuiltRelease:
    """Build (or find, if identical) the upgrade release of a wheelhouse (file name -> path)."""
    if not wheels:
        raise BuildError("the wheelhouse is empty")
    if len(wheels) > MAX_WHEELS:
        raise BuildError(f"the wheelhouse has {len(wheels)} files; at most {MAX_WHEELS}")
    version = wheel_version(sorted(wheels))
    digests = {}
    for name, path in sorted(wheels.items()):
        if not zipfile.is_zipfile(path):
            raise BuildError(f"{name} is not a wheel (not a zip archive)")
        digests[name] = _sha256(path)
    commit = wheelhouse_digest(digests)
    releases_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=releases_dir))
    try:
        archive = f"{APP}-{version}-{commit[:12]}.tar.zst"
        meta = {
            "kind": APP,
            "version": version,
            "install_id": install_id(version, digests),
            "wheels": digests,
        }
        size, digest = _write_archive(work / archive, wheels, meta)
        torrent, infohash = make_torrent(
            work / archive, tracker_url=tracker_url, piece_size=piece_size
        )
        manifest = Manifest(
            app=APP,
            version=version,
            commit=commit,
            size=size,
            digest=digest,
            infohash=infohash,
            archive=archive,
            kind=APP,
        )
        final = releases_dir / manifest.release_id
        if not final.exists():
            (work / "release.torrent").write_bytes(torrent)
            work.rename(final)
        return BuiltRelease(manifest, torrent, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
    info.uname = info.gname = ""
    return info


def _write_archive(
    dest: Path, wheels: dict[str, Path], meta: Mapping[str, object]
) -> tuple[int, str]:
    """The deterministic tar.zst; (size, "sha256:<hex>")."""
    compressor = zstandard.ZstdCompressor(
        level=LEVEL, write_checksum=True, write_content_size=False, threads=0
    )
    with (
        dest.open("wb") as raw,
        compressor.stream_writer(raw, closefd=False) as out,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar,
    ):
        body = json.dumps(meta, sort_keys=True, indent=1).encode() + b"\n"
        tar.addfile(_member(META, len(body)), io.BytesIO(body))
        dirinfo = _member("wheels", 0)
        dirinfo.type, dirinfo.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(dirinfo)
        for name, path in sorted(wheels.items()):
            with path.open("rb") as f:
                tar.addfile(_member(f"wheels/{name}", path.stat().st_size), f)
    return dest.stat().st_size, f"sha256:{_sha256(dest)}"
