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
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import libtorrent as lt

from common.torrent.metainfo import hexhash

log = logging.getLogger("shoal.torrent")

CLOSE_SAVE_TIMEOUT: Final = 3.0  # seconds each shutdown phase (flush, save) may take


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


def flush(handle: lt.torrent_handle) -> None:
    """Write out what libtorrent holds in memory; the session saves resume data when the
    cache_flushed alert comes (asked for earlier, resume data lists only pieces in the file)."""
    try:
        handle.flush_cache()
    except RuntimeError as exc:
        log.warning("cannot flush a download: %s", exc)


def request_save(handle: lt.torrent_handle) -> None:
    """Ask for resume data if anything changed since the last save (answered by an alert)."""
    try:
        handle.save_resume_data(lt.torrent_handle.only_if_modified)
    except RuntimeError as exc:
        log.warning("cannot save resume data: %s", exc)


def final_saves(
    ses: lt.session,
    downloads: Mapping[str, lt.torrent_handle],
    dispatch: Callable[[lt.alert], None],
) -> None:
    """Flush every download, then wait for its resume data, each phase bounded by
    CLOSE_SAVE_TIMEOUT; every alert popped meanwhile goes to `dispatch` (which stores the data
    and asks for the save after each flush)."""
    for handle in downloads.values():
        flush(handle)
    _wait_for(ses, set(downloads), (lt.cache_flushed_alert,), dispatch)
    saved = (lt.save_resume_data_alert, lt.save_resume_data_failed_alert)
    _wait_for(ses, set(downloads), saved, dispatch)


def _wait_for(
    ses: lt.session,
    pending: set[str],
    kinds: tuple[type[lt.torrent_alert], ...],
    dispatch: Callable[[lt.alert], None],
) -> None:
    deadline = time.monotonic() + CLOSE_SAVE_TIMEOUT
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            log.warning("shutting down without the resume data of %d download(s)", len(pending))
            return
        ses.wait_for_alert(int(left * 1000) + 1)
        for alert in ses.pop_alerts():
            dispatch(alert)
            if isinstance(alert, kinds):
                pending.discard(hexhash(alert.handle.info_hashes()))
