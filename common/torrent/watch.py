"""Watching seeds for files that changed under them, and re-checking them (see
:mod:`common.recheck` for the policy). The session calls :meth:`SeedWatch.tick` from its pump.

Only a torrent that serves from a complete view of its pieces (seeding, or a slice seed in upload
mode) is compared: while libtorrent writes a file (downloading, repairing) its metadata changes
by our own hand. A re-check hashes every piece; the ones that fail stop being offered.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import libtorrent as lt

from common.recheck import RecheckPolicy, RecheckState, checked, look

log = logging.getLogger("shoal.torrent")

Fingerprint = tuple[tuple[int, int, int, int], ...]
_CHECKING = (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data)


def fingerprint(info: lt.torrent_info, save_path: Path) -> Fingerprint:
    """(size, mtime, ctime, inode) of each of a torrent's files; -1s for a missing one."""
    files = info.layout()
    out = []
    for i in range(files.num_files()):
        if files.file_flags(i) & lt.file_storage.flag_pad_file:
            continue
        try:
            st = os.stat(save_path / files.file_path(i))
            out.append((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        except OSError:
            out.append((-1, -1, -1, -1))
    return tuple(out)


@dataclass
class _Watched:
    state: RecheckState
    seen: Fingerprint | None = None  # at the last look, if it was serving then


class SeedWatch:
    def __init__(self, policy: RecheckPolicy) -> None:
        self.policy = policy
        self._watched: dict[str, _Watched] = {}
        self.rechecks = 0  # re-checks started (diagnostics)

    def tick(self, now: float, handles: Mapping[str, tuple[lt.torrent_handle, Path]]) -> list[str]:
        """Look at every torrent once; re-check those the policy says must be. Returns them.

        Raises RuntimeError (libtorrent's) for the caller to translate."""
        for gone in self._watched.keys() - handles.keys():
            del self._watched[gone]
        started = []
        for ih, (handle, save_path) in handles.items():
            w = self._watched.setdefault(ih, _Watched(checked(now)))
            st = handle.status(0)
            upload_only = bool(st.flags & lt.torrent_flags.upload_mode)
            info = handle.torrent_file()
            if info is None or not (st.is_seeding or upload_only) or st.state in _CHECKING:
                w.seen = None  # being written or checked by libtorrent itself
                continue
            now_seen = fingerprint(info, save_path)
            changed = w.seen is not None and now_seen != w.seen
            w.state, reason = look(w.state, now, self.policy, files_changed=changed)
            if reason is None:
                w.seen = now_seen
                continue
            log.warning("re-checking torrent %s: %s", ih[:12], reason)
            handle.force_recheck()
            w.seen = None
            self.rechecks += 1
            started.append(ih)
        return started
