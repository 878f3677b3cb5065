"""Bounds (Kumar & Ross), percentiles and the CDF plot: pure code, no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bound import client_server_bound, p2p_bound, percentile, percentiles
from bench.plot import plot_cdf

GB = 10**9  # the reference document's worked values use decimal units
MB = 10**6
GBIT = 10**9


def test_homogeneous_p2p_is_one_transfer_time_for_any_fleet() -> None:
    # 100 MB at 1 Gb/s: F/c = 0.8 s, whatever N is (N/(N+1) < 1).
    for n in (1, 10, 1000):
        assert p2p_bound(100 * MB, GBIT, [GBIT] * n, [GBIT] * n) == pytest.approx(0.8)


def test_client_server_grows_with_fleet() -> None:
    assert client_server_bound(100 * MB, GBIT, [GBIT] * 1000) == pytest.approx(800.0)
    assert client_server_bound(1 * GB, 10 * GBIT, [10 * GBIT] * 5000) == pytest.approx(4000.0)


def test_upload_capped_peers_match_reference_table() -> None:
    # 1 GB, 10 Gb/s links, 1000 hosts uploading at most 100 MB/s: ~9.9 s (p2p-systems.md §1).
    n = 1000
    t = p2p_bound(1 * GB, 10 * GBIT, [800 * MB] * n, [10 * GBIT] * n)
    assert t == pytest.approx(1000 * 8e9 / (1e10 + 1000 * 8e8))
    assert 9.8 < t < 9.9


def test_each_term_can_dominate() -> None:
    f = 10 * MB  # 8e7 bits
    # slow seeder: F/u_s
    assert p2p_bound(f, 1e6, [1e9] * 3, [1e9] * 3) == pytest.approx(80.0)
    # slowest downloader: F/d_min
    assert p2p_bound(f, 1e9, [1e9] * 3, [1e9, 1e9, 1e6]) == pytest.approx(80.0)
    # peers that do not upload: N*F/u_s, same as client-server
    assert p2p_bound(f, 1e8, [0.0] * 4, [1e9] * 4) == pytest.approx(3.2)
    assert client_server_bound(f, 1e8, [1e9] * 4) == pytest.approx(3.2)
    # slow downloader also bounds client-server
    assert client_server_bound(f, 1e9, [1e9, 1e6]) == pytest.approx(80.0)


def test_p2p_never_exceeds_client_server() -> None:
    f = 3 * MB
    ups, downs = [2e7, 5e6, 2e7, 2e7], [2e7, 5e6, 2e7, 2e7]
    assert p2p_bound(f, 2e7, ups, downs) <= client_server_bound(f, 2e7, downs)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        p2p_bound(MB, 1e6, [], [])
    with pytest.raises(ValueError):
        p2p_bound(MB, 1e6, [1e6], [1e6, 1e6])
    with pytest.raises(ValueError):
        p2p_bound(MB, 0.0, [1e6], [1e6])
    with pytest.raises(ValueError):
        client_server_bound(MB, 1e6, [0.0])
    with pytest.raises(ValueError):
        client_server_bound(-1, 1e6, [1e6])


def test_percentiles_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentiles(values) == {"p50": 50.0, "p99": 99.0, "max": 100.0}
    small = [4.0, 1.0, 3.0, 2.0]
    assert percentile(small, 50) == 2.0
    assert percentile(small, 99) == 4.0  # in a small fleet p99 is the slowest host
    assert percentile([7.0], 50) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_plot_cdf_writes_png(tmp_path: Path) -> None:
    out = plot_cdf(
        {"shoal": [3.1, 3.4, 3.3, 4.0], "sftp": [10.2, 12.5, 14.0, 14.2]},
        t_star=3.0,
        t_cs=13.4,
        out_png=tmp_path / "sub" / "cdf.png",
        title="4 hosts, 10 MiB",
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plot_cdf({}, 1.0, 2.0, tmp_path / "x.png", "empty")
