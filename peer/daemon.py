"""The peer daemon: dial the seeder, register, heartbeat, take commands, report back.

Work outlives connections: stage and activate jobs run in the daemon's own nursery, and their
reports wait in the journal until a connection carries them to the seeder. The connection loop
never gives up on network errors; it backs off (with jitter) and says so in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from common import messages as m
from common.addr import Address
from common.channel import Channel, connect
from common.errors import (
    ConfigError,
    ConnectionClosed,
    ProtocolError,
    RemoteProtocolError,
    ShoalError,
)
from common.tls import ClientTLS
from common.torrent import TorrentSession
from peer import identity, upgrade
from peer.backoff import Backoff
from peer.context import PeerContext
from peer.journal import Journal, JournalError
from peer.layout import Layout
from peer.lifecycle import activate
from peer.prefix import running_version
from peer.preflight import preflight
from peer.reload import Reloads
from peer.reports import Reporter
from peer.restart import RestartRequest
from peer.space import RESERVE, UNPACK_RATIO
from peer.stage import refresh, stage
from peer.trust import load_release_key
from peer.upgrade import HEALTH_TIMEOUT

log = logging.getLogger("shoal.peer")

HELLO_TIMEOUT = 10.0
JOURNAL_RETRY = 30.0  # seconds between attempts to reopen a read-only journal for writing


@dataclass(frozen=True)
class PeerConfig:
    seeder: Address
    data_dir: Path
    name: str
    bind: str = "127.0.0.1"
    torrent_port: int = 6881
    labels: dict[str, str] = field(default_factory=dict)
    keep_releases: int = 5
    min_free: int = RESERVE
    unpack_ratio: float = UNPACK_RATIO
    torrent_settings: dict[str, Any] = field(default_factory=dict)
    prefix: Path | None = None  # the install prefix (PREFIX/versions/<v>, PREFIX/current)
    upgrade_timeout: float = HEALTH_TIMEOUT


CrashHandler = Callable[[tuple[str, ...], Exception], None]


class Jobs:
    """Stage/activate jobs, at most one per key, in the daemon's nursery (never detached).

    A job that raises is that job's failure, not the daemon's: `crashed` is told (it reports the
    step as failed with result ``error``) and the daemon and its other jobs go on."""

    def __init__(self, nursery: trio.Nursery, crashed: CrashHandler) -> None:
        self.nursery = nursery
        self.crashed = crashed
        self.running: set[tuple[str, ...]] = set()

    def start(self, key: tuple[str, ...], job: Callable[[], Awaitable[None]]) -> None:
        if key in self.running:
            return

        async def run() -> None:
            try:
                await job()
            except Exception as exc:
                log.exception("job %s crashed", "/".join(key))
                try:
                    self.crashed(key, exc)
                except Exception:
                    log.exception("cannot report the crash of job %s", "/".join(key))
            finally:
                self.running.discard(key)

        self.running.add(key)
        self.nursery.start_soon(run)


async def run_peer(
    config: PeerConfig,
    *,
    restart: RestartRequest | None = None,
    reloads: Callable[[PeerContext], Reloads] | None = None,
    task_status: trio.TaskStatus[PeerContext] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until cancelled, or until an upgrade asks for a restart (``restart``
    then names the version; the caller re-executes, see peer.restart)."""
    me = identity.load(config.data_dir)  # refuses to start without one, saying how to enroll
    if me.name != config.name:
        raise ConfigError(f"this host's certificate names {me.name!r}, not {config.name!r}")
    release_key = load_release_key(config.data_dir)  # pinned at enrolment
    layout = Layout(config.data_dir)
    layout.create()
    journal = Journal.open(layout.state_db)
    try:
        reporter = Reporter(journal, config.name)
        torrents = TorrentSession(
            config.bind, config.torrent_port, overrides=config.torrent_settings
        )
        ctx = PeerContext(
            config.name,
            layout,
            journal,
            reporter,
            torrents,
            release_key,
            config.keep_releases,
            min_free=config.min_free,
            unpack_ratio=config.unpack_ratio,
            prefix=config.prefix,
            upgrade_timeout=config.upgrade_timeout,
            restart=restart or RestartRequest(),
            labels=dict(config.labels),
        )
        upgrade.recover(ctx)
        _close_interrupted(journal, reporter, skip=upgrade.pending_rollouts(config.prefix))
        async with trio.open_nursery() as nursery:
            await nursery.start(torrents.run)
            if reloads is not None:
                await nursery.start(reloads(ctx).run)
            _seed_staged(ctx)
            nursery.start_soon(_recover_journal, journal)
            jobs = Jobs(nursery, lambda key, exc: report_crash(reporter, key, exc))
            task_status.started(ctx)
            nursery.start_soon(_connection_loop, config, ctx, jobs, me.tls)
            await ctx.restart.wait()
            log.warning("restarting into shoal %s: closing every session", ctx.restart.version)
            nursery.cancel_scope.cancel()
    finally:
        journal.close()


