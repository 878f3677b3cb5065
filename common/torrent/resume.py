"""libtorrent resume data on disk: what a download already has, kept across restarts and kills.

A download's resume data lives next to its payload (``<save_path>/.<infohash prefix>.resume``),
so removing the download directory removes it too and it can never describe other bytes. It is
written atomically (temp file, fsync, rename): a SIGKILL leaves the previous copy or the new one,
never half of one. libtorrent only lists pieces in it that were flushed to the file first
(``flush_disk_cache``), so whatever it claims is on disk.

Writing resume data never raises: a full disk or an unwritable directory only costs the resume
(logged); the download itself goes on.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import libtorrent as lt

from common.torrent.metainfo import hexhash

log = logging.getLogger("shoal.torrent")


def resume_path(save_path: Path, infohash: str) -> Path:
    """Where the resume data of torrent `infohash` saved in `save_path` is kept."""
    return save_path / f".{infohash[:16]}.resume"


def load_resume(path: Path, atp: lt.add_torrent_params) -> lt.add_torrent_params | None:
    """The add parameters of `atp` with what `path` says is already downloaded, or None.

    Resume data that is missing, unreadable, or for another torrent is ignored (and removed if
    it is bad): libtorrent then checks the files instead, which is slower but finds the same
    pieces."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read resume data %s: %s", path, exc)
        return None
    try:
        resumed = lt.read_resume_data(blob)
    except RuntimeError as exc:
        log.warning("ignoring bad resume data %s: %s", path, exc)
        path.unlink(missing_ok=True)
        return None
    if hexhash(resumed.info_hashes) != hexhash(atp.info_hashes):
        log.warning("ignoring resume data %s: it is for another torrent", path)
        path.unlink(missing_ok=True)
        return None
    resumed.ti = atp.ti
    resumed.trackers = atp.trackers
    return resumed


def store_resume(path: Path, params: lt.add_torrent_params) -> bool:
    """Write resume data atomically; False (logged) if the disk refused."""
    try:
        data = lt.write_resume_data_buf(params)
    except RuntimeError as exc:
        log.warning("cannot encode resume data for %s: %s", path, exc)
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("cannot save resume data %s: %s", path, exc)
        return False
    return True


def drop_resume(path: Path) -> None:
    """Forget resume data (the torrent was removed: a new download must not trust it)."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove resume data %s: %s", path, exc)
