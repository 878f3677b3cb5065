"""The seeder's event hub: rollout events fanned out to the CLIs that subscribed to them.

Events are published under a *topic*: ``("rollout", ROLLOUT_ID)`` for a rollout's timeline and
download progress, ``("output", HOST)`` for the live hook output of one host. Each subscriber has
its own bounded trio memory channel. Publishing never blocks and never fails: a subscriber whose
buffer is full (it reads slower than events arrive) is *dropped* — its channel is closed after the
events already buffered, and :attr:`Subscription.ended` says ``"lagged"``. The CLI then subscribes
again and gets a fresh snapshot (a resync), so a slow terminal never delays the engine and never
shows a state with events silently missing.

An ``end`` event closes every stream on the wire (see :func:`end_event`), with the reason:
``final`` (the rollout reached a state it does not leave by itself), ``lagged`` (see above) or
``closed`` (the seeder is shutting down).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Final

import trio

from common import messages as m

Topic = tuple[str, str]

# Events a subscriber may fall behind by before it is dropped: room for a burst over thousands
# of hosts (e.g. one Stage per target in one tick), at a few hundred bytes each.
SUBSCRIBER_BUFFER: Final = 8192

# Rollout states a rollout does not leave without an operator: a watch stream ends there.
# ("halted" waits for a decision: the stream ends and the CLI says so; subscribe again to follow
# a resumed or rolled back rollout.)
STREAM_ENDS: Final = frozenset({"succeeded", "failed", "aborted", "halted"})

LAGGED: Final = "lagged"
FINAL: Final = "final"
CLOSED: Final = "closed"


def rollout_topic(rollout_id: str) -> Topic:
    return ("rollout", rollout_id)


def output_topic(host: str) -> Topic:
    return ("output", host)


def is_end(event: m.RolloutEvent) -> bool:
    """Whether ``event`` makes a rollout stream end (the rollout reached a STREAM_ENDS state)."""
    return event.kind == "rollout" and event.data.get("state") in STREAM_ENDS


def end_event(rollout_id: str, reason: str, detail: str, now: float) -> m.RolloutEvent:
    """The last event of every stream, saying why it ends."""
    return m.RolloutEvent(
        rollout_id=rollout_id,
        seq=0,
        at=now,
        kind="end",
        data={"reason": reason, "detail": detail},
    )


class Subscription:
    """One subscriber's view of a topic: iterate it for events; then read :attr:`ended`."""

    def __init__(self, topics: tuple[Topic, ...], buffer: int) -> None:
        self.topics = topics
        self.ended: str | None = None  # why the hub stopped feeding it (None: it left itself)
        self._send, self._receive = trio.open_memory_channel[m.RolloutEvent](buffer)

    def _offer(self, event: m.RolloutEvent) -> bool:
        """Hand over one event without blocking; False if the subscriber is too far behind."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            return False
        except trio.BrokenResourceError:  # the subscriber closed its end: nobody to tell
            return False
        return True

    def _close(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self._send.close()

    async def __aiter__(self) -> AsyncIterator[m.RolloutEvent]:
        async for event in self._receive:
            yield event


class EventHub:
    """Fan-out of events to subscribers, per topic. One writer (the publisher), many readers."""

    def __init__(self, *, buffer: int = SUBSCRIBER_BUFFER) -> None:
        self.buffer = buffer
        self._subscribers: dict[Topic, set[Subscription]] = {}
        self.dropped = 0  # subscribers dropped for lagging, since start (diagnostics)

    def publish(self, topic: Topic, event: m.RolloutEvent) -> None:
        """Give ``event`` to every subscriber of ``topic``; never blocks."""
        for sub in list(self._subscribers.get(topic, ())):
            if not sub._offer(event):
                self._remove(sub)
                sub._close(LAGGED)
                self.dropped += 1

    def subscribers(self, topic: Topic) -> int:
        return len(self._subscribers.get(topic, ()))

    @contextmanager
    def subscribe(self, *topics: Topic) -> Iterator[Subscription]:
        """Receive the events of ``topics`` published from now on, until the block exits."""
        sub = Subscription(topics, self.buffer)
        for topic in topics:
            self._subscribers.setdefault(topic, set()).add(sub)
        try:
            yield sub
        finally:
            self._remove(sub)
            sub._close(CLOSED)
            sub._receive.close()

    def close(self) -> None:
        """End every subscription (the seeder is stopping)."""
        for sub in {s for subs in self._subscribers.values() for s in subs}:
            self._remove(sub)
            sub._close(CLOSED)

    def _remove(self, sub: Subscription) -> None:
        for topic in sub.topics:
            subs = self._subscribers.get(topic)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[topic]
