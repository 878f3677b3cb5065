"""Lower bounds on the time to give every host one file, and percentile helpers.

Why: a benchmark number means little alone; "1.3x the best any system could do on these links"
does. The bounds are Kumar & Ross (2006), as summarised in shared/reference/p2p-systems.md §1:

- client-server: D_cs  >= max(N*F/u_s, F/d_min)
- peer-to-peer:  D_p2p >= max(F/u_s, F/d_min, N*F/(u_s + sum u_i))

Units: sizes in bytes, rates in bits per second (tc and link speeds are quoted in bits), times in
seconds. All functions are pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _check(size_bytes: float, seeder_up_bps: float, host_down_bps: Sequence[float]) -> None:
    """Reject inputs for which the bound is meaningless (no hosts, non-positive rates)."""
    if size_bytes < 0:
        raise ValueError(f"size must be >= 0, got {size_bytes}")
    if seeder_up_bps <= 0:
        raise ValueError(f"seeder upload rate must be > 0, got {seeder_up_bps}")
    if not host_down_bps:
        raise ValueError("need at least one receiving host")
    if min(host_down_bps) <= 0:
        raise ValueError("every host download rate must be > 0")


def p2p_bound(
    size_bytes: float,
    seeder_up_bps: float,
    host_up_bps: Sequence[float],
    host_down_bps: Sequence[float],
) -> float:
    """Kumar & Ross minimum time (s) for N = len(host_down_bps) peers that also upload.

    T* = max(F/u_s, F/min d_i, N*F/(u_s + sum u_i)). Reachable in the fluid limit; real
    piece-based swarms add per-hop piece latency on top.
    """
    _check(size_bytes, seeder_up_bps, host_down_bps)
    if len(host_up_bps) != len(host_down_bps):
        raise ValueError("host_up_bps and host_down_bps must list the same hosts")
    if min(host_up_bps, default=0.0) < 0:
        raise ValueError("host upload rates must be >= 0")
    bits = 8.0 * size_bytes
    n = len(host_down_bps)
    return max(
        bits / seeder_up_bps,
        bits / min(host_down_bps),
        n * bits / (seeder_up_bps + sum(host_up_bps)),
    )


def client_server_bound(
    size_bytes: float, seeder_up_bps: float, host_down_bps: Sequence[float]
) -> float:
    """Minimum time (s) when only the seeder uploads (scp/rsync/SFTP fan-out).

    D_cs = max(N*F/u_s, F/min d_i): the seeder must send N copies; the slowest host must
    receive one.
    """
    _check(size_bytes, seeder_up_bps, host_down_bps)
    bits = 8.0 * size_bytes
    return max(len(host_down_bps) * bits / seeder_up_bps, bits / min(host_down_bps))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of values <= it.

    Nearest-rank (not interpolation) so that every reported figure is a time some host really
    took, and p99 of a small fleet is honestly its slowest host.
    """
    if not values:
        raise ValueError("no values")
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], got {q}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of per-host completion times (nearest rank)."""
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values),
    }
