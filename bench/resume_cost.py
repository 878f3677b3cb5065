"""What keeping resume data costs a download: flush + save every second versus never.

Run: ``python -m bench.resume_cost [--size-mb 100] [--runs 5]``. One seed and one leecher on
loopback (127.0.94.x), in this process; prints min / median / max seconds per setting, runs
interleaved so that the box's noise hits both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import trio

from common.torrent import TorrentSession, make_torrent
from common.torrent.session import RESUME_INTERVAL

NEVER = 1e9


async def _one(torrent: bytes, seed_dir: Path, interval: float) -> float:
    dest = Path(tempfile.mkdtemp(prefix="shoal-resume-cost-"))
    try:
        async with trio.open_nursery() as nursery:
            seed = TorrentSession("127.0.94.2")
            await nursery.start(seed.run)
            seed.seed(torrent, seed_dir)
            leech = TorrentSession("127.0.94.3", resume_interval=interval)
            await nursery.start(leech.run)
            started = time.monotonic()
            with trio.fail_after(600):
                await leech.download(torrent, dest, peers=[("127.0.94.2", seed.listen_port)])
            took = time.monotonic() - started
            nursery.cancel_scope.cancel()
        return took
    finally:
        shutil.rmtree(dest, ignore_errors=True)


async def main(size_mb: int, runs: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="shoal-resume-cost-"))
    try:
        payload = base / "seed" / "release.bin"
        payload.parent.mkdir()
        payload.write_bytes(os.urandom(size_mb * 1_000_000))
        torrent, _ = make_torrent(payload, tracker_url="http://127.0.0.1:1/announce")
        times: dict[float, list[float]] = {RESUME_INTERVAL: [], NEVER: []}
        for _ in range(runs):
            for interval, xs in times.items():
                xs.append(await _one(torrent, payload.parent, interval))
        for interval, xs in times.items():
            label = "never" if interval == NEVER else f"every {interval:g}s"
            print(
                f"resume data {label:>10}: {size_mb} MB in min {min(xs):.2f} / "
                f"median {statistics.median(xs):.2f} / max {max(xs):.2f} s ({runs} runs)"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    trio.run(main, args.size_mb, args.runs)