async def _recover_journal(journal: Journal) -> None:
    """A journal opened read-only (full disk at start-up) becomes writable when space returns."""
    while True:  # polling: nothing tells us when the disk has room again
        if journal.reopen():
            return
        await trio.sleep(JOURNAL_RETRY)


def _seed_staged(ctx: PeerContext) -> None:
    """Seed every staged release still on disk; one that cannot be seeded is skipped (logged),
    never a reason to stop the daemon (no crash loop on a truncated or missing file)."""
    try:
        staged = ctx.journal.releases()
    except JournalError as exc:
        log.error("cannot list staged releases to seed: %s", exc)
        return
    for manifest, torrent, _ in staged:
        download = ctx.layout.download_dir(str(manifest["release_id"]))
        if download.is_dir():
            try:
                ctx.torrents.seed(torrent, download)
            except ShoalError as exc:
                log.error("not seeding %s: %s", manifest["release_id"], exc)


def report_crash(reporter: Reporter, key: tuple[str, ...], exc: Exception) -> None:
    """Report a crashed job as its step's failure: key is ``(step, rollout_id[, attempt])``."""
    step, rollout_id = key[0], key[1]
    attempt = int(key[2]) if len(key) > 2 and key[2].isdigit() else 1
    reporter.step(
        rollout_id,
        step,
        "failed",
        attempt=attempt,
        result="error",
        detail=f"internal error in the peer ({type(exc).__name__}: {exc}); the daemon goes on",
    )


def _close_interrupted(
    journal: Journal, reporter: Reporter, skip: Collection[tuple[str, int]] = ()
) -> None:
    """Activation steps that were running when we stopped failed; staging simply resumes.
    An upgrade in flight (``skip``) is not interrupted: its outcome is reported by peer.upgrade."""
    try:
        running = journal.running_steps()
    except JournalError as exc:
        log.error("cannot list the steps that were running: %s", exc)
        return
    for step in running:
        if (step.rollout_id, step.attempt) in skip:
            continue
        if step.step not in ("stage", *m.STAGE_STEPS):
            reporter.step(
                step.rollout_id,
                step.step,
                "failed",
                attempt=step.attempt,
                result="interrupted",
                detail="the peer stopped while this step was running; it is not repeated",
            )


async def _connection_loop(
    config: PeerConfig, ctx: PeerContext, jobs: Jobs, tls: ClientTLS
) -> None:
    backoff = Backoff()
    while True:
        try:
            channel = await connect(config.seeder, tls, local_ip=config.bind)
            async with channel:
                await _session(config, ctx, jobs, channel, backoff)
        except (ConnectionClosed, ProtocolError) as exc:
            delay = backoff.next_delay()
            log.warning("seeder %s: %s; retrying in %.1fs", config.seeder, exc, delay)
            await trio.sleep(delay)


