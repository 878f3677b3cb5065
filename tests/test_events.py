"""The seeder's event hub and live log: fan-out, bounded subscribers, lagging ones dropped."""

from __future__ import annotations

import trio
import trio.testing

from common import messages as m
from seeder.events import (
    CLOSED,
    LAGGED,
    EventHub,
    end_event,
    is_end,
    output_topic,
    rollout_topic,
)
from seeder.live import LiveLog

R1 = rollout_topic("r1")


def ev(seq: int, kind: str = "target", **data: object) -> m.RolloutEvent:
    return m.RolloutEvent(rollout_id="r1", seq=seq, at=float(seq), kind=kind, data=dict(data))


async def drain(sub: object) -> list[int]:
    return [e.seq async for e in sub]  # type: ignore[attr-defined]


async def test_every_subscriber_gets_every_event_of_its_topic_in_order() -> None:
    hub = EventHub(buffer=8)
    with hub.subscribe(R1) as a, hub.subscribe(R1) as b, hub.subscribe(rollout_topic("r2")) as c:
        for seq in range(1, 6):
            hub.publish(R1, ev(seq))
        hub.close()
        assert await drain(a) == [1, 2, 3, 4, 5]
        assert await drain(b) == [1, 2, 3, 4, 5]
        assert await drain(c) == []
        assert (a.ended, b.ended, c.ended) == (CLOSED, CLOSED, CLOSED)


async def test_a_slow_subscriber_is_dropped_and_never_blocks_the_publisher(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub(buffer=4)
    got_fast: list[int] = []
    with hub.subscribe(R1) as slow, hub.subscribe(R1) as fast:
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                async for e in fast:
                    got_fast.append(e.seq)

            nursery.start_soon(reader)
            start = trio.current_time()
            for seq in range(1, 11):
                hub.publish(R1, ev(seq))  # synchronous: cannot block, whatever readers do
                await trio.sleep(0.01)  # the fast reader keeps up between events
            assert trio.current_time() - start < 1
            assert hub.subscribers(R1) == 1  # the slow one is gone, the fast one stays
            hub.close()
        # The slow subscriber still reads what it had buffered, then learns why it ended.
        assert await drain(slow) == [1, 2, 3, 4]
        assert slow.ended == LAGGED
        assert got_fast == list(range(1, 11))
        assert fast.ended == CLOSED
        assert hub.dropped == 1


async def test_leaving_unsubscribes() -> None:
    hub = EventHub()
    with hub.subscribe(R1, output_topic("web-1")):
        assert hub.subscribers(R1) == hub.subscribers(output_topic("web-1")) == 1
    assert hub.subscribers(R1) == hub.subscribers(output_topic("web-1")) == 0
    hub.publish(R1, ev(1))  # nobody listens: nothing happens


async def test_one_subscription_can_follow_several_topics() -> None:
    hub = EventHub()
    with hub.subscribe(R1, output_topic("web-1")) as sub:
        hub.publish(output_topic("web-1"), ev(1, "output"))
        hub.publish(output_topic("web-2"), ev(2, "output"))
        hub.publish(R1, ev(3))
        hub.close()
        assert await drain(sub) == [1, 3]


def test_end_events() -> None:
    assert is_end(ev(1, "rollout", state="succeeded"))
    assert is_end(ev(1, "rollout", state="halted"))
    assert not is_end(ev(1, "rollout", state="paused"))
    assert not is_end(ev(1, "target", state="failed"))
    end = end_event("r1", LAGGED, "too slow", 5.0)
    assert (end.kind, end.seq, end.data) == ("end", 0, {"reason": LAGGED, "detail": "too slow"})


def line(step: str, text: str, rollout_id: str = "r1", host: str = "web-1") -> m.OutputLine:
    return m.OutputLine(rollout_id=rollout_id, host=host, step=step, line=text)


def test_live_log_keeps_the_newest_lines_per_step_under_the_connection_name() -> None:
    live = LiveLog(lines_per_step=3)
    for i in range(5):
        live.output("web-1", line("ApplicationStart", f"a{i}"), now=float(i))
    event = live.output("web-1", line("ValidateService", "v0", host="web-2"), now=10.0)
    assert (event.kind, event.rollout_id) == ("output", "r1")
    assert event.data == {"host": "web-1", "step": "ValidateService", "line": "v0"}
    got = [(x.step, x.line) for x in live.lines("web-1", "r1")]
    assert got == [
        ("ApplicationStart", "a2"),
        ("ApplicationStart", "a3"),
        ("ApplicationStart", "a4"),
        ("ValidateService", "v0"),  # the message said web-2; the connection is web-1's
    ]
    assert live.lines("web-2", "r1") == []
    assert live.steps_with_lines("web-1", "r1") == {"ApplicationStart", "ValidateService"}


def test_live_log_bounds_its_keys_and_line_length() -> None:
    live = LiveLog(max_keys=2)
    for i in range(5):
        live.output("web-1", line(f"step{i}", "x" * 10_000), now=float(i))
    assert live.steps_with_lines("web-1", "r1") == {"step3", "step4"}
    assert len(live.lines("web-1", "r1")[0].line) == 4096


def test_live_progress_is_clamped_and_kept_per_rollout() -> None:
    live = LiveLog()
    msg = m.Progress(rollout_id="r1", host="spoof", done=150, total=100, rate=-3.0)
    event = live.progress("web-1", msg, now=2.0)
    assert event.kind == "progress"
    assert event.data == {"host": "web-1", "done": 100, "total": 100, "rate": 0.0}
    live.progress("web-2", m.Progress("r1", "web-2", 10, 100, 5.0), now=3.0)
    assert live.progress("web-3", m.Progress("r1", "x", 1, 2, float("inf")), 3.0).data["rate"] == 0
    live.progress("web-1", m.Progress("r2", "web-1", 1, 100, 5.0), now=3.0)
    assert set(live.progress_of("r1")) == {"web-1", "web-2", "web-3"}
    assert live.progress_of("r1")["web-2"]["done"] == 10
