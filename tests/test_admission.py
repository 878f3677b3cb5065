"""Pure admission logic: connection caps, the message-rate bucket, rate-limited log lines."""

from __future__ import annotations

import pytest

from common.ratelog import Summary
from seeder.admission import Admission, FailedAttempts, Limits, MessageRate, RateExceeded


def test_caps_in_total_and_per_address() -> None:
    gate = Admission(Limits(max_connections=3, max_per_address=2))
    assert gate.open("10.0.0.1") is None
    assert gate.open("10.0.0.1") is None
    assert "10.0.0.1 has 2 connections open" in str(gate.open("10.0.0.1"))
    assert gate.open("10.0.0.2") is None
    assert str(gate.open("10.0.0.3")) == "3 connections are open (--max-connections)"
    assert gate.total == 3
    gate.close("10.0.0.1")
    assert gate.held("10.0.0.1") == 1
    assert gate.open("10.0.0.3") is None  # a slot came free
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        gate.close(address)
    assert gate.total == 0 and gate.held("10.0.0.1") == 0


def test_ipv6_addresses_count_by_their_64() -> None:
    gate = Admission(Limits(max_per_address=2))
    assert gate.open("2001:db8:1:2::1") is None
    assert gate.open("2001:db8:1:2:ffff::9") is None
    assert "2001:db8:1:2::/64 has 2 connections open" in str(gate.open("2001:db8:1:2::3"))
    assert gate.open("2001:db8:1:3::1") is None  # another /64
    assert gate.open("::ffff:10.0.0.1") is None and gate.held("10.0.0.1") == 1  # mapped IPv4
    gate.close("2001:db8:1:2::1")
    assert gate.held("2001:db8:1:2::77") == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_connections", 0), ("hello_timeout", 0.0), ("message_rate", float("nan"))],
)
def test_limits_refuse_nonsense(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Limits(**{field: value})


def test_a_burst_passes_then_the_rate_holds() -> None:
    rate = MessageRate(Limits(message_rate=10.0, message_burst=5, cut_after=3.0), now=0.0)
    assert [rate.take(0.0) for _ in range(5)] == [0.0] * 5
    assert rate.take(0.0) == pytest.approx(0.1)  # the sixth waits one token's time
    assert rate.take(0.1) == pytest.approx(0.1)  # and so on, one per 0.1 s
    # A pause refills the bucket: the sender is not throttled any more.
    assert rate.take(10.0) == 0.0
    assert rate.throttled_since is None


def test_a_sender_kept_over_the_rate_is_cut() -> None:
    rate = MessageRate(Limits(message_rate=10.0, message_burst=1, cut_after=3.0), now=0.0)
    now = 0.0
    with pytest.raises(RateExceeded, match="over 10 messages/s for 3s"):
        for _ in range(1000):  # a flood that honours every delay it is given
            now += rate.take(now)
    assert 3.0 < now < 3.3


def test_a_legit_backlog_is_slowed_not_cut() -> None:
    # 10,000 journal reports at once at the defaults: 5,000 at once, the rest over 10 s.
    limits = Limits()
    rate = MessageRate(limits, now=0.0)
    now = 0.0
    for _ in range(10_000):
        now += rate.take(now)
    assert now == pytest.approx(5000 / limits.message_rate, rel=0.01)


def test_summary_bounds_lines_per_window() -> None:
    log = Summary(window=10.0, max_sources=3)
    lines: list[str] = []
    for i in range(10_000):
        lines += log.record("refused", "10.0.0.9", f"garbage #{i}", now=i / 1000)
    assert lines == ["refused a connection from 10.0.0.9: garbage #0"]
    # Many sources: the first three get their own lines, the rest are counted together.
    for i in range(500):
        lines += log.record("closed", f"10.1.{i // 250}.{i % 250}", "bad", now=9.99)
    assert len(lines) == 1 + 2  # 10.0.0.9 already holds one of the three slots
    lines += log.flush(now=10.5)
    assert lines[3:] == [
        "refused 9,999 more connections from 10.0.0.9 in the last 10 s; last: garbage #9999",
        "closed 498 connections from 498 other addresses in the last 10 s; last: 10.1.1.249: bad",
    ]
    assert log.flush(now=30.0) == []  # nothing since: nothing to say
    assert log.record("refused", "10.0.0.9", "again", now=31.0) == [
        "refused a connection from 10.0.0.9: again"
    ]


def test_failed_attempts_burst_then_drain_per_address() -> None:
    failures = FailedAttempts(burst=3, per_second=0.5)
    for _ in range(3):
        assert failures.wait("10.0.0.1", 0.0) == 0.0
        failures.failed("10.0.0.1", 0.0)
    assert failures.wait("10.0.0.1", 0.0) == pytest.approx(2.0)  # one failure drains in 2 s
    assert failures.wait("10.0.0.2", 0.0) == 0.0  # another address is not held back
    assert failures.wait("10.0.0.1", 1.0) == pytest.approx(1.0)
    assert failures.wait("10.0.0.1", 2.0) == 0.0
    failures.failed("10.0.0.1", 2.0)  # failing again right away closes it again
    assert failures.wait("10.0.0.1", 2.0) == pytest.approx(2.0)
    assert failures.wait("::ffff:10.0.0.1", 2.0) == pytest.approx(2.0)  # the same source


def test_failed_attempts_remember_a_bounded_number_of_sources() -> None:
    failures = FailedAttempts(burst=1, per_second=1.0, max_sources=3)
    for i in range(3):
        failures.failed(f"10.0.0.{i}", 0.0)
    failures.failed("10.0.0.9", 0.5)  # the least recently failed is forgotten
    assert failures.sources() == 3
    assert failures.wait("10.0.0.0", 0.5) == 0.0 and failures.wait("10.0.0.9", 0.5) > 0
    failures.failed("10.0.0.8", 10.0)  # all the others have drained: they go first
    assert failures.sources() == 1
