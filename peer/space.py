"""Is there room to stage a release? The pure policy, and the one call that asks the disk.

Staging needs the archive (downloaded) and the unpacked tree side by side on the data disk. The
unpacked size is not known before the download, so it is estimated as ``UNPACK_RATIO`` times the
archive (zstd code archives unpack to 2 to 5 times); a release that still does not fit fails
at unpack with a clear report and is cleaned up (see :mod:`peer.stage`). ``reserve`` is left
free for the journal, logs and the services already running on the host.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

UNPACK_RATIO = 3.0
RESERVE = 64 * 1024 * 1024  # bytes always left free on the data disk


@dataclass(frozen=True)
class SpaceNeed:
    download: int  # archive bytes still to fetch
    unpack: int  # estimated unpacked size
    reserve: int

    @property
    def total(self) -> int:
        return self.download + self.unpack + self.reserve


def space_needed(
    size: int, have: int = 0, *, ratio: float = UNPACK_RATIO, reserve: int = RESERVE
) -> SpaceNeed:
    """What staging an archive of `size` bytes needs when `have` bytes of it are on disk."""
    return SpaceNeed(max(0, size - have), int(size * ratio), reserve)


def shortfall(need: SpaceNeed, free: int) -> str | None:
    """None if `need` fits in `free` bytes, else the operator's explanation of what is missing."""
    if need.total <= free:
        return None
    return (
        f"not enough disk space: staging needs {_mb(need.total)} ({_mb(need.download)} to "
        f"download, about {_mb(need.unpack)} to unpack, {_mb(need.reserve)} kept free) but only "
        f"{_mb(free)} is free; free {_mb(need.total - free)} or prune old releases"
    )


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on the filesystem holding `path`."""
    return shutil.disk_usage(path).free


def allocated_bytes(path: Path) -> int:
    """Bytes a (possibly sparse, partial) file really occupies; 0 if it does not exist."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
