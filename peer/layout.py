"""The peer's directory layout and the atomic ``current`` / ``previous`` switches.

```
<data-dir>/releases/<release-id>/   unpacked releases
<data-dir>/current  -> releases/<id>
<data-dir>/previous -> releases/<id>   the rollback target
<data-dir>/downloads/<release-id>/  torrent data (seeded to the swarm)
<data-dir>/state.db                 the journal
```
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

KEEP_RELEASES = 5


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.releases = root / "releases"
        self.downloads = root / "downloads"
        self.current_link = root / "current"
        self.previous_link = root / "previous"
        self.state_db = root / "state.db"

    def create(self) -> None:
        for d in (self.root, self.releases, self.downloads):
            d.mkdir(parents=True, exist_ok=True)

    def release_dir(self, release_id: str) -> Path:
        return self.releases / release_id

    def download_dir(self, release_id: str) -> Path:
        return self.downloads / release_id

    def current(self) -> str | None:
        return _target(self.current_link)

    def previous(self) -> str | None:
        return _target(self.previous_link)

    def switch_current(self, release_id: str | None) -> None:
        """Point ``current`` at a release (or remove it) in one atomic rename."""
        _switch(self.current_link, release_id)

    def switch_previous(self, release_id: str | None) -> None:
        _switch(self.previous_link, release_id)

    def prunable(self, order: Iterable[str], *, keep: int = KEEP_RELEASES) -> list[str]:
        """The releases on disk beyond the newest ``keep`` (``order``: oldest first), except
        ``current`` and ``previous``, which are never pruned whatever their age."""
        protected = {self.current(), self.previous()}
        ordered = [
            r for r in order if self.release_dir(r).exists() or self.download_dir(r).exists()
        ]
        return [r for r in ordered[: max(0, len(ordered) - keep)] if r not in protected]

    def delete(self, release_id: str) -> None:
        """Remove a release's unpacked tree and its download (stop seeding it first)."""
        shutil.rmtree(self.release_dir(release_id), ignore_errors=True)
        shutil.rmtree(self.download_dir(release_id), ignore_errors=True)

    def prune(self, order: Iterable[str], *, keep: int = KEEP_RELEASES) -> list[str]:
        """Delete all but the newest ``keep`` releases (see :meth:`prunable`); returns them."""
        doomed = self.prunable(order, keep=keep)
        for release_id in doomed:
            self.delete(release_id)
        return doomed


def _target(link: Path) -> str | None:
    try:
        return Path(os.readlink(link)).name
    except FileNotFoundError:
        return None


def _switch(link: Path, release_id: str | None) -> None:
    if release_id is None:
        link.unlink(missing_ok=True)
        return
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path("releases") / release_id)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
