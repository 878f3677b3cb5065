"""A release: one build of one app at one commit, and the manifest that describes it.

The manifest travels with every stage command; a peer refuses bytes whose digest does not match.
The release id is derived from the content (``<app>-<version>-<infohash prefix>``), so building the
same commit with the same settings twice gives the same id.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from common.errors import ReleaseError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# What a release carries: an application (appspec hooks), or shoal itself (a wheelhouse that the
# peer installs and restarts into: peer/upgrade.py).
KINDS = ("app", "shoal")


def check_app_name(name: str) -> str:
    """App names end up in paths and ids: letters, digits, ``.``, ``_``, ``-`` only."""
    if not _NAME.match(name):
        raise ReleaseError(
            f"app name {name!r} is not valid (letters, digits, '.', '_' and '-', at most 64)"
        )
    return name


@dataclass(frozen=True)
class Manifest:
    app: str
    version: str
    commit: str
    size: int
    digest: str
    infohash: str
    archive: str
    ref: str = ""  # the ref the release was first built from (a branch, tag or sha)
    kind: str = "app"

    @property
    def release_id(self) -> str:
        version = re.sub(r"[^A-Za-z0-9._-]", "_", self.version)
        return f"{self.app}-{version}-{self.infohash[:8]}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["release_id"] = self.release_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        try:
            manifest = cls(
                app=check_app_name(str(data["app"])),
                version=str(data["version"]),
                commit=str(data["commit"]),
                size=int(data["size"]),
                digest=str(data["digest"]),
                infohash=str(data["infohash"]),
                archive=str(data["archive"]),
                ref=str(data.get("ref", "")),
                kind=str(data.get("kind", "app")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReleaseError(f"release manifest is incomplete or malformed: {exc}") from None
        if "/" in manifest.archive or manifest.archive in ("", ".", ".."):
            raise ReleaseError(f"release manifest names an unsafe archive {manifest.archive!r}")
        if manifest.kind not in KINDS:
            raise ReleaseError(f"release manifest has an unknown kind {manifest.kind!r}")
        claimed = data.get("release_id")
        if claimed is not None and claimed != manifest.release_id:
            raise ReleaseError(f"release id {claimed!r} does not match its manifest")
        return manifest
