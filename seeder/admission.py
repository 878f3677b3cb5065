"""Admission to the seeder's ports: connection caps, a message-rate limit, a failure budget.
Pure, takes ``now``.

A hostile or broken client must not be able to take the seeder's memory, file descriptors or
event loop away from the fleet. This module decides; the control server and the join listener
only ask:

- :class:`Admission` counts open connections in total and per remote address and refuses one
  more beyond either cap, before the TLS handshake or any byte is read. The defaults leave room
  for a 2,000-host fleet plus operators (each peer holds one connection, each CLI one while it
  runs), and a per-address cap high enough for hosts behind one NAT address.
- :class:`MessageRate` is one connection's token bucket: ``rate`` messages a second on average,
  bursts of ``burst`` (a peer re-sending its journal after a reconnect). A message that finds
  the bucket empty is delayed until a token is there, so a flooding client is slowed (we stop
  reading, TCP pushes back); one kept over the rate for ``cut_after`` seconds is cut off.
- :class:`FailedAttempts` counts failed attempts (refused joins) per remote address across
  connections: ``burst`` of them at once, then one per ``1 / per_second`` seconds. An address
  over its budget is refused without its attempt being looked at.

:class:`Limits` holds every knob with its default; ``shoal seeder run`` exposes each of them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from common.errors import RemoteProtocolError
from common.protocol import FRAME_LIMIT, HELLO_FRAME_LIMIT

MAX_CONNECTIONS: Final = 4096
MAX_PER_ADDRESS: Final = 256
HELLO_TIMEOUT: Final = 10.0
MESSAGE_RATE: Final = 500.0
MESSAGE_BURST: Final = 5000
CUT_AFTER: Final = 30.0


@dataclass(frozen=True)
class Limits:
    """What the control port allows one client and all of them together."""

    max_connections: int = MAX_CONNECTIONS
    max_per_address: int = MAX_PER_ADDRESS
    hello_timeout: float = HELLO_TIMEOUT  # seconds from accept to a valid hello (TLS included)
    message_rate: float = MESSAGE_RATE  # messages per second per connection, on average
    message_burst: int = MESSAGE_BURST  # messages a connection may send at once
    cut_after: float = CUT_AFTER  # seconds over the rate before the connection is cut
    max_frame: int = FRAME_LIMIT  # bytes of one message after the hello
    max_hello_frame: int = HELLO_FRAME_LIMIT  # bytes of one message before it

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_per_address", "message_burst"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in ("hello_timeout", "message_rate", "cut_after"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number, not {value}")
        if not 0 < self.max_hello_frame <= self.max_frame:
            raise ValueError(
                f"frame limits must satisfy 0 < hello frame ({self.max_hello_frame})"
                f" <= frame ({self.max_frame})"
            )


class Admission:
    """Open control connections, in total and per remote address."""

    def __init__(self, limits: Limits, *, options: bool = True) -> None:
        """``options``: name the ``seeder run`` options in refusals (not for the tracker)."""
        self.limits = limits
        self.total = 0
        self._by_address: dict[str, int] = {}
        self._hints = (
            (" (--max-connections)", " (--max-connections-per-address)") if options else ("", "")
        )

    def open(self, address: str) -> str | None:
        """Count one more connection from ``address``; or why it is refused (then not counted)."""
        if self.total >= self.limits.max_connections:
            return f"{self.total} connections are open{self._hints[0]}"
        source = source_of(address)
        held = self._by_address.get(source, 0)
        if held >= self.limits.max_per_address:
            return f"{source} has {held} connections open{self._hints[1]}"
        self.total += 1
        self._by_address[source] = held + 1
        return None

    def close(self, address: str) -> None:
        """One connection admitted by :meth:`open` has ended."""
        source = source_of(address)
        held = self._by_address.pop(source)
        self.total -= 1
        if held > 1:
            self._by_address[source] = held - 1

    def held(self, address: str) -> int:
        return self._by_address.get(source_of(address), 0)


def source_of(address: str) -> str:
    """What the per-address cap counts: an IPv4 address, or an IPv6 address's /64 (one host
    holds a whole /64, so counting single IPv6 addresses would bound nothing)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (a test's memory stream): counted as it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateExceeded(RemoteProtocolError):
    """The remote kept sending faster than its message rate allows: it is cut off."""


class MessageRate:
    """One connection's token bucket (see the module docstring)."""

    def __init__(self, limits: Limits, now: float) -> None:
        self.rate = limits.message_rate
        self.burst = float(limits.message_burst)
        self.cut_after = limits.cut_after
        self.tokens = self.burst
        self.last = now
        self.throttled_since: float | None = None  # start of the current run over the rate

    def take(self, now: float) -> float:
        """Account for one message received at ``now``: seconds to wait before handling it.

        RateExceeded once the connection has been over its rate for ``cut_after`` seconds."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.throttled_since = None
            return 0.0
        if self.throttled_since is None:
            self.throttled_since = now
        elif now - self.throttled_since > self.cut_after:
            raise RateExceeded(
                f"over {self.rate:g} messages/s for {now - self.throttled_since:.0f}s"
                " (--message-rate); closing the connection"
            )
        delay = (1.0 - self.tokens) / self.rate
        self.tokens -= 1.0  # the token that arrives during the wait is this message's
        return delay


class FailedAttempts:
    """Failed attempts per source address (see the module docstring): each source holds a count
    that drains at ``per_second``; a source holding ``burst`` may not try again until one has
    drained. At most ``max_sources`` sources are remembered (the drained ones are forgotten
    first, then the least recently failed), so the memory stays bounded whatever the remote
    addresses."""

    def __init__(self, burst: int, per_second: float, max_sources: int = 10_000) -> None:
        if burst < 1 or not 0 < per_second < float("inf") or max_sources < 1:
            raise ValueError("a failure budget needs burst >= 1, a positive rate, a source")
        self.burst = burst
        self.per_second = per_second
        self.max_sources = max_sources
        self._held: dict[str, tuple[float, float]] = {}  # source -> (failures held, as of when)

    def _level(self, source: str, now: float) -> float:
        held, at = self._held.get(source, (0.0, now))
        return max(0.0, held - max(0.0, now - at) * self.per_second)

    def wait(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        over = self._level(source_of(address), now) - (self.burst - 1)
        return max(0.0, over / self.per_second)

    def failed(self, address: str, now: float) -> None:
        """Count one failed attempt of ``address`` at ``now``."""
        source = source_of(address)
        level = self._level(source, now) + 1.0
        self._held.pop(source, None)  # re-inserted last: the dict is in order of failing
        self._held[source] = (level, now)
        if len(self._held) > self.max_sources:
            self._held = {s: v for s, v in self._held.items() if self._level(s, now) > 0}
            while len(self._held) > self.max_sources:
                del self._held[next(iter(self._held))]

    def sources(self) -> int:
        return len(self._held)
