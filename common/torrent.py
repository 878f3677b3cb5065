"""The libtorrent adapter: the one module in shoal that imports libtorrent.

Everything libtorrent-specific lives here: making deterministic v2 torrents, a session tuned for a
datacenter, a trio alert pump, and the translation of libtorrent's exceptions and error alerts into
:class:`~common.errors.TorrentError` (done once, here). Callers see infohashes as hex strings and
plain Python values, never libtorrent objects.

A :class:`TorrentSession` only makes progress while its :meth:`TorrentSession.run` task runs
(``await nursery.start(session.run)``); it wakes on libtorrent's alert fd instead of polling.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn, cast

import libtorrent as lt
import trio

from common.errors import ConfigError, TorrentError
from common.pieces import SlicePlan

log = logging.getLogger(__name__)

KiB: Final = 1024
MiB: Final = 1024 * KiB
MIN_PIECE_SIZE: Final = 256 * KiB
MAX_PIECE_SIZE: Final = 4 * MiB
TARGET_PIECES: Final = 1024
UPDATE_INTERVAL: Final = 1.0  # seconds between post_torrent_updates() (progress, completion)
RECONNECT_INTERVAL: Final = 3.0  # seconds between connect_peer() rounds while downloading
SLICE_POLL_INTERVAL: Final = 0.1  # seconds between piece-availability checks of a slice plan
SLICE_PATIENCE: Final = 1.0  # seconds a peer waits for locked pieces before taking them anyway

_ALERT_MASK: Final = (
    lt.alert_category.error
    | lt.alert_category.status
    | lt.alert_category.storage
    | lt.alert_category.tracker
    | lt.alert_category.performance_warning
)


def choose_piece_size(size: int) -> int:
    """Piece size for a payload of `size` bytes: about TARGET_PIECES pieces, a power of two
    clamped to 256 KiB..4 MiB (256 KiB up to 256 MiB, 1 MiB at 1 GiB, 4 MiB from 4 GiB).

    Fewer, bigger pieces mean fewer HAVE messages and hashes for GB releases; small payloads
    keep 256 KiB so a handful of peers still have pieces to trade."""
    wanted = max(1, -(-size // TARGET_PIECES))
    return min(MAX_PIECE_SIZE, max(MIN_PIECE_SIZE, 1 << (wanted - 1).bit_length()))


def make_torrent(payload: Path, *, tracker_url: str, piece_size: int = 0) -> tuple[bytes, str]:
    """Private, v2-only (SHA-256) single-file torrent of `payload` announcing to `tracker_url`.

    Returns (bencoded torrent bytes, infohash hex). Deterministic: the same file bytes, file name
    and arguments give byte-identical output (no creation date, creator or mtime), so a release
    rebuilt from the same commit has the same infohash. `piece_size` 0 means
    :func:`choose_piece_size`. Hashes the whole file: run it in a thread for big payloads.
    """
    if piece_size and (piece_size < 16 * KiB or piece_size & (piece_size - 1)):
        raise TorrentError(f"piece size {piece_size} is not a power of two >= 16 KiB")
    try:
        if not payload.is_file():
            raise TorrentError(f"cannot make a torrent of {payload}: not a regular file")
        size = payload.stat().st_size
        entry = lt.create_file_entry(payload.name, size)
        piece_size = piece_size or choose_piece_size(size)
        ct = lt.create_torrent([entry], piece_size, lt.create_torrent.v2_only)
        ct.set_priv(True)
        ct.add_tracker(tracker_url)
        lt.set_piece_hashes(ct, str(payload.parent))
        tree = ct.generate()
    except (OSError, RuntimeError) as e:
        raise TorrentError(f"cannot make a torrent of {payload}: {e}") from e
    tree.pop(b"creation date", None)
    tree.pop(b"created by", None)
    data = lt.bencode(tree)  # generate_buf() raises UnicodeDecodeError in 2.1.1
    return data, torrent_infohash(data)


def torrent_infohash(torrent: bytes) -> str:
    """Hex infohash of bencoded torrent bytes (the value :func:`make_torrent` returns).

    For v2 torrents this is the 64-digit SHA-256 infohash; trackers see its first 20 bytes
    (the first 40 hex digits), which is what BitTorrent v2 announces."""
    return _hex(_load(torrent).info_hashes)


def datacenter_settings(listen_ip: str, port: int) -> dict[str, Any]:
    """libtorrent settings for a fleet on a fast, trusted network (the one place to tune them).

    Base: high_performance_seed(). TCP only (uTP is ~3.5x slower here), no encryption, no
    DHT/LSD/UPnP/NAT-PMP (private torrents; peers come from the tracker and connect_peer),
    listening AND dialling from `listen_ip` so every host shows up with its own address.
    """
    host = f"[{listen_ip}]" if ":" in listen_ip else listen_ip
    return {
        **lt.high_performance_seed(),
        "listen_interfaces": f"{host}:{port}",
        "outgoing_interfaces": listen_ip,
        "listen_system_port_fallback": False,  # a taken port is an error, not another port
        "max_retry_port_bind": 0,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "mixed_mode_algorithm": lt.bandwidth_mixed_algo_t.prefer_tcp,
        "out_enc_policy": lt.enc_policy.disabled,
        "in_enc_policy": lt.enc_policy.disabled,
        "seed_choking_algorithm": lt.seed_choking_algorithm_t.fastest_upload,
        "max_queued_disk_bytes": 64 * MiB,  # hps sets 7 MiB: peers stop reading when full
        "send_buffer_watermark": 16 * MiB,
        "send_buffer_low_watermark": 4 * MiB,
        "max_failcount": 3,  # hps sets 1: one refused connect would drop a peer for good
        "peer_timeout": 60,
        "inactivity_timeout": 60,
        "request_timeout": 60,
        "rate_limit_ip_overhead": False,
        "aio_threads": 8,
        "hashing_threads": 4,
        "allow_multiple_connections_per_ip": False,  # hosts have distinct IPs
        # Fast swarms: accept a short interval from our own tracker, announce everywhere,
        # and don't let a dead tracker hold up shutdown.
        "announce_to_all_tiers": True,
        "announce_to_all_trackers": True,
        "min_announce_interval": 5,
        "stop_tracker_timeout": 1,
        # The ip filter only pauses peer connections to the seeder (see SlicePlan), never the
        # tracker that runs on the same address.
        "apply_ip_filter_to_trackers": False,
        # ssrf_mitigation stays on: it only requires loopback trackers to use /announce paths.
        "alert_mask": _ALERT_MASK,
    }


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """Typed libtorrent settings from ``KEY=VALUE`` strings (``--torrent-setting``), checked
    against libtorrent's own list so a typo is an error instead of a silently ignored key."""
    defaults: dict[str, Any] = dict(lt.default_settings())
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in defaults:
            raise ConfigError(
                f"--torrent-setting {pair!r}: not KEY=VALUE with a libtorrent setting"
            )
        kind = type(defaults[key])
        try:
            if kind is bool:
                if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(text)
                out[key] = text.lower() in ("1", "true", "yes", "on")
            elif kind is int:
                out[key] = int(text, 0)
            else:
                out[key] = text
        except ValueError:
            raise ConfigError(
                f"--torrent-setting {pair!r}: {key} takes a {kind.__name__}"
            ) from None
    return out


