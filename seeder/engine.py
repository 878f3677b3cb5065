"""The rollout engine: applies peer reports to the store and tells peers what to do next.

It owns the live side of rollouts (which peers are connected, what was sent on which connection)
and leaves the decisions to :mod:`seeder.rollout`. After any change it re-evaluates every active
rollout; a timer tick also checks deadlines. Everything durable is in the store, so a restarted
seeder picks up where it left off: connected peers get their pending commands again, and peers
treat repeated commands idempotently.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from common import messages as m
from common.channel import Channel
from common.errors import ConnectionClosed, ShoalError
from common.pieces import slice_count
from seeder import rollout as plan
from seeder.store import Rollout, StepEvent, Store

log = logging.getLogger("shoal.seeder.engine")

# (release id, slice count) -> the [ip, port] of each slice seed offering that release
SliceProvider = Callable[[str, int], Awaitable[list[tuple[str, int]]]]

SWARM_PEERS = 30


class UnknownRelease(ShoalError):
    pass


def _ignore(event: m.RolloutEvent) -> None:
    pass


class Engine:
    def __init__(
        self,
        store: Store,
        *,
        seeder_bt: tuple[str, int],
        deadlines: plan.Deadlines | None = None,
        clock: Callable[[], float] = time.time,
        slice_seeds: SliceProvider | None = None,
        on_event: Callable[[m.RolloutEvent], None] = _ignore,
    ) -> None:
        self.store = store
        self.on_event = on_event
        self._seq: dict[str, int] = {}  # per rollout: the seq of its last event (this run)
        self.seeder_bt = seeder_bt
        self.deadlines = deadlines or plan.Deadlines()
        self.clock = clock
        self.slice_seeds = slice_seeds
        self._channels: dict[str, Channel] = {}
        self._sent: set[tuple[str, str, str, int]] = set()
        self._wake = trio.Event()

    # --- peers coming and going ----------------------------------------------------------------

    def attach(self, host: str, channel: Channel) -> None:
        self._channels[host] = channel
        # Nothing was sent on a new connection yet. (Keys hold id(channel), and the id of a
        # dead channel can be reused by the new one: without this, its commands were skipped.)
        self._sent = {key for key in self._sent if key[1] != host}
        self.store.set_host_connected(host, True, self.clock())
        self.wake()

    def detach(self, host: str, channel: Channel) -> None:
        if self._channels.get(host) is channel:
            del self._channels[host]
            self.store.set_host_connected(host, False, self.clock())

    def connected(self) -> set[str]:
        return set(self._channels)

    async def send_to(self, host: str, msg: m.Message) -> bool:
        """Send one message outside any rollout (a preflight check); False if it did not go."""
        channel = self._channels.get(host)
        if channel is None:
            return False
        try:
            await channel.send(msg)
        except ConnectionClosed:
            self.detach(host, channel)
            return False
        return True

    def wake(self) -> None:
        self._wake.set()

    # --- operator requests ---------------------------------------------------------------------

    def start_rollout(self, release_id: str, selector: str) -> Rollout:
        if self.store.release(release_id) is None:
            raise UnknownRelease(f"unknown release {release_id!r}")
        targets = plan.select_hosts(selector, self.store.hosts())
        now = self.clock()
        rollout_id = time.strftime("r%Y%m%d-%H%M%S-", time.gmtime(now)) + secrets.token_hex(2)
        self.store.create_rollout(rollout_id, release_id, selector, targets, now)
        log.info("rollout %s of %s on %d host(s)", rollout_id, release_id, len(targets))
        self._emit(rollout_id, "rollout", state="staging", error="", wave=None)
        self.wake()
        rollout = self.store.rollout(rollout_id)
        assert rollout is not None
        return rollout

    # --- reports -------------------------------------------------------------------------------

    def on_report(self, host: str, report: m.StepReport) -> None:
        """Store one step report (idempotently) and move the target along."""
        now = self.clock()
        event = StepEvent(
            rollout_id=report.rollout_id,
            host=host,
            step=report.step,
            attempt=report.attempt,
            state=report.state,
            result=report.result,
            detail=report.detail,
            exit_code=report.exit_code,
            output=report.output,
            at=report.at,
        )
        if not self.store.record_event(event, now):
            return
        step = {k: v for k, v in vars(event).items() if k not in ("rollout_id", "at")}
        self._emit(report.rollout_id, "step", **step)
        rollout = self.store.rollout(report.rollout_id)
        target = next((t for t in rollout.targets if t.host == host), None) if rollout else None
        if target is None:
            log.warning("report from %s for unknown rollout %s", host, report.rollout_id)
            return
        new_state = plan.target_state_after(target, report.step, report.state)
        error = report.detail if report.state == "failed" else None
        self.store.set_target(
            report.rollout_id, host, now, state=new_state, step=report.step, error=error
        )
        if new_state != target.state or report.step != target.step:
            self._target_event(report.rollout_id, host, new_state, report.step, error or "")
        if report.step == "activate" and report.state == "succeeded" and rollout is not None:
            self.store.set_host_current(host, rollout.release_id)
        self.wake()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(1.0):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.tick()

    async def tick(self) -> None:
        now = self.clock()
        for rollout in self.store.rollouts(active_only=True):
            late = plan.overdue(rollout, now, self.deadlines)
            for host in late:
                error = f"no result within the {rollout.state} deadline"
                self.store.set_target(rollout.rollout_id, host, now, state="failed", error=error)
                self._target_event(rollout.rollout_id, host, "failed", "", error)
            if late:
                rollout = self.store.rollout(rollout.rollout_id) or rollout
            outcome = plan.phase_outcome(rollout)
            if outcome is not None:
                state, error = outcome
                self.store.set_rollout_state(rollout.rollout_id, state, now, error)
                log.info("rollout %s: %s %s", rollout.rollout_id, state, error)
                self._emit(rollout.rollout_id, "rollout", state=state, error=error, wave=None)
                rollout.state = state
            actions = [
                a for a in plan.next_actions(rollout, self.connected()) if self._due(rollout, a)
            ]
            stage = None
            if any(a.kind == "stage" for a in actions):
                stage = await self._stage_plan(rollout)
            for action in actions:
                if action.kind == "stage" and stage is not None:
                    msg: m.Message = stage(action.host)
                else:
                    msg = m.Activate(rollout_id=rollout.rollout_id, release_id=rollout.release_id)
                await self._send(rollout, action, msg)

    def _due(self, rollout: Rollout, action: plan.Action) -> bool:
        """Not yet sent on the host's current connection (a new connection gets it again)."""
        channel = self._channels[action.host]
        return (rollout.rollout_id, action.host, action.kind, id(channel)) not in self._sent

    async def _send(self, rollout: Rollout, action: plan.Action, msg: m.Message) -> None:
        channel = self._channels.get(action.host)
        if channel is None:
            return
        self._sent.add((rollout.rollout_id, action.host, action.kind, id(channel)))
        now = self.clock()
        state = "staging" if action.kind == "stage" else "activating"
        self.store.set_target(rollout.rollout_id, action.host, now, state=state)
        before = next((t for t in rollout.targets if t.host == action.host), None)
        if before is not None and before.state != state:
            self._target_event(rollout.rollout_id, action.host, state, before.step, before.error)
        try:
            await channel.send(msg)
        except ConnectionClosed:
            self.detach(action.host, channel)

    def _emit(self, rollout_id: str, kind: str, **data: Any) -> None:
        """Hand one timeline event to ``on_event`` (the watchers' hub)."""
        seq = self._seq[rollout_id] = self._seq.get(rollout_id, 0) + 1
        self.on_event(
            m.RolloutEvent(rollout_id=rollout_id, seq=seq, at=self.clock(), kind=kind, data=data)
        )

    def _target_event(self, rollout_id: str, host: str, state: str, step: str, error: str) -> None:
        self._emit(rollout_id, "target", host=host, state=state, step=step, wave=None, error=error)

    async def _stage_plan(self, rollout: Rollout) -> Callable[[str], m.Stage]:
        """What every target of a rollout is told to stage (the store is read once per tick)."""
        found = self.store.release(rollout.release_id)
        assert found is not None
        manifest, torrent = found
        records = {h.name: h for h in self.store.hosts()}
        names = [t.host for t in rollout.targets]
        addresses = {n: [records[n].address, records[n].bt_port] for n in names if n in records}
        count = slice_count(len(names))
        seeds = await self.slice_seeds(rollout.release_id, count) if self.slice_seeds else []

        def message(host: str) -> m.Stage:
            others = [a for n, a in addresses.items() if n != host]
            random.shuffle(others)
            peers = others[:SWARM_PEERS]
            index = names.index(host)
            if self.slice_seeds is None:  # the seeder is one plain seed in the swarm
                peers.insert(0, [self.seeder_bt[0], self.seeder_bt[1]])
            return m.Stage(
                rollout_id=rollout.rollout_id,
                manifest=manifest.to_dict(),
                torrent=torrent,
                peers=peers,
                slice=[index, count] if self.slice_seeds and index < count else [],
                slice_seeds=[[ip, port] for ip, port in seeds],
            )

        return message
