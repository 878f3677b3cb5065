"""A libtorrent session driven by trio: seeding, downloading, and the alert pump.

A :class:`TorrentSession` only makes progress while its :meth:`TorrentSession.run` task runs
(``await nursery.start(session.run)``); it wakes on libtorrent's alert fd instead of polling.
libtorrent's exceptions and error alerts become :class:`~common.errors.TorrentError` here.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn, cast

import libtorrent as lt
import trio

from common.errors import TorrentError
from common.pieces import (
    LagWatch,
    StallDetector,
    assists,
    contiguous,
    missing_slices,
    piece_priorities,
)
from common.recheck import RecheckPolicy
from common.torrent.access import admitted_by, allow_only, keyed_url
from common.torrent.metainfo import check_payload, hexhash, load, single_file
from common.torrent.resume import (
    drop_resume,
    final_saves,
    load_resume,
    request_save,
    resume_path,
    store_resume,
)
from common.torrent.settings import datacenter_settings, limit_every_peer
from common.torrent.watch import SeedWatch

log = logging.getLogger("shoal.torrent")


UPDATE_INTERVAL: Final = 1.0  # seconds between post_torrent_updates() (progress, completion)
# Seconds between connect_peer() rounds while downloading: fast at first, because fellow peers
# that got the stage command a moment later refuse us until they have added the torrent, then
# doubling up to the steady interval (libtorrent drops a peer after max_failcount failures).
FIRST_RECONNECT: Final = 0.25
RECONNECT_INTERVAL: Final = 3.0
STALL_CHECK_INTERVAL: Final = 0.5  # seconds between progress checks of a download
LAG_HELPERS: Final = 3  # peers that fetch a lagging slice from its seed (see common.pieces)
STALL_PATIENCE: Final = 2.0  # seconds without progress before a peer asks the seeder directly
# Seconds between flushes of a running download, each followed by a resume-data save: a SIGKILL
# loses at most this long's worth of received bytes (libtorrent keeps the rest in memory).
RESUME_INTERVAL: Final = 1.0
FOLLOW_INTERVAL: Final = 0.25  # seconds between looks at a followed download (see follow())


@dataclass(frozen=True)
class TransferStats:
    """Payload bytes moved by one session, summed over all its torrents (removed ones too)."""

    uploaded: int
    downloaded: int


@dataclass(frozen=True)
class Transfer:
    """One torrent's bytes: verified on disk, payload downloaded and failed the hash check since
    it was added to this session."""

    verified: int
    downloaded: int
    failed: int


@dataclass(eq=False)
class _Torrent:
    """What the alert pump knows about one torrent; `changed` fires on every update."""

    handle: lt.torrent_handle
    done: bool = False  # every piece downloaded and hash-checked
    flush_ticket: int = 0  # the flush_cache() the download asked for once done (0: none yet)
    flushes_asked: int = 0  # flush_cache() calls for this torrent, by anyone
    flushes_done: int = 0  # cache_flushed alerts received: a flush covers all asked before it
    error: str | None = None
    progress: float = 0.0
    changed: trio.Event = field(default_factory=trio.Event)
    # where a download dials: other peers, and the seeder's slice seeds (see update_sources)
    peers: list[tuple[str, int]] = field(default_factory=list)
    slice_seeds: list[tuple[str, int]] = field(default_factory=list)
    redial: bool = False
    ready: bool = False  # past libtorrent's file check: only now does connect_peer() stick
    save_path: Path = Path()
    resume: Path | None = None  # where a download keeps its resume data (None: a seed)
    trackers: list[str] = field(default_factory=list)  # the torrent's own announce URLs

    @property
    def flushed(self) -> bool:
        """Done, and the payload is in the file, not only in libtorrent's buffers."""
        return 0 < self.flush_ticket <= self.flushes_done

    def flush(self) -> int:
        """Ask libtorrent to write out what it holds; the ticket to wait for (flushes_done)."""
        self.handle.flush_cache()
        self.flushes_asked += 1
        return self.flushes_asked

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class TorrentSession:
    """Owns one libtorrent session tuned for a datacenter (see :func:`datacenter_settings`).

    `overrides` replaces individual settings (benchmarks, tuning) without touching the defaults.
    Torrents are keyed by infohash hex. Run :meth:`run` in a nursery for the session's lifetime.
    """

    def __init__(
        self,
        listen_ip: str,
        port: int = 0,
        *,
        overrides: Mapping[str, Any] | None = None,
        resume_interval: float = RESUME_INTERVAL,
        recheck: RecheckPolicy | None = None,
    ) -> None:
        settings = datacenter_settings(listen_ip, port)
        settings.update(overrides or {})
        try:
            self._ses: lt.session | None = lt.session(
                lt.session_params(cast("lt.settings_pack", settings))
            )
            self._port = self._ses.listen_port()
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            raise TorrentError(f"cannot start a torrent session on {listen_ip}:{port}: {e}") from e
        if self._port == 0:
            self._ses = None
            raise TorrentError(f"cannot listen for peers on {listen_ip}:{port}")
        limit_every_peer(self._lt, settings)
        self._torrents: dict[str, _Torrent] = {}
        self._running = False
        self._removed = TransferStats(0, 0)
        self._resume_interval = resume_interval
        self._watch = SeedWatch(recheck or RecheckPolicy())
        self._tracker_key: str | None = None

    @property
    def listen_port(self) -> int:
        """The TCP port peers connect to (the one libtorrent picked when constructed with 0)."""
        return self._port

    @property
    def _lt(self) -> lt.session:
        if self._ses is None:
            raise TorrentError("the torrent session is closed")
        return self._ses

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Alert pump: run until cancelled, then shut the session down.

        Wakes when libtorrent writes to the alert fd (a socketpair; set_alert_notify would call
        into Python from libtorrent's network thread), copies what it needs out of each alert at
        once (the next pop_alerts() frees them) and wakes the waiting downloads. Every
        UPDATE_INTERVAL it asks for torrent status updates (progress, completion)."""
        if self._running or self._ses is None:
            raise RuntimeError("TorrentSession.run() can only run once")
        self._running = True
        rsock, wsock = socket.socketpair()
        with rsock, wsock:
            rsock.setblocking(False)
            wsock.setblocking(False)  # libtorrent must never block on a full socket
            self._ses.set_alert_fd(wsock.fileno())
            try:
                task_status.started()
                await self._pump(rsock)
            finally:
                self._close()

    async def _pump(self, rsock: socket.socket) -> NoReturn:
        # No local reference to the session: _close() must drop the last one.
        next_update = next_save = trio.current_time()
        next_look = next_save + self._watch.policy.tick
        while True:
            if trio.current_time() >= next_look:
                self._look_at_seeds()
                next_look = trio.current_time() + self._watch.policy.tick
            if trio.current_time() >= next_update:
                self._lt.post_torrent_updates(0)  # 0: the basic fields are enough
                next_update = trio.current_time() + UPDATE_INTERVAL
            if trio.current_time() >= next_save:
                self._flush_downloads()
                next_save = trio.current_time() + self._resume_interval
            with trio.move_on_at(min(next_update, next_save, next_look)):
                await trio.lowlevel.wait_readable(rsock)
            try:
                while rsock.recv(4096):
                    pass
            except BlockingIOError:
                pass
            for alert in self._lt.pop_alerts():
                self._dispatch(alert)

    def _dispatch(self, alert: lt.alert) -> None:
        """Apply one alert to the torrent records; must not keep any reference to `alert`."""
        if isinstance(alert, lt.state_update_alert):
            for st in alert.status:
                rec = self._torrents.get(hexhash(st.info_hashes))
                if rec is None:
                    continue
                rec.progress = st.progress
                if st.state in (lt.torrent_status.finished, lt.torrent_status.seeding):
                    rec.done = True
                if st.errc.value() and rec.error is None:
                    rec.error = st.errc.message()
                rec.notify()
            return
        if not isinstance(alert, lt.torrent_alert):
            if isinstance(alert, lt.listen_failed_alert):
                log.error("libtorrent: %s", alert.message())
            return
        rec = self._torrents.get(hexhash(alert.handle.info_hashes()))
        if isinstance(alert, lt.file_error_alert | lt.torrent_error_alert):
            first = rec is not None and rec.error is None  # a full disk fails every write
            log.log(logging.ERROR if first else logging.DEBUG, "libtorrent: %s", alert.message())
            if rec is not None and rec.error is None:
                rec.error = alert.message()
                rec.notify()
        elif isinstance(alert, lt.torrent_checked_alert):
            if rec is not None and not rec.ready:
                rec.ready = rec.redial = True
                rec.notify()
        elif isinstance(alert, lt.torrent_finished_alert):
            if rec is not None:
                rec.done, rec.progress = True, 1.0
                if not rec.flush_ticket:  # then save: a restart finds it complete, no re-hash
                    rec.flush_ticket = rec.flush()
                rec.notify()
        elif isinstance(alert, lt.save_resume_data_alert):
            if rec is not None and rec.resume is not None:
                store_resume(rec.resume, alert.params)
        elif isinstance(alert, lt.save_resume_data_failed_alert):
            log.debug("libtorrent: %s", alert.message())  # mostly "not modified": nothing new
        elif isinstance(alert, lt.cache_flushed_alert):
            if rec is not None:
                rec.flushes_done += 1
                if rec.resume is not None:
                    request_save(rec.handle)  # every piece it lists is in the file now
                rec.notify()
        elif isinstance(alert, lt.hash_failed_alert | lt.performance_alert):
            log.warning("libtorrent: %s", alert.message())
        elif isinstance(alert, lt.tracker_error_alert):  # retried with backoff; say it once
            log.log(
                logging.WARNING if alert.times_in_row == 1 else logging.DEBUG, "%s", alert.message()
            )

    def _look_at_seeds(self) -> None:
        handles = {  # seeds, and downloads once their last write is done (flushed)
            ih: (rec.handle, rec.save_path)
            for ih, rec in self._torrents.items()
            if rec.error is None and (rec.resume is None or rec.flushed)
        }
        try:
            self._watch.tick(trio.current_time(), handles)
        except RuntimeError as e:
            log.warning("cannot check the seeds' files: %s", e)

    @property
    def rechecks(self) -> int:
        """Re-checks started because a seed's files changed or were due (diagnostics)."""
        return self._watch.rechecks

    def _downloads(self) -> list[_Torrent]:
        return [r for r in self._torrents.values() if r.resume is not None and r.error is None]

    def _flush_downloads(self) -> None:
        """Write out what running downloads hold in memory; each flush is followed by a resume
        save (see _dispatch), so a SIGKILL loses at most RESUME_INTERVAL's worth of data."""
        for rec in self._downloads():
            if not rec.done:
                rec.flush()

    def _final_saves(self) -> None:
        """On shutdown: flush every download, then save its resume data (bounded waits)."""
        downloads = {hexhash(r.handle.info_hashes()): r.handle for r in self._downloads()}
        final_saves(self._lt, downloads, self._dispatch)

    def _close(self) -> None:
        """Save resume data, fail the waiters, pause, and destroy the session (blocks up to
        resume.CLOSE_SAVE_TIMEOUT twice + stop_tracker_timeout)."""
        if self._ses is not None:
            try:
                self._final_saves()
            except RuntimeError as e:
                log.warning("cannot save resume data on shutdown: %s", e)
        for rec in self._torrents.values():
            if not rec.flushed and rec.error is None:
                rec.error = "the torrent session closed"
            rec.notify()
        self._torrents.clear()
        ses, self._ses = self._ses, None
        if ses is not None:
            ses.pause()
            del ses  # the last reference: ~session sends 'stopped' announces and joins threads

    def _add(
        self,
        torrent: bytes,
        save_path: Path,
        *,
        seed: bool,
        pieces: Sequence[bool] | None = None,
        announce: bool = True,
    ) -> str:
        ses = self._lt
        atp = load(torrent)
        ih = hexhash(atp.info_hashes)
        if ih in self._torrents:
            return ih
        resume = None if seed else resume_path(save_path, ih)
        if seed:
            check_payload(atp.ti, save_path)
        elif resume is not None and (resumed := load_resume(resume, atp)) is not None:
            atp = resumed  # start from the pieces already flushed to the file: no re-hash
        trackers = list(load(torrent).trackers) if announce else []
        atp.trackers = [keyed_url(url, self._tracker_key) for url in trackers]
        atp.save_path = str(save_path)
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        atp.flags |= lt.torrent_flags.apply_ip_filter  # resume data must not turn it off
        if seed and pieces is None:
            atp.flags |= lt.torrent_flags.seed_mode  # trust the files, verify pieces lazily
        elif pieces is not None:
            atp.have_pieces = list(pieces)
            atp.flags |= lt.torrent_flags.upload_mode  # never fetch the pieces it lacks
        try:
            handle = ses.add_torrent(atp)
        except RuntimeError as e:
            raise TorrentError(f"cannot add torrent {ih}: {e}") from e
        self._torrents[ih] = _Torrent(
            handle,
            done=seed,
            progress=1.0 if seed else 0.0,
            save_path=save_path,
            resume=resume,
            trackers=trackers,
        )
        return ih

    def set_allowed_peers(self, addresses: Iterable[str] | None) -> None:
        """Accept BitTorrent connections from, and dial, only ``addresses`` (IPs); connected
        peers outside them are dropped. ``None`` admits everyone (the default)."""
        try:
            self._lt.set_ip_filter(allow_only(addresses))
        except RuntimeError as e:
            raise TorrentError(f"cannot set the IP filter: {e}") from e

    def admits(self, address: str) -> bool:
        """Whether the IP filter in force lets ``address`` connect to, and be dialled from, this
        session (what :meth:`set_allowed_peers` last set)."""
        try:
            return admitted_by(self._lt.get_ip_filter(), address)
        except RuntimeError as e:
            raise TorrentError(f"cannot read the IP filter: {e}") from e

    def set_tracker_key(self, key: str | None) -> None:
        """Announce with ``key`` from now on (every torrent, those already added re-announce
        at once); the tracker answers only announces with a key it issued."""
        if key == self._tracker_key:
            return
        self._tracker_key = key
        try:
            for rec in self._torrents.values():
                if rec.trackers:
                    rec.handle.replace_trackers(
                        [lt.announce_entry(keyed_url(url, key)) for url in rec.trackers]
                    )
                    rec.handle.force_reannounce()
        except RuntimeError as e:
            raise TorrentError(f"cannot change the tracker key: {e}") from e

    def seed(
        self,
        torrent: bytes,
        save_path: Path,
        *,
        pieces: Sequence[bool] | None = None,
        announce: bool = True,
    ) -> str:
        """Seed `torrent` whose file is already in `save_path`; returns its infohash.

        Idempotent per infohash. seed_mode skips the full check (pieces are verified as they
        are first uploaded), so the file is only checked for presence and size here. With
        `pieces`, only those pieces are offered (a slice seed, see :mod:`common.torrent.slices`).
        The seed announces to the torrent's tracker (re-announcing at the tracker's interval)
        unless `announce` is False (slice seeds: only the rollout hands those out)."""
        return self._add(torrent, save_path, seed=True, pieces=pieces, announce=announce)

    async def download(
        self,
        torrent: bytes,
        save_path: Path,
        *,
        peers: Sequence[tuple[str, int]] = (),
        on_progress: Callable[[float], None] | None = None,
        piece_slice: tuple[int, int] | None = None,
        slice_seeds: Sequence[tuple[str, int]] = (),
        announce: bool = True,
    ) -> dict[str, int]:
        """Add (or re-attach to) `torrent`; wait until every piece is downloaded, verified and
        written to the file in `save_path`. Returns the bytes received from each peer still
        connected at the end, by IP (diagnostics: peers that left are not counted).

        Dials `peers` now, again after FIRST_RECONNECT and then at growing intervals up to
        RECONNECT_INTERVAL until done (libtorrent drops a peer after
        max_failcount failed connects); the torrent's tracker is used as well. Files already
        complete in `save_path` (a restart) are found by libtorrent's check. `on_progress`
        gets the fraction done (0.0..1.0) from this task when it changes. When done the torrent
        keeps seeding until :meth:`remove`. Cancelling only stops the wait: the torrent stays.

        With `piece_slice` ``(index, count)`` and the seeder's `slice_seeds`, this peer fetches
        its own slice from its slice seed (first within each third of the file; the front third
        comes first, see :func:`~common.pieces.piece_priorities`) and everything else from the
        other peers; only if the swarm stalls does it dial the slice seeds of what it misses
        (see :mod:`common.pieces`). With `announce` False the tracker is not used: only `peers`.

        Raises TorrentError on a file or torrent error (disk full, unwritable path, ...); the
        torrent is then removed so that a retry starts afresh.
        """
        if not self._running:
            raise RuntimeError("TorrentSession.run() must be running to download")
        ih = self._add(torrent, save_path, seed=False, announce=announce)
        rec = self._torrents[ih]
        rec.peers, rec.slice_seeds = list(peers), list(slice_seeds)
        count = piece_slice[1] if piece_slice else 0
        own = {piece_slice[0]} if piece_slice else set()
        if not rec.done:
            info = rec.handle.torrent_file()
            assert info is not None
            rec.handle.prioritize_pieces(piece_priorities(info.num_pieces(), piece_slice))
        stall = StallDetector(STALL_PATIENCE)
        lag = LagWatch(count or 1, patience=STALL_PATIENCE)
        assisted: set[int] = set()
        reported = -1.0
        next_connect = trio.current_time()
        interval = FIRST_RECONNECT
        while True:
            changed = rec.changed  # taken before reading the state, so no update slips by
            if rec.error is not None:
                if self._torrents.get(ih) is rec:
                    self.remove(ih)
                raise TorrentError(f"download of torrent {ih} failed: {rec.error}")
            if on_progress is not None and rec.progress != reported:
                reported = rec.progress
                on_progress(reported)
            if rec.done and rec.flushed:
                return self._sources(rec)
            if rec.done and not rec.flush_ticket:
                # "finished" means hashed, not written: pread_disk_io hashes blocks from its
                # write buffer, so the file can still be incomplete (or absent) at this point.
                rec.flush_ticket = rec.flush()
            now = trio.current_time()
            if rec.slice_seeds and not rec.done:
                pieces = rec.handle.status(lt.torrent_handle.query_pieces).pieces
                wanted = {
                    k
                    for k in lag.update(pieces, now)
                    if piece_slice and assists(piece_slice[0], k, count, LAG_HELPERS)
                }
                if stall.update(rec.progress, now):
                    wanted |= set(missing_slices(pieces, count or len(rec.slice_seeds)))
                    log.warning("%s: no progress for %.1fs", ih[:12], STALL_PATIENCE)
                if new := wanted - assisted:
                    log.info("%s: fetching slice(s) %s from the seeder", ih[:12], sorted(new))
                    assisted |= new
                    next_connect = now
            if rec.redial:
                rec.redial, next_connect = False, now
            if rec.ready and now >= next_connect:
                seeds = [
                    rec.slice_seeds[k]
                    for k in sorted(own | assisted)
                    if 0 <= k < len(rec.slice_seeds)
                ]
                for ip, port in seeds + rec.peers:
                    try:
                        rec.handle.connect_peer((ip, port))
                    except RuntimeError as e:
                        log.warning("cannot connect to peer %s:%d: %s", ip, port, e)
                next_connect = now + interval
                interval = min(interval * 2, RECONNECT_INTERVAL)
            with trio.move_on_at(min(next_connect, now + STALL_CHECK_INTERVAL)):
                await changed.wait()

    async def follow(
        self,
        torrent: bytes,
        save_path: Path,
        on_prefix: Callable[[int], Awaitable[None]],
        *,
        sequential: bool = False,
    ) -> None:
        """Call ``on_prefix(n)`` each time the first n bytes of the single-file `torrent`'s
        payload grew: downloaded, hash-checked by libtorrent and written to the file in
        `save_path`, so they can be read from it; return once n is the file's size.

        Adds the torrent like :meth:`download` does (either may come first). Looks every
        FOLLOW_INTERVAL (one status query and, when the prefix grew, one flush_cache(): no work
        per piece). With `sequential`, libtorrent fetches pieces in file order instead of rarest
        first, so the prefix grows during the download rather than at its end. Raises
        TorrentError if the torrent fails or is removed, or has more than one file."""
        if not self._running:
            raise RuntimeError("TorrentSession.run() must be running to follow a torrent")
        ih = self._add(torrent, save_path, seed=False)
        rec = self._torrents[ih]
        info = rec.handle.torrent_file()
        files = info.layout() if info is not None else None
        if info is None or files is None or single_file(files) is None:
            raise TorrentError(f"torrent {ih} is not a single file: it cannot be followed")
        size, piece_length = files.file_size(0), info.piece_length()
        try:
            if sequential:
                rec.handle.set_flags(lt.torrent_flags.sequential_download)
            front, told = 0, 0
            while told < size:
                if rec.error is not None or self._torrents.get(ih) is not rec:
                    raise TorrentError(f"following torrent {ih}: {rec.error or 'removed'}")
                front = contiguous(rec.handle.status(lt.torrent_handle.query_pieces).pieces, front)
                safe = min(size, front * piece_length)
                if safe > told:
                    ticket = rec.flush()
                    while rec.flushes_done < ticket and rec.error is None:
                        await rec.changed.wait()
                    if rec.error is None:
                        told = safe
                        await on_prefix(told)
                    continue
                with trio.move_on_after(FOLLOW_INTERVAL):
                    await rec.changed.wait()
        except RuntimeError as e:
            raise TorrentError(f"following torrent {ih}: {e}") from e

    def update_sources(
        self,
        infohash: str,
        peers: Sequence[tuple[str, int]],
        slice_seeds: Sequence[tuple[str, int]],
    ) -> None:
        """New addresses for a running download (the seeder restarted and moved its slice
        seeds, or the rollout sent a fresh peer list); dialled right away."""
        rec = self._torrents.get(infohash)
        if rec is not None:
            rec.peers, rec.slice_seeds, rec.redial = list(peers), list(slice_seeds), True
            rec.notify()

    @staticmethod
    def _sources(rec: _Torrent) -> dict[str, int]:
        """Payload bytes received from each connected peer, by IP (where the data came from)."""
        sources: dict[str, int] = {}
        for peer in rec.handle.get_peer_info():
            ip = str(peer.ip[0])
            sources[ip] = sources.get(ip, 0) + int(peer.total_download)
        return sources

    def remove(self, infohash: str, *, delete_files: bool = False) -> None:
        """Stop and forget a torrent (no-op if unknown); pending downloads of it fail.

        With `delete_files` libtorrent deletes the payload asynchronously, shortly after."""
        rec = self._torrents.pop(infohash, None)
        if rec is None:
            return
        try:
            st = rec.handle.status(0)
            self._removed = TransferStats(
                self._removed.uploaded + st.total_payload_upload,
                self._removed.downloaded + st.total_payload_download,
            )
            self._lt.remove_torrent(rec.handle, lt.session.delete_files if delete_files else 0)
        except RuntimeError as e:
            raise TorrentError(f"cannot remove torrent {infohash}: {e}") from e
        finally:
            if rec.resume is not None:
                drop_resume(rec.resume)
            if not rec.flushed and rec.error is None:
                rec.error = "removed from the torrent session"
            rec.notify()

    def transfer(self, infohash: str) -> Transfer:
        """What one torrent has and moved; a resumed download counts only what it fetched after
        the restart. All zeros if unknown."""
        rec = self._torrents.get(infohash)
        if rec is None:
            return Transfer(0, 0, 0)
        try:
            st = rec.handle.status(0)
        except RuntimeError as e:
            raise TorrentError(f"cannot read torrent status of {infohash}: {e}") from e
        return Transfer(
            int(st.total_done), int(st.total_payload_download), int(st.total_failed_bytes)
        )

    def has(self, infohash: str) -> bool:
        """Whether the torrent is in this session (downloading, seeding or failed)."""
        return infohash in self._torrents

    def stats(self) -> TransferStats:
        """Payload bytes uploaded/downloaded by this session since it started (all torrents).

        libtorrent adds transfers to these totals on its tick, so they may lag ~1 s behind."""
        try:
            done = [rec.handle.status(0) for rec in self._torrents.values()]
        except RuntimeError as e:
            raise TorrentError(f"cannot read torrent status: {e}") from e
        return TransferStats(
            self._removed.uploaded + sum(st.total_payload_upload for st in done),
            self._removed.downloaded + sum(st.total_payload_download for st in done),
        )

    def peers_of(self, infohash: str) -> list[tuple[str, int]]:
        """(ip, port) of the peers connected for a torrent, as the sockets see them (an
        incoming peer shows its source port, not its listen port); [] if unknown."""
        rec = self._torrents.get(infohash)
        if rec is None:
            return []
        try:
            return [(p.ip[0], p.ip[1]) for p in rec.handle.get_peer_info()]
        except RuntimeError as e:
            raise TorrentError(f"cannot list peers of torrent {infohash}: {e}") from e
