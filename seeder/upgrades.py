"""Control methods that turn an uploaded wheelhouse into a shoal upgrade release.

The seeder builds only from sources it holds, never from a path a client names: the CLI sends the
wheels' bytes (``upgrade.begin``, ``upgrade.put`` in chunks, ``upgrade.build`` with each file's
SHA-256), the seeder checks them and builds the release (seeder/upgrade_release.py), which then
rolls out through the ordinary rollout engine. Uploads live in ``DATA/uploads/<id>/`` and are
removed once built, on failure, or when older than UPLOAD_TTL.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from common.errors import BuildError, ConfigError
from seeder.build import BuiltRelease
from seeder.caller import current_caller
from seeder.upgrade_release import MAX_WHEELS, WHEEL_NAME, build_upgrade

log = logging.getLogger("shoal.seeder.upgrades")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
CHUNK = 1 << 20  # the CLI's chunk size; a put may carry at most MAX_PUT bytes
MAX_PUT = 4 << 20
MAX_UPLOAD = 2 << 30  # bytes one wheelhouse may hold
UPLOAD_TTL = 3600.0


class Uploads:
    def __init__(self, root: Path, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.clock = clock
        self.sizes: dict[str, int] = {}

    def begin(self) -> str:
        self._expire()
        upload_id = secrets.token_hex(8)
        (self.root / upload_id).mkdir(parents=True)
        self.sizes[upload_id] = 0
        return upload_id

    def directory(self, upload_id: str) -> Path:
        if upload_id not in self.sizes:
            raise ConfigError(f"no upload {upload_id!r} in progress (it expired or was built)")
        return self.root / upload_id

    def put(self, upload_id: str, name: str, offset: int, data: bytes) -> int:
        if not WHEEL_NAME.match(name):
            raise BuildError(f"{name!r} is not a wheel file name")
        if len(data) > MAX_PUT:
            raise ConfigError(f"an upload chunk carries at most {MAX_PUT} bytes")
        path = self.directory(upload_id) / name
        have = path.stat().st_size if path.exists() else 0
        if offset != have:
            raise ConfigError(f"{name}: chunk at offset {offset}, but {have} bytes are stored")
        if self.sizes[upload_id] + len(data) > MAX_UPLOAD:
            raise BuildError(f"the wheelhouse is larger than {MAX_UPLOAD} bytes")
        if not path.exists() and len(list(path.parent.iterdir())) >= MAX_WHEELS:
            raise BuildError(f"the wheelhouse has more than {MAX_WHEELS} files")
        with path.open("ab") as f:
            f.write(data)
        self.sizes[upload_id] += len(data)
        return have + len(data)

    def files(self, upload_id: str, digests: dict[str, str]) -> dict[str, Path]:
        """The uploaded files, checked against the digests the client computed."""
        directory = self.directory(upload_id)
        stored = {p.name: p for p in directory.iterdir()}
        if set(stored) != set(digests):
            missing = sorted(set(digests) - set(stored))
            extra = sorted(set(stored) - set(digests))
            raise BuildError(
                f"the upload does not match its list (missing {missing}, extra {extra})"
            )
        for name, path in stored.items():
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            if sha != digests[name]:
                raise BuildError(
                    f"{name} arrived damaged (sha256 {sha[:12]}..., expected "
                    f"{digests[name][:12]}...)"
                )
        return stored

    def discard(self, upload_id: str) -> None:
        self.sizes.pop(upload_id, None)
        shutil.rmtree(self.root / upload_id, ignore_errors=True)

    def _expire(self) -> None:
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if self.clock() - path.stat().st_mtime > UPLOAD_TTL:
                self.discard(path.name)


def upgrade_methods(
    uploads: Uploads,
    build: Callable[[Callable[[], BuiltRelease]], Awaitable[dict[str, Any]]],
    releases_dir: Path,
    tracker_url: str,
    piece_size: int,
) -> dict[str, Handler]:
    """``upgrade.begin``, ``upgrade.put`` and ``upgrade.build``; ``build`` registers a built
    release the way ``release.build`` does (store, seeding) and answers like it."""

    async def begin(params: dict[str, Any]) -> dict[str, Any]:
        return {"upload_id": uploads.begin(), "chunk": CHUNK}

    async def put(params: dict[str, Any]) -> dict[str, Any]:
        upload_id, name = str(params["upload_id"]), str(params["name"])
        data = params["data"]
        if not isinstance(data, bytes):
            raise ConfigError("upgrade.put: data must be bytes")
        size = await trio.to_thread.run_sync(
            uploads.put, upload_id, name, int(params["offset"]), data
        )
        return {"size": size}

    async def build_it(params: dict[str, Any]) -> dict[str, Any]:
        upload_id = str(params["upload_id"])
        digests = {str(k): str(v) for k, v in dict(params["files"]).items()}
        try:
            files = await trio.to_thread.run_sync(uploads.files, upload_id, digests)
            result = await build(
                lambda: build_upgrade(
                    files, releases_dir=releases_dir, tracker_url=tracker_url, piece_size=piece_size
                )
            )
        finally:
            uploads.discard(upload_id)
        log.info(
            "shoal upgrade release %s (%d wheels) by %s",
            result["release"]["release_id"],
            len(digests),
            current_caller().name,
        )
        return result

    return {"upgrade.begin": begin, "upgrade.put": put, "upgrade.build": build_it}
