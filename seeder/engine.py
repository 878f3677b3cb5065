"""The rollout engine: the IO shell around :mod:`seeder.machine`.

It turns what happens (reports, refusals, connections, operator requests, gate results, time) into
machine events, commits each event together with the state change it caused in one store
transaction (events arriving together share one transaction), and only then hands the resulting
commands to the per-peer writers and the timeline entries to ``on_event``. Live rollouts stay in
memory, so an event costs O(1) in the number of targets. After a restart it reloads the live
rollouts; peers reconnect and get the command of their target's state again.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from common import messages as m
from common.errors import ShoalError
from seeder import machine as mc
from seeder.environments import envs_of
from seeder.gate import gate_environment, run_gate
from seeder.membership import Membership
from seeder.model import RolloutModel, TargetModel
from seeder.selector import select_hosts
from seeder.stageplan import SliceProvider, UnknownRelease, stage_message
from seeder.states import TERMINAL, TargetState
from seeder.store import HostRecord, Store
from seeder.store_promotions import RolloutPromotion
from seeder.store_rollouts import Commit
from seeder.waves import Plan, PlanError, RolloutOptions, plan_waves
from seeder.writers import PeerWriter

log = logging.getLogger("shoal.seeder.engine")

OnEvent = Callable[[m.RolloutEvent], None]
# Asked before a rollout is created, with its release and its targets' envs (host -> env, "" for
# none): raises to refuse it, else returns the promotion verdict to record with it (None: none).
Admit = Callable[[str, Mapping[str, str]], dict[str, Any] | None]

TICK = 0.5
CACHE = 8  # finished rollouts kept in memory for status and show


class UnknownRollout(ShoalError):
    pass


class Overlap(ShoalError):
    """Targets of a new rollout are still in another rollout."""


@dataclass(frozen=True)
class Deadlines:
    stage: float = 1800.0
    activate: float = 3600.0


def _no_event(event: m.RolloutEvent) -> None:
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
    ) -> None:
        self.store = store
        self.seeder_bt = seeder_bt
        self.deadlines = deadlines or Deadlines()
        self.clock = clock
        self.slice_seeds = slice_seeds
        self.on_event = on_event
        self.last_seen: dict[str, float] = {}
        self.versions: dict[str, str] = {}  # host -> the shoal version its last hello named
        self._writers: dict[str, PeerWriter] = {}
        self._live: dict[str, RolloutModel] = {}
        self._finished: OrderedDict[str, RolloutModel] = OrderedDict()
        self._by_host: dict[str, str] = {}  # host -> id of the newest rollout it is in
        self._seq: dict[str, int] = {}
        self._token = store.max_token()
        self._batch: list[tuple[Commit, list[mc.Command], list[tuple[PeerWriter, int]]]] = []
        self._batch_ready = trio.Event()
        self._stage_plans: dict[tuple[str, str], Callable[[str], m.Stage]] = {}
        self._stage_waiting: dict[tuple[str, str], list[mc.SendStage]] = {}
        self._nursery: trio.Nursery | None = None
        self.membership = Membership(store.hosts(), [seeder_bt[0]])
        self._members_dirty: set[str] = set()  # live rollouts whose swarm changed since a tick
        for rollout_id in reversed(store.rollout_ids(live_only=True, limit=1000)):
            self._adopt(rollout_id)

    def _adopt(self, rollout_id: str) -> RolloutModel | None:
        model = self.store.load_rollout(rollout_id)
        if model is None:
            return None
        self._seq[rollout_id] = self.store.max_seq(rollout_id)
        self._keep(model)
        for host in model.targets:
            self._by_host[host] = rollout_id
        return model

    def _keep(self, model: RolloutModel) -> None:
        busy = model.counts[TargetState.PENDING] + model.counts[TargetState.STAGING]
        live = model.state not in TERMINAL or model.in_flight or busy
        if live:
            self._live[model.rollout_id] = model
            self._finished.pop(model.rollout_id, None)
        else:
            self._live.pop(model.rollout_id, None)
            self._finished[model.rollout_id] = model
            self._finished.move_to_end(model.rollout_id)
            while len(self._finished) > CACHE:
                self._finished.popitem(last=False)

    # --- lookups -------------------------------------------------------------------------------

    def model(self, rollout_id: str) -> RolloutModel:
        found = self._live.get(rollout_id) or self._finished.get(rollout_id)
        if found is None:
            found = self.store.load_rollout(rollout_id)
            if found is None:
                raise UnknownRollout(f"unknown rollout {rollout_id!r}")
            self._seq.setdefault(rollout_id, self.store.max_seq(rollout_id))
            self._keep(found)
        return found

    def latest(self) -> RolloutModel:
        ids = self.store.rollout_ids(limit=1)
        if not ids:
            raise UnknownRollout("no rollout has been started yet")
        return self.model(ids[0])

    def host_target(self, host: str) -> tuple[str, TargetModel] | None:
        rollout_id = self._by_host.get(host)
        if rollout_id is None:
            return None
        r = self._live.get(rollout_id) or self._finished.get(rollout_id)
        return (rollout_id, r.targets[host]) if r is not None else None

    # --- peers coming and going ----------------------------------------------------------------

    def attach(self, host: str, writer: PeerWriter) -> None:
        old = self._writers.get(host)
        if old is not None and old is not writer:
            old.stop()
        self._writers[host] = writer
        self.last_seen[host] = self.clock()
        rollout_id = self._by_host.get(host)
        if rollout_id in self._live:
            writer.offer(self.membership.message(self._live[rollout_id]))  # before any Stage
            self._event(self._live[rollout_id], mc.Connected(host))

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
        return self.membership.union(self._live.values())

    def host_left(self, host: str) -> None:
        """A host is no longer enrolled (revoked): its rollout's swarm closes to it now."""
        if self.membership.forget(host):
            self._members_changed(host)

    def _members_changed(self, host: str) -> None:
        """The swarm of the host's live rollout changed: its connected targets are told at the
        next tick, so many hosts changing at once (a renumbering) cost one list per target."""
        rollout_id = self._by_host.get(host)
        if rollout_id in self._live:
            self._members_dirty.add(rollout_id)

    def _send_members(self) -> None:
        dirty, self._members_dirty = self._members_dirty, set()
        for rollout_id in dirty:
            r = self._live.get(rollout_id)
            if r is not None:
                msg = self.membership.message(r)
                for target in r.targets:
                    self._send(target, msg)

    # --- operator requests ---------------------------------------------------------------------

    def plan(
        self, release_id: str, selector: str, params: dict[str, Any]
    ) -> tuple[Plan, RolloutOptions, list[str]]:
        if self.store.release(release_id) is None:
            raise UnknownRelease(f"unknown release {release_id!r}")
        hosts = self.store.hosts()
        targets = select_hosts(selector, hosts)
        opts = self._options(params)
        labels = {h.name: h.labels for h in hosts}
        return plan_waves(targets, labels, opts), opts, targets

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
        plan, opts, targets = self.plan(release_id, selector, params or {})
        hosts = self.store.hosts()
        current = {h.name: h.current for h in hosts}
        releases = {h: release_id for h in targets}
        envs = envs_of(hosts, releases)
        promotion = RolloutPromotion(envs, admit(release_id, envs) if admit else None)
        return self._create(
            "rollout", release_id, selector, plan, opts, releases, current, promotion
        )

    def start_rollback(
        self,
        selector: str = "all",
        to: str | None = None,
        params: dict[str, Any] | None = None,
        admit: Admit | None = None,
    ) -> RolloutModel:
        """Back to each host's previous release (or ``to``), through waves, from disk if it can.
        ``admit`` is asked only about a rollback ``to`` a named release."""
        hosts = self.store.hosts()
        records = {h.name: h for h in hosts}
        chosen = select_hosts(selector, hosts)
        if to is not None and self.store.release(to) is None:
            raise UnknownRelease(f"unknown release {to!r}")
        releases: dict[str, str] = {}
        unknown = []
        for name in chosen:
            goal = to or records[name].previous
            if goal is None:
                unknown.append(name)
            elif goal != records[name].current:
                releases[name] = goal
        if unknown:
            raise PlanError(
                f"no previous release is known for {', '.join(unknown)}; name one with --to"
            )
        if not releases:
            raise PlanError(f"every selected host already runs {to or 'its previous release'}")
        missing = sorted({r for r in releases.values() if self.store.release(r) is None})
        if missing:
            raise UnknownRelease(f"release(s) {', '.join(missing)} are no longer on the seeder")
        opts = self._options(params or {})
        plan = plan_waves(sorted(releases), {h.name: h.labels for h in hosts}, opts)
        current = {h.name: h.current for h in hosts}
        envs = envs_of(hosts, releases)
        verdict = admit(to, envs) if admit is not None and to is not None else None
        promotion = RolloutPromotion(envs, verdict)
        kind, target = "rollback", to or "previous"
        return self._create(kind, target, selector, plan, opts, releases, current, promotion)

    def _create(
        self,
        kind: str,
        release_id: str,
        selector: str,
        plan: Plan,
        opts: RolloutOptions,
        releases: dict[str, str],
        current: dict[str, str | None],
        promotion: RolloutPromotion,
    ) -> RolloutModel:
        busy: dict[str, list[str]] = {}
        for host in releases:
            other = self._by_host.get(host)
            if other in self._live and self._live[other].state not in TERMINAL:
                busy.setdefault(other, []).append(host)
        if busy:
            rollout_id, hosts = next(iter(busy.items()))
            state = self._live[rollout_id].state
            raise Overlap(
                f"{len(hosts)} target(s) ({', '.join(hosts[:5])}) are in rollout {rollout_id} "
                f"({state}); wait for it to end, or pause or abort it"
            )
        now = self.clock()
        rollout_id = time.strftime("r%Y%m%d-%H%M%S-", time.gmtime(now)) + secrets.token_hex(3)
        self._token += 1
        model = RolloutModel(
            rollout_id=rollout_id,
            release_id=release_id,
            selector=selector,
            kind=kind,
            token=self._token,
            options=opts,
            plan=plan,
            created_at=now,
            updated_at=now,
        )
        for index, wave in enumerate(plan.waves):
            for host in wave:
                model.targets[host] = TargetModel(
                    host, releases[host], current.get(host), index, updated_at=now
                )
        model.reindex()
        self._seq[rollout_id] = 0
        self._live[rollout_id] = model
        for host in model.targets:
            self._by_host[host] = rollout_id
        log.info("%s %s of %s on %d host(s)", kind, rollout_id, release_id, len(releases))
        self._event(
            model,
            mc.Start(promotion.timeline_note()),
            create=True,
            flush=True,
            promotion=promotion,
        )
        return model

    def operator(self, rollout_id: str, action: str, *, kill: bool = False) -> RolloutModel:
        model = self.model(rollout_id)
        if model.rollout_id not in self._live:
            raise mc.NotAllowed(f"rollout {rollout_id} has ended ({model.state.value})")
        self._event(model, mc.Operator(action, kill), flush=True)
        return model

    # --- peer reports --------------------------------------------------------------------------

    def on_report(self, host: str, report: m.StepReport, writer: PeerWriter | None = None) -> None:
        """Apply one step report (idempotently); the peer gets its ack once it is committed."""
        acks = [(writer, report.seq)] if writer is not None else []
        model = self._live.get(report.rollout_id) or self._finished.get(report.rollout_id)
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
        model = self._live.get(msg.rollout_id)
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
            self._seq[model.rollout_id] += 1
            timeline.append((self._seq[model.rollout_id], now, kind, data))
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
        if fx.rollout_changed or model.state in TERMINAL:
            self._keep(model)
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
                self._dispatch(commit.rollout, cmd)
            for seq, at, kind, data in commit.timeline:
                try:
                    self.on_event(m.RolloutEvent(commit.rollout.rollout_id, seq, at, kind, data))
                except Exception:  # a subscriber's bug must not stop rollouts
                    log.exception("rollout event subscriber failed")

    def _ack_now(self, acks: list[tuple[PeerWriter, int]]) -> None:
        for writer, seq in acks:
            writer.offer(m.Ack(seq=seq))

    def _dispatch(self, r: RolloutModel, cmd: mc.Command) -> None:
        if isinstance(cmd, mc.SendStage):
            key = (r.rollout_id, cmd.release_id)
            build = self._stage_plans.get(key)
            if build is not None:
                self._send(cmd.host, self.membership.message(r))
                self._send(cmd.host, build(cmd.host))
            else:
                waiting = self._stage_waiting.setdefault(key, [])
                waiting.append(cmd)
                if len(waiting) == 1:
                    assert self._nursery is not None, "Engine.run() must be running"
                    self._nursery.start_soon(self._prepare_stage, r, cmd.release_id)
        elif isinstance(cmd, mc.SendActivate):
            self._send(
                cmd.host,
                m.Activate(
                    rollout_id=r.rollout_id,
                    release_id=cmd.release_id,
                    attempt=cmd.attempt,
                    token=cmd.token,
                ),
            )
        elif isinstance(cmd, mc.SendAbort):
            self._send(cmd.host, m.Abort(rollout_id=r.rollout_id, token=cmd.token, kill=cmd.kill))
        elif isinstance(cmd, mc.RunGate):
            assert self._nursery is not None, "Engine.run() must be running"
            self._nursery.start_soon(self._gate, r, cmd)

    def _send(self, host: str, msg: m.Message) -> None:
        writer = self._writers.get(host)
        if writer is not None:  # else it gets the command again when it connects
            writer.offer(msg)

    async def _prepare_stage(self, r: RolloutModel, release_id: str) -> None:
        key = (r.rollout_id, release_id)
        try:
            build = await stage_message(
                self.store, r, release_id, seeder_bt=self.seeder_bt, slice_seeds=self.slice_seeds
            )
        except Exception:
            log.exception("cannot prepare the Stage of %s for rollout %s", release_id, r.rollout_id)
            self._stage_waiting.pop(key, None)
            return
        self._stage_plans[key] = build
        for cmd in self._stage_waiting.pop(key, []):
            self._send(cmd.host, self.membership.message(r))
            self._send(cmd.host, build(cmd.host))

    async def _gate(self, r: RolloutModel, cmd: mc.RunGate) -> None:
        env = gate_environment(r.rollout_id, r.release_id, cmd.wave + 1, cmd.hosts)
        log.info("rollout %s: gate after wave %d: %s", r.rollout_id, cmd.wave + 1, cmd.command)
        outcome = await run_gate(cmd.command, env, cmd.timeout)
        self._event(r, mc.GateResult(cmd.wave, outcome.exit_code, outcome.output, outcome.detail))

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for model in list(self._live.values()):
                self._event(model, mc.Restarted())
            nursery.start_soon(self._committer)
            task_status.started()
            while True:
                await trio.sleep(TICK)
                self.tick()

    def tick(self) -> None:
        for model in list(self._live.values()):
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