@dataclass(frozen=True)
class TransferStats:
    """Payload bytes moved by one session, summed over all its torrents (removed ones too)."""

    uploaded: int
    downloaded: int


def _load(torrent: bytes) -> lt.add_torrent_params:
    try:
        return lt.load_torrent_buffer(torrent)
    except RuntimeError as e:
        raise TorrentError(f"not a valid torrent: {e}") from e


def _hex(ih: lt.info_hash_t) -> str:
    return (ih.v2.to_bytes() if ih.has_v2() else ih.v1.to_bytes()).hex()


def _check_payload(ti: lt.torrent_info | None, save_path: Path) -> None:
    """Refuse to seed files that are missing or of the wrong size (seed_mode would trust them)."""
    if ti is None:
        raise TorrentError("torrent has no metadata")
    files = ti.layout()
    for i in range(files.num_files()):
        if files.file_flags(i) & lt.file_storage.flag_pad_file:
            continue
        path = save_path / files.file_path(i)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise TorrentError(f"cannot seed {path}: {e}") from e
        if size != files.file_size(i):
            raise TorrentError(f"cannot seed {path}: {size} bytes, expected {files.file_size(i)}")


@dataclass(eq=False)
class _Torrent:
    """What the alert pump knows about one torrent; `changed` fires on every update."""

    handle: lt.torrent_handle
    done: bool = False  # every piece downloaded and hash-checked
    flushing: bool = False  # flush_cache() requested
    flushed: bool = False  # ... and done: the payload is in the file, not only in libtorrent
    error: str | None = None
    progress: float = 0.0
    changed: trio.Event = field(default_factory=trio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class TorrentSession:
    """Owns one libtorrent session tuned for a datacenter (see :func:`datacenter_settings`).

    `overrides` replaces individual settings (benchmarks, tuning) without touching the defaults.
    Torrents are keyed by infohash hex. Run :meth:`run` in a nursery for the session's lifetime.
    """

    def __init__(
        self, listen_ip: str, port: int = 0, *, overrides: Mapping[str, Any] | None = None
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
        self._torrents: dict[str, _Torrent] = {}
        self._origin_needs: dict[object, tuple[str, bool]] = {}  # download -> (origin IP, needed)
        self._origin_blocked: frozenset[str] = frozenset()
        self._running = False
        self._removed = TransferStats(0, 0)

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
        next_update = trio.current_time()
        while True:
            if trio.current_time() >= next_update:
                self._lt.post_torrent_updates(0)  # 0: the basic fields are enough
                next_update = trio.current_time() + UPDATE_INTERVAL
            with trio.move_on_at(next_update):
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
                rec = self._torrents.get(_hex(st.info_hashes))
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
        rec = self._torrents.get(_hex(alert.handle.info_hashes()))
        if isinstance(alert, lt.file_error_alert | lt.torrent_error_alert):
            log.error("libtorrent: %s", alert.message())
            if rec is not None and rec.error is None:
                rec.error = alert.message()
                rec.notify()
        elif isinstance(alert, lt.torrent_finished_alert):
            if rec is not None:
                rec.done, rec.progress = True, 1.0
                rec.notify()
        elif isinstance(alert, lt.cache_flushed_alert):
            if rec is not None and rec.flushing:
                rec.flushed = True
                rec.notify()
        elif isinstance(alert, lt.hash_failed_alert | lt.performance_alert):
            log.warning("libtorrent: %s", alert.message())
        elif isinstance(alert, lt.tracker_error_alert):  # retried with backoff; say it once
            log.log(
                logging.WARNING if alert.times_in_row == 1 else logging.DEBUG, "%s", alert.message()
            )

    def _close(self) -> None:
        """Fail the waiters, pause, and destroy the session (blocks up to stop_tracker_timeout)."""
        for rec in self._torrents.values():
            if not rec.flushed and rec.error is None:
                rec.error = "the torrent session closed"
            rec.notify()
        self._torrents.clear()
        ses, self._ses = self._ses, None
        if ses is not None:
            ses.pause()
            del ses  # the last reference: ~session sends 'stopped' announces and joins threads

    def _add(self, torrent: bytes, save_path: Path, *, seed: bool, super_seed: bool = False) -> str:
        ses = self._lt
        atp = _load(torrent)
        ih = _hex(atp.info_hashes)
        if ih in self._torrents:
            return ih
        if seed:
            _check_payload(atp.ti, save_path)
        atp.save_path = str(save_path)
        atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        if seed:
            atp.flags |= lt.torrent_flags.seed_mode  # trust the files, verify pieces lazily
        if super_seed:
            atp.flags |= lt.torrent_flags.super_seeding
        try:
            handle = ses.add_torrent(atp)
        except RuntimeError as e:
            raise TorrentError(f"cannot add torrent {ih}: {e}") from e
        self._torrents[ih] = _Torrent(handle, done=seed, progress=1.0 if seed else 0.0)
        return ih

    def seed(self, torrent: bytes, save_path: Path, *, super_seed: bool = False) -> str:
        """Seed `torrent` whose file is already in `save_path`; returns its infohash.

        Idempotent per infohash. seed_mode skips the full check (pieces are verified as they
        are first uploaded), so the file is only checked for presence and size here.
        `super_seed`: reveal pieces to each peer one at a time, preferring pieces no other peer
        has yet, so the origin uploads each piece about once and the swarm does the rest."""
        return self._add(torrent, save_path, seed=True, super_seed=super_seed)

    async def download(
        self,
        torrent: bytes,
        save_path: Path,
        *,
        peers: Sequence[tuple[str, int]] = (),
        on_progress: Callable[[float], None] | None = None,
        piece_slice: tuple[int, int] | None = None,
        origin: str | None = None,
    ) -> dict[str, int]:
        """Add (or re-attach to) `torrent`; wait until every piece is downloaded, verified and
        written to the file in `save_path`.

        Dials `peers` now and every RECONNECT_INTERVAL until done (libtorrent drops a peer after
        max_failcount failed connects); the torrent's tracker is used as well. Files already
        complete in `save_path` (a restart) are found by libtorrent's check. `on_progress`
        gets the fraction done (0.0..1.0) from this task when it changes. When done the torrent
        keeps seeding until :meth:`remove`. Cancelling only stops the wait: the torrent stays.

        Raises TorrentError on a file or torrent error (disk full, unwritable path, ...); the
        torrent is then removed so that a retry starts afresh.

        `piece_slice` ``(index, count)`` follows a :class:`~common.pieces.SlicePlan`: this
        peer's own slice first, other pieces once another peer has them, so the seeder sends
        each piece about once. With `origin` (the seeder's IP) the session also disconnects from
        the seeder once this peer's own slice is in (and until the swarm stalls), so that the
        seeder's upload is spent on pieces nobody has yet.

        Returns the payload bytes received from each still-connected peer, by IP.
        """
        if not self._running:
            raise RuntimeError("TorrentSession.run() must be running to download")
        ih = self._add(torrent, save_path, seed=False)
        rec = self._torrents[ih]
        plan = None
        if piece_slice is not None and not rec.done:
            info = rec.handle.torrent_file()
            assert info is not None
            plan = SlicePlan(info.num_pieces(), *piece_slice, patience=SLICE_PATIENCE)
            rec.handle.prioritize_pieces(plan.priorities())
        token = object()
        try:
            return await self._wait(rec, ih, peers, on_progress, plan, origin, token)
        finally:
            if self._origin_needs.pop(token, None) is not None:
                self._refresh_origin_filter()

    async def _wait(
        self,
        rec: _Torrent,
        ih: str,
        peers: Sequence[tuple[str, int]],
        on_progress: Callable[[float], None] | None,
        plan: SlicePlan | None,
        origin: str | None,
        token: object,
    ) -> dict[str, int]:
        reported = -1.0
        next_connect = trio.current_time()
        while True:
            if rec.error is not None:
                if self._torrents.get(ih) is rec:
                    self.remove(ih)
                raise TorrentError(f"download of torrent {ih} failed: {rec.error}")
            if on_progress is not None and rec.progress != reported:
                reported = rec.progress
                on_progress(reported)
            complete = rec.done
            if plan is not None:
                # With locked pieces, "finished" only means every *wanted* piece: count them all.
                pieces = rec.handle.status(lt.torrent_handle.query_pieces).pieces
                now = trio.current_time()
                counted = origin is None or self._origin_needs.get(token, (origin, True))[1]
                if plan.locked and plan.update(
                    pieces, rec.handle.piece_availability(), now, origin_counted=counted
                ):
                    rec.handle.prioritize_pieces(plan.priorities())
                    if plan.gave_up:
                        log.warning(
                            "%s: no new piece in the swarm for %.1fs; taking the %d "
                            "missing pieces from anyone",
                            ih[:12],
                            plan.patience,
                            pieces.count(False),
                        )
                complete = all(pieces)
                if origin is not None:
                    need = plan.gave_up or not plan.own_done(pieces)
                    if self._origin_needs.get(token) != (origin, need):
                        if not need:
                            from_origin = self._sources(rec).get(origin, 0)
                            log.info("%s: own slice in; %d bytes came from the seeder %s",
                                     ih[:12], from_origin, origin)
                        self._origin_needs[token] = (origin, need)
                        self._refresh_origin_filter()
                        if need:
                            next_connect = now  # dial the seeder again right away
            if complete and rec.flushed:
                return self._sources(rec)
            if complete and not rec.flushing:
                # "finished" means hashed, not written: pread_disk_io hashes blocks from its
                # write buffer, so the file can still be incomplete (or absent) at this point.
                rec.flushing = True
                rec.handle.flush_cache()
            if trio.current_time() >= next_connect:
                for ip, port in peers:
                    try:
                        rec.handle.connect_peer((ip, port))
                    except RuntimeError as e:
                        log.warning("cannot connect to peer %s:%d: %s", ip, port, e)
                next_connect = trio.current_time() + RECONNECT_INTERVAL
            wake = next_connect
            if plan is not None:
                wake = min(wake, trio.current_time() + SLICE_POLL_INTERVAL)
            with trio.move_on_at(wake):
                await rec.changed.wait()

    def _refresh_origin_filter(self) -> None:
        """Block the origins no running download needs; libtorrent drops their connections."""
        needed = {ip for ip, need in self._origin_needs.values() if need}
        blocked = frozenset(ip for ip, _ in self._origin_needs.values()) - needed
        if blocked == self._origin_blocked:
            return
        rules = lt.ip_filter()
        for ip in blocked:
            rules.add_rule(ip, ip, 1)
        self._lt.set_ip_filter(rules)
        self._origin_blocked = blocked
        log.info("seeder connections %s", f"paused for {sorted(blocked)}" if blocked else "open")

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
            if not rec.flushed and rec.error is None:
                rec.error = "removed from the torrent session"
            rec.notify()

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