async def _session(
    config: PeerConfig, ctx: PeerContext, jobs: Jobs, channel: Channel, backoff: Backoff
) -> None:
    try:
        staged = [str(mf["release_id"]) for mf, _, _ in ctx.journal.releases()]
    except JournalError as exc:
        log.error("cannot list staged releases: %s", exc)
        staged = []
    ctx.relabelled = trio.Event()
    await channel.send(
        m.Hello(
            name=config.name,
            address=config.bind,
            bt_port=ctx.torrents.listen_port,
            labels=ctx.labels,
            current=ctx.layout.current(),
            staged=staged,
            version=running_version(),
        )
    )
    with trio.fail_after(HELLO_TIMEOUT):
        welcome = await channel.receive()
    if not isinstance(welcome, m.Welcome):
        raise RemoteProtocolError(f"expected welcome, got {welcome.TYPE}")
    ctx.torrents.set_tracker_key(welcome.tracker_key or None)
    log.info("connected to seeder %s as %s", config.seeder, config.name)
    backoff.reset()
    upgrade.connected(ctx)
    failure: list[BaseException] = []
    async with trio.open_nursery() as conn:

        async def guarded(fn: Callable[[], Awaitable[None]]) -> None:
            try:
                await fn()
            except (ConnectionClosed, ProtocolError) as exc:
                failure.append(exc)
                conn.cancel_scope.cancel()

        async def heartbeats() -> None:
            while True:
                await channel.send(m.Heartbeat(sent_at=time.time()))
                await trio.sleep(welcome.heartbeat_interval)

        async def live_output() -> None:
            async for line in ctx.reporter.live_receive:
                await channel.send(line)

        async def receive() -> None:
            while True:
                msg = await channel.receive()
                try:
                    _dispatch(ctx, jobs, msg)
                except Exception:  # one command we cannot handle must not end the daemon
                    log.exception("cannot handle %s from the seeder", msg.TYPE)

        async def relabelled() -> None:
            await ctx.relabelled.wait()
            raise ConnectionClosed("labels changed (reload); saying hello again")

        conn.start_soon(guarded, relabelled)
        conn.start_soon(guarded, heartbeats)
        conn.start_soon(guarded, lambda: ctx.reporter.pump(channel.send))
        conn.start_soon(guarded, live_output)
        conn.start_soon(guarded, lambda: ctx.replies.pump(channel.send))
        conn.start_soon(guarded, receive)
    if failure:
        raise failure[0]


def _dispatch(ctx: PeerContext, jobs: Jobs, msg: m.Message) -> None:
    if isinstance(msg, m.Stage | m.Activate | m.Abort):
        refused = ctx.fence.admit(msg)
        if refused is not None:
            log.warning("refused %s of rollout %s: %s", msg.TYPE, msg.rollout_id, refused.reason)
            ctx.replies.send_nowait(refused)
            return
    if isinstance(msg, m.Ack):
        ctx.reporter.ack(msg.seq)
    elif isinstance(msg, m.SwarmMembers):
        ctx.swarm.update(msg)
    elif isinstance(msg, m.Abort):
        ctx.fence.abort(msg)
        log.warning("rollout %s aborted%s", msg.rollout_id, " (kill)" if msg.kill else "")
    elif isinstance(msg, m.Preflight):
        jobs.start(("preflight", msg.check_id), lambda: preflight(ctx, msg))
    elif isinstance(msg, m.Stage) and ctx.fence.aborted(msg.rollout_id):
        reason = f"rollout {msg.rollout_id} was aborted; nothing new starts for it"
        ctx.replies.send_nowait(m.Refused(msg.rollout_id, msg.token, reason))
    elif isinstance(msg, m.Stage):
        if ("stage", msg.rollout_id) in jobs.running:
            refresh(ctx, msg)
        else:
            jobs.start(("stage", msg.rollout_id), lambda: stage(ctx, msg))
    elif isinstance(msg, m.Activate):
        jobs.start(("activate", msg.rollout_id, str(msg.attempt)), lambda: activate(ctx, msg))
