"""The rollout engine: the IO shell around :mod:`seeder.machine`.

It turns what happens (reports, refusals, connections, operator requests, gate results, time) into
machine events, commits each event together with the state change it caused in one store
transaction (events arriving together share one transaction), and only then hands the resulting
commands to :mod:`seeder.dispatch` (messages to the per-peer writers, gates) and the timeline
entries to ``on_event``. Live rollouts stay in memory (:mod:`seeder.rollout_cache`), so an event
costs O(1) in the number of targets. After a restart it reloads the live rollouts; peers
reconnect and get the command of their target's state again. What a new rollout is (targets,
releases, plan) is :mod:`seeder.rollout_start`; the engine checks it overlaps no live rollout
and owns it from then on.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from common import messages as m
from common.errors import ShoalError
from seeder import machine as mc
from seeder.dispatch import Dispatcher
from seeder.membership import Membership
from seeder.model import RolloutModel, TargetModel
from seeder.rollout_cache import RolloutCache, UnknownRollout
from seeder.rollout_start import Admit, NewRollout, new_rollback, new_rollout, plan_rollout
from seeder.stageplan import SliceProvider
from seeder.states import TERMINAL
from seeder.store import HostRecord, Store
from seeder.store_promotions import RolloutPromotion
from seeder.store_rollouts import Commit
from seeder.waves import Plan, RolloutOptions
from seeder.writers import PeerWriter

log = logging.getLogger("shoal.seeder.engine")

OnEvent = Callable[[m.RolloutEvent], None]
# Called whenever the union of the live rollouts' swarms may have changed (a rollout started or
# ended, a target moved or was revoked), before any target is told: the seeder's own BitTorrent
# sessions must admit a target before its Stage goes out (seeder.swarm_access). A connection
# refused by their IP filter is not retried by libtorrent for min_reconnect_time.
OnSwarm = Callable[[], None]

TICK = 0.5


class Overlap(ShoalError):
    """Targets of a new rollout are still in another rollout."""


@dataclass(frozen=True)
class Deadlines:
    stage: float = 1800.0
    activate: float = 3600.0


def _no_event(event: m.RolloutEvent) -> None:
    return None


def _no_swarm() -> None:
    return None


class Engine:
    def __init__(
        self,
        store: Store,
        *,
        seeder_bt: tuple[str, int],
        deadlines: Deadlines | None = None,
        clock: Callable[[], float] = time.time,
        slice_seeds: SliceProvider | None = None,
        on_event: OnEvent = _no_event,
        on_swarm: OnSwarm = _no_swarm,
    ) -> None:
        self.store = store
        self.deadlines = deadlines or Deadlines()
        self.clock = clock
        self.on_event = on_event
        self.on_swarm = on_swarm  # the seeder's service sets it once its admission exists
        self.last_seen: dict[str, float] = {}
        self.versions: dict[str, str] = {}  # host -> the shoal version its last hello named
        self._writers: dict[str, PeerWriter] = {}
        self._rollouts = RolloutCache(store)
        self._token = store.max_token()
        self._batch: list[tuple[Commit, list[mc.Command], list[tuple[PeerWriter, int]]]] = []
        self._batch_ready = trio.Event()
        self.membership = Membership(store.hosts(), [seeder_bt[0]])
        self._dispatcher = Dispatcher(
            store,
            self.membership,
            self._send,
            self._event,
            seeder_bt=seeder_bt,
            slice_seeds=slice_seeds,
        )
        self._members_dirty: set[str] = set()  # live rollouts whose swarm changed since a tick

    # --- lookups -------------------------------------------------------------------------------

    def model(self, rollout_id: str) -> RolloutModel:
        return self._rollouts.model(rollout_id)

    def latest(self) -> RolloutModel:
        return self._rollouts.latest()

    def host_target(self, host: str) -> tuple[str, TargetModel] | None:
        return self._rollouts.host_target(host)

    # --- peers coming and going ----------------------------------------------------------------

    def attach(self, host: str, writer: PeerWriter) -> None:
        old = self._writers.get(host)
        if old is not None and old is not writer:
            old.stop()
        self._writers[host] = writer
        self.last_seen[host] = self.clock()
        live = self._rollouts.live_of(host)
        if live is not None:
            writer.offer(self.membership.message(live))  # before any Stage
            self._event(live, mc.Connected(host))

    def detach(self, host: str, writer: PeerWriter) -> None:
        if self._writers.get(host) is writer:
            del self._writers[host]
            self.last_seen[host] = self.clock()

    def heartbeat(self, host: str) -> None:
        self.last_seen[host] = self.clock()

    async def send_to(self, host: str, msg: m.Message) -> bool:
        """Queue one message outside any rollout (a preflight check) on the host's writer;
        False if the host is not connected or its queue is full."""
        writer = self._writers.get(host)
        return writer is not None and writer.offer(msg)

    def connected(self) -> set[str]:
        return set(self._writers)

    def swarm_addresses(self) -> set[str]:
        """Every BitTorrent address in a live rollout's swarm (seeder.membership)."""
        return self.membership.union(self._rollouts.live.values())

    def host_left(self, host: str) -> None:
        """A host is no longer enrolled (revoked): its rollout's swarm closes to it now."""
        if self.membership.forget(host):
            self._members_changed(host)

    def _members_changed(self, host: str) -> None:
        """The swarm of the host's live rollout changed: its connected targets are told at the
        next tick, so many hosts changing at once (a renumbering) cost one list per target."""
        live = self._rollouts.live_of(host)
        if live is not None:
            self._members_dirty.add(live.rollout_id)
            self._swarm_changed()

    def _swarm_changed(self) -> None:
        try:
            self.on_swarm()
        except Exception:  # the periodic refresh (seeder.swarm_access) tries again
            log.exception("cannot admit the live rollouts' swarms")

    def _send_members(self) -> None:
        dirty, self._members_dirty = self._members_dirty, set()
        for rollout_id in dirty:
            r = self._rollouts.live.get(rollout_id)
            if r is not None:
                msg = self.membership.message(r)
                for target in r.targets:
                    self._send(target, msg)

    # --- operator requests ---------------------------------------------------------------------

    def plan(
        self, release_id: str, selector: str, params: dict[str, Any]
    ) -> tuple[Plan, RolloutOptions, list[str]]:
        return plan_rollout(self.store, release_id, selector, params, self._options)

    def _options(self, params: dict[str, Any]) -> RolloutOptions:
        defaults = {
            "stage_timeout": self.deadlines.stage,
            "activate_timeout": self.deadlines.activate,
        }
        return RolloutOptions.from_params({**defaults, **params})

    def start_rollout(
        self,
        release_id: str,
        selector: str = "all",
        params: dict[str, Any] | None = None,
        admit: Admit | None = None,
    ) -> RolloutModel:
        """Every selected host to ``release_id`` (:func:`seeder.rollout_start.new_rollout`)."""
        return self._create(
            new_rollout(self.store, release_id, selector, params or {}, self._options, admit)
        )

    def start_rollback(
        self,
        selector: str = "all",
        to: str | None = None,
        params: dict[str, Any] | None = None,
        admit: Admit | None = None,
    ) -> RolloutModel:
        """Back to each host's previous release (or ``to``), through waves, from disk if it can
        (:func:`seeder.rollout_start.new_rollback`)."""
        return self._create(
            new_rollback(self.store, selector, to, params or {}, self._options, admit)
        )

    def _create(self, new: NewRollout) -> RolloutModel:
        busy: dict[str, list[str]] = {}
        for host in new.releases:
            other = self._rollouts.live_of(host)
            if other is not None and other.state not in TERMINAL:
                busy.setdefault(other.rollout_id, []).append(host)
        if busy:
            rollout_id, hosts = next(iter(busy.items()))
            state = self._rollouts.live[rollout_id].state
            raise Overlap(
                f"{len(hosts)} target(s) ({', '.join(hosts[:5])}) are in rollout {rollout_id} "
                f"({state}); wait for it to end, or pause or abort it"
            )
        now = self.clock()
        rollout_id = time.strftime("r%Y%m%d-%H%M%S-", time.gmtime(now)) + secrets.token_hex(3)
        self._token += 1
        model = new.model(rollout_id, self._token, now)
        self._rollouts.add(model)
        self._swarm_changed()  # the seeder admits the targets before they hear of the rollout
        log.info(
            "%s %s of %s on %d host(s)", new.kind, rollout_id, new.release_id, len(new.releases)
        )
        self._event(
            model,
            mc.Start(new.promotion.timeline_note()),
            create=True,
            flush=True,
            promotion=new.promotion,
        )
        return model

    def operator(self, rollout_id: str, action: str, *, kill: bool = False) -> RolloutModel:
        model = self.model(rollout_id)
        if model.rollout_id not in self._rollouts.live:
            raise mc.NotAllowed(f"rollout {rollout_id} has ended ({model.state.value})")
        self._event(model, mc.Operator(action, kill), flush=True)
        return model

    # --- peer reports --------------------------------------------------------------------------

    def on_report(self, host: str, report: m.StepReport, writer: PeerWriter | None = None) -> None:
        """Apply one step report (idempotently); the peer gets its ack once it is committed."""
        acks = [(writer, report.seq)] if writer is not None else []
        model = self._rollouts.cached(report.rollout_id)
        if model is None:
            try:
                model = self.model(report.rollout_id)
            except UnknownRollout:
                log.warning("report from %s for unknown rollout %s", host, report.rollout_id)
                self._ack_now(acks)
                return
        event = mc.Report(
            host=host,
            step=report.step,
            attempt=report.attempt,
            state=report.state,
            result=report.result,
            detail=report.detail,
            exit_code=report.exit_code,
            output=tuple(report.output),
            at=report.at,
        )
        self._event(model, event, acks=acks)

    def on_refused(self, host: str, msg: m.Refused) -> None:
        model = self._rollouts.live.get(msg.rollout_id)
        if model is not None:
            log.warning("peer %s refused rollout %s: %s", host, msg.rollout_id, msg.reason)
            self._event(model, mc.Refused(host, msg.token, msg.reason))

    # --- applying events -----------------------------------------------------------------------

    def _event(
        self,
        model: RolloutModel,
        event: mc.Event,
        *,
        acks: list[tuple[PeerWriter, int]] | None = None,
        create: bool = False,
        flush: bool = False,
        promotion: RolloutPromotion | None = None,
    ) -> None:
        now = self.clock()
        model, fx = mc.apply(model, event, now)
        if not (create or fx.dirty or fx.timeline or fx.commands or fx.rollout_changed):
            self._ack_now(acks or [])
            return
        timeline = []
        for kind, data in fx.timeline:
            timeline.append((self._rollouts.next_seq(model.rollout_id), now, kind, data))
        commit = Commit(
            rollout=model,
            targets=fx.dirty,
            rollout_changed=fx.rollout_changed,
            step=(event.host, fx.step) if isinstance(event, mc.Report) and fx.step else None,
            timeline=timeline,
            currents=[
                (c.host, c.release_id)
                for c in fx.commands
                if isinstance(c, mc.SetCurrent) and self._app_release(c.release_id)
            ],
            create=create,
            promotion=promotion,
        )
        if fx.rollout_changed or create:
            model.updated_at = now
        self._batch.append((commit, fx.commands, acks or []))
        left_live = (fx.rollout_changed or model.state in TERMINAL) and self._rollouts.keep(model)
        if left_live:
            self._swarm_changed()  # its swarm closes
        if flush:
            self._flush()
        else:
            self._batch_ready.set()

    def _flush(self) -> None:
        """Commit every pending event in one transaction, then send what they caused."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        self.store.commit([commit for commit, _, _ in batch])
        for commit, commands, acks in batch:
            self._ack_now(acks)
            for cmd in commands:
                self._dispatcher.dispatch(commit.rollout, cmd)
            for seq, at, kind, data in commit.timeline:
                try:
                    self.on_event(m.RolloutEvent(commit.rollout.rollout_id, seq, at, kind, data))
                except Exception:  # a subscriber's bug must not stop rollouts
                    log.exception("rollout event subscriber failed")

    def _ack_now(self, acks: list[tuple[PeerWriter, int]]) -> None:
        for writer, seq in acks:
            writer.offer(m.Ack(seq=seq))

    def _send(self, host: str, msg: m.Message) -> None:
        writer = self._writers.get(host)
        if writer is not None:  # else it gets the command again when it connects
            writer.offer(msg)

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._dispatcher.nursery = nursery
            for model in list(self._rollouts.live.values()):
                self._event(model, mc.Restarted())
            nursery.start_soon(self._committer)
            task_status.started()
            while True:
                await trio.sleep(TICK)
                self.tick()

    def tick(self) -> None:
        for model in list(self._rollouts.live.values()):
            self._event(model, mc.Tick())
        self._send_members()

    async def _committer(self) -> None:
        while True:
            await self._batch_ready.wait()
            self._batch_ready = trio.Event()
            # let the reports that arrived together share a transaction
            await trio.lowlevel.checkpoint()
            self._flush()

    def _app_release(self, release_id: str) -> bool:
        """A host's current release is an app's: a shoal upgrade is never one (nor a rollback
        target)."""
        found = self.store.release(release_id)
        return found is None or found[0].kind == "app"

    def host_record(self, hello: m.Hello) -> None:
        """A peer said hello: remember it (its labels, what it runs)."""
        now = self.clock()
        self.versions[hello.name] = hello.version  # in memory: said again on every connect
        record = HostRecord(
            hello.name,
            hello.address,
            hello.bt_port,
            hello.labels,
            hello.current,
            hello.staged,
            True,
            now,
        )
        self.store.upsert_host(record, now)
        if self.membership.host_seen(hello.name, hello.address):
            self._members_changed(hello.name)
