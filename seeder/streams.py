"""The watching side of the control server: ``rollout.subscribe``, ``logs.get``, ``logs.subscribe``.

A subscription answers with a snapshot and then pushes events (see :mod:`seeder.events`). The
subscription is taken *before* the snapshot is read, so no event can fall between the two; an
event may then also be in the snapshot's timeline, which the client skips by its ``seq``.

A host's hook output comes from two places: the live lines the seeder kept in memory
(:mod:`seeder.live`, complete while they fit, lost on a restart) and the durable tail that each
step report carries. For each step the live lines are used when the seeder has them, else the tail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from common import messages as m
from common.errors import ShoalError
from seeder import views
from seeder.control import Handler, Reply, StreamHandler
from seeder.engine import Engine
from seeder.events import (
    CLOSED,
    FINAL,
    STREAM_ENDS,
    EventHub,
    end_event,
    is_end,
    output_topic,
    rollout_topic,
)
from seeder.live import LiveLog
from seeder.model import RolloutModel
from seeder.rollout_cache import UnknownRollout
from seeder.store import Store

LATEST_SCAN = 200  # rollouts searched, newest first, for a host's latest one


class UnknownHost(ShoalError):
    pass


def publisher(hub: EventHub) -> Callable[[m.RolloutEvent], None]:
    """The engine's ``on_event``: each rollout timeline event goes to that rollout's topic."""

    def on_event(event: m.RolloutEvent) -> None:
        hub.publish(rollout_topic(event.rollout_id), event)

    return on_event


class Watching:
    """The hub and the live log, and the control-server methods that read them."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        hub: EventHub,
        live: LiveLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.engine = engine
        self.hub = hub
        self.live = live
        self.clock = clock

    # --- what peers feed in ------------------------------------------------------------------

    def observe(self, host: str, msg: m.OutputLine | m.Progress) -> None:
        """A live observation from a peer connection (best effort, memory only)."""
        now = self.clock()
        if isinstance(msg, m.OutputLine):
            self.hub.publish(output_topic(host), self.live.output(host, msg, now))
        else:
            self.hub.publish(rollout_topic(msg.rollout_id), self.live.progress(host, msg, now))

    # --- control-server methods --------------------------------------------------------------

    def methods(self) -> dict[str, Handler]:
        async def logs_get(params: dict[str, Any]) -> dict[str, Any]:
            return self.logs(str(params["host"]), _opt(params.get("rollout_id")))

        return {"logs.get": logs_get}

    def streams(self) -> dict[str, StreamHandler]:
        return {"rollout.subscribe": self.rollout_subscribe, "logs.subscribe": self.logs_subscribe}

    async def rollout_subscribe(self, params: dict[str, Any], reply: Reply) -> None:
        """Snapshot ``{rollout, progress, release: {size}}``, then the rollout's events until
        it ends."""
        wanted = _opt(params.get("rollout_id"))
        rollout_id = wanted or self.engine.latest().rollout_id
        with self.hub.subscribe(rollout_topic(rollout_id)) as sub:
            view = await views.rollout(self.store, self.engine.model(rollout_id))
            found = self.store.release(str(view["release_id"]))
            size = found[0].size if found else 0
            await reply.respond(
                {
                    "rollout": view,
                    "progress": self.live.progress_of(rollout_id),
                    "release": {"size": size},
                }
            )
            if view["state"] in STREAM_ENDS:
                await reply.push(self._end(rollout_id, FINAL, f"the rollout is {view['state']}"))
                return
            async for event in sub:
                await reply.push(event)
                if is_end(event):
                    detail = f"the rollout is {event.data['state']}"
                    await reply.push(self._end(rollout_id, FINAL, detail))
                    return
            await reply.push(self._end(rollout_id, sub.ended or CLOSED, _why(sub.ended)))

    async def logs_subscribe(self, params: dict[str, Any], reply: Reply) -> None:
        """Snapshot as ``logs.get``, then the host's new output lines as they arrive.

        With ``rollout_id``, only that rollout's lines, until it ends; without, every rollout's,
        until the client leaves."""
        host = str(params["host"])
        wanted = _opt(params.get("rollout_id"))
        topics = [output_topic(host)]
        if wanted:
            topics.append(rollout_topic(wanted))
        self._check_host(host)
        with self.hub.subscribe(*topics) as sub:
            snapshot = self.logs(host, wanted)
            await reply.respond(snapshot)
            rollout_id = wanted or snapshot["rollout_id"]
            if wanted and snapshot["state"] in STREAM_ENDS:
                await reply.push(self._end(wanted, FINAL, f"the rollout is {snapshot['state']}"))
                return
            async for event in sub:
                if event.kind == "output" and (not wanted or event.rollout_id == wanted):
                    await reply.push(event)
                elif wanted and is_end(event):
                    detail = f"the rollout is {event.data['state']}"
                    await reply.push(self._end(wanted, FINAL, detail))
                    return
            await reply.push(self._end(rollout_id, sub.ended or CLOSED, _why(sub.ended)))

    # --- views -------------------------------------------------------------------------------

    def logs(self, host: str, rollout_id: str | None) -> dict[str, Any]:
        """A host's hook output in one rollout (default: its latest), oldest line first."""
        self._check_host(host)
        rollout = self._rollout_of(host, rollout_id)
        if rollout is None:
            return {"host": host, "rollout_id": "", "state": "", "lines": []}
        rid = rollout.rollout_id
        # Steps in the order the host reported them (a hook reports "running" before printing);
        # steps the seeder has only live lines of (no report yet) come last.
        live: dict[str, list[dict[str, Any]]] = {}
        for line in self.live.lines(host, rid):
            live.setdefault(line.step, []).append(line.to_dict())
        lines: list[dict[str, Any]] = []
        for ev in sorted(rollout.targets[host].steps.values(), key=lambda s: s.at):
            if ev.step in live:
                lines += live.pop(ev.step)
            else:
                lines += [
                    {"rollout_id": rid, "host": host, "step": ev.step, "line": text, "at": ev.at}
                    for text in ev.output
                ]
        for rest in live.values():
            lines += rest
        return {"host": host, "rollout_id": rid, "state": rollout.state.value, "lines": lines}

    def _check_host(self, host: str) -> None:
        if not any(h.name == host for h in self.store.hosts()):
            raise UnknownHost(f"unknown host {host!r}")

    def _rollout_of(self, host: str, rollout_id: str | None) -> RolloutModel | None:
        if rollout_id:
            found = self.engine.model(rollout_id)
            if host not in found.targets:
                raise UnknownRollout(f"host {host!r} is not a target of rollout {rollout_id}")
            return found
        live = self.engine.host_target(host)
        if live is not None:
            return self.engine.model(live[0])
        for rid in self.store.rollout_ids(limit=LATEST_SCAN):  # newest first
            model = self.engine.model(rid)
            if host in model.targets:
                return model
        return None

    def _end(self, rollout_id: str, reason: str, detail: str) -> m.RolloutEvent:
        return end_event(rollout_id, reason, detail, self.clock())


def _why(reason: str | None) -> str:
    if reason == "lagged":
        return "this client fell too far behind; subscribe again for a fresh snapshot"
    return "the seeder is closing the stream"


def _opt(value: object) -> str | None:
    return str(value) if value not in (None, "") else None
