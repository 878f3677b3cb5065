"""Carrying out the rollout machine's commands: Stage, Activate and Abort to peers, and gates.

Split out of :mod:`seeder.engine` (one concept per file): the engine commits an event and its
effects, then hands each command here. A rollout's Stage message is prepared once per release
(:func:`seeder.stageplan.stage_message` reads the release and plans its slices) in the
background; Stage commands that arrive meanwhile wait for it. Every Stage goes right after the
rollout's swarm members, so a peer knows whom to trade with first. A gate runs in the background
and its result comes back to the engine as a machine event through ``on_event``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from common import messages as m
from seeder import machine as mc
from seeder.gate import gate_environment, run_gate
from seeder.membership import Membership
from seeder.model import RolloutModel
from seeder.stageplan import SliceProvider, stage_message
from seeder.store import Store

log = logging.getLogger("shoal.seeder.engine")  # the engine's own: its log lines are unchanged

Send = Callable[[str, m.Message], None]  # to a host's writer, if it is connected
OnMachineEvent = Callable[[RolloutModel, mc.Event], None]


class Dispatcher:
    """Turns commands into messages and background work; :attr:`nursery` must be set (by
    ``Engine.run``) before the first Stage or gate."""

    def __init__(
        self,
        store: Store,
        membership: Membership,
        send: Send,
        on_event: OnMachineEvent,
        *,
        seeder_bt: tuple[str, int],
        slice_seeds: SliceProvider | None,
    ) -> None:
        self.store = store
        self.membership = membership
        self.send = send
        self.on_event = on_event
        self.seeder_bt = seeder_bt
        self.slice_seeds = slice_seeds
        self.nursery: trio.Nursery | None = None
        self._stage_plans: dict[tuple[str, str], Callable[[str], m.Stage]] = {}
        self._stage_waiting: dict[tuple[str, str], list[mc.SendStage]] = {}

    def dispatch(self, r: RolloutModel, cmd: mc.Command) -> None:
        if isinstance(cmd, mc.SendStage):
            key = (r.rollout_id, cmd.release_id)
            build = self._stage_plans.get(key)
            if build is not None:
                self.send(cmd.host, self.membership.message(r))
                self.send(cmd.host, build(cmd.host))
            else:
                waiting = self._stage_waiting.setdefault(key, [])
                waiting.append(cmd)
                if len(waiting) == 1:
                    assert self.nursery is not None, "Engine.run() must be running"
                    self.nursery.start_soon(self._prepare_stage, r, cmd.release_id)
        elif isinstance(cmd, mc.SendActivate):
            self.send(
                cmd.host,
                m.Activate(
                    rollout_id=r.rollout_id,
                    release_id=cmd.release_id,
                    attempt=cmd.attempt,
                    token=cmd.token,
                ),
            )
        elif isinstance(cmd, mc.SendAbort):
            self.send(cmd.host, m.Abort(rollout_id=r.rollout_id, token=cmd.token, kill=cmd.kill))
        elif isinstance(cmd, mc.RunGate):
            assert self.nursery is not None, "Engine.run() must be running"
            self.nursery.start_soon(self._gate, r, cmd)

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
            self.send(cmd.host, self.membership.message(r))
            self.send(cmd.host, build(cmd.host))

    async def _gate(self, r: RolloutModel, cmd: mc.RunGate) -> None:
        env = gate_environment(r.rollout_id, r.release_id, cmd.wave + 1, cmd.hosts)
        log.info("rollout %s: gate after wave %d: %s", r.rollout_id, cmd.wave + 1, cmd.command)
        outcome = await run_gate(cmd.command, env, cmd.timeout)
        self.on_event(r, mc.GateResult(cmd.wave, outcome.exit_code, outcome.output, outcome.detail))
