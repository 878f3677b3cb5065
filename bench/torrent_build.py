"""What hybrid (v1+v2) torrents cost: build-time hashing and a transfer's CPU, side by side.

    python -m bench.torrent_build [--sizes-mb 10 50 200] [--runs 5] [--transfer-mb 100]

Build: :func:`common.torrent.make_torrent` (the code ``shoal release build`` runs) on a file of
random bytes already in the page cache, per kind (v2-only, hybrid, v1-only), ``--runs`` times,
interleaved so that noise from other work on the machine hits every kind alike. Prints min /
median / max seconds, MB/s, and the hybrid/v2 ratio of the medians.

Transfer: one seed and one downloader (:class:`common.torrent.TorrentSession`, shoal's
settings) in this process on loopback, v2 vs hybrid; CPU seconds of the process (both ends:
the seed verifies nothing in seed mode, so it is mostly the downloader's piece hashing and
copies) and wall seconds, min / median / max over the runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from common.torrent import TorrentSession, make_torrent, piece_size_of

MB = 1_000_000
KINDS = ("v2", "hybrid", "v1")
DEAD_TRACKER = "http://127.0.0.1:9/announce"  # never reached: peers are dialled directly


def write_payload(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for offset in range(0, size, 4 * MB):
            f.write(os.urandom(min(4 * MB, size - offset)))
    path.read_bytes()  # into the page cache: measure hashing, not the disk
    return path


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def measure_build(payload: Path, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(runs):
        for kind in KINDS:
            started = time.perf_counter()
            make_torrent(payload, tracker_url=DEAD_TRACKER, kind=kind)
            times[kind].append(time.perf_counter() - started)
    return times


async def one_transfer(torrent: bytes, seed_dir: Path, dest: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of downloading ``torrent`` from a seed on loopback."""
    async with trio.open_nursery() as nursery:
        seed = TorrentSession("127.0.0.1", 0)
        leech = TorrentSession("127.0.0.2", 0)
        await nursery.start(seed.run)
        await nursery.start(leech.run)
        seed.seed(torrent, seed_dir, announce=False)
        cpu, wall = time.process_time(), time.perf_counter()
        await leech.download(torrent, dest, peers=[("127.0.0.1", seed.listen_port)])
        result = time.process_time() - cpu, time.perf_counter() - wall
        nursery.cancel_scope.cancel()
    return result


def measure_transfer(payload: Path, runs: int, work: Path) -> dict[str, list[tuple[float, float]]]:
    torrents = {
        kind: make_torrent(payload, tracker_url=DEAD_TRACKER, kind=kind)[0] for kind in KINDS[:2]
    }
    out: dict[str, list[tuple[float, float]]] = {kind: [] for kind in torrents}
    for run in range(runs):
        for kind, torrent in torrents.items():
            dest = work / f"dl-{kind}-{run}"
            out[kind].append(trio.run(one_transfer, torrent, payload.parent, dest))
            for child in dest.iterdir():
                child.unlink()
            dest.rmdir()
    return out


def row(label: str, values: Sequence[float], fmt: Callable[[float], str]) -> str:
    low, mid, high = spread(values)
    return f"{label:<24} {fmt(low):>9} {fmt(mid):>9} {fmt(high):>9}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.torrent_build", description=__doc__)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--transfer-mb", type=int, default=100, help="0 skips the transfer")
    args = parser.parse_args(argv)
    logging.getLogger("shoal.torrent").setLevel(logging.ERROR)  # the dead tracker's warnings
    with tempfile.TemporaryDirectory(prefix="shoal-torrent-bench-") as tmp:
        work = Path(tmp)
        print(f"build: seconds per torrent, {args.runs} runs (min / median / max)")
        for size_mb in args.sizes_mb:
            payload = write_payload(work / f"s{size_mb}" / "release.tar.zst", size_mb * MB)
            times = measure_build(payload, args.runs)
            piece = piece_size_of(make_torrent(payload, tracker_url=DEAD_TRACKER)[0])
            head = f"{size_mb} MB, {piece // 1024} KiB pieces"
            print(f"\n{head:<24} {'min':>9} {'median':>9} {'max':>9}")
            for kind in KINDS:
                print(row(kind, times[kind], lambda s: f"{s:.3f}s"))
                print(
                    row(f"  {kind} MB/s", [size_mb / t for t in times[kind]], lambda v: f"{v:.0f}")
                )
            ratio = statistics.median(times["hybrid"]) / statistics.median(times["v2"])
            print(f"hybrid / v2 (medians)    {ratio:.2f}x")
            payload.unlink()
        if args.transfer_mb:
            payload = write_payload(work / "t" / "release.tar.zst", args.transfer_mb * MB)
            results = measure_transfer(payload, args.runs, work)
            print(
                f"\ntransfer of {args.transfer_mb} MB on loopback, {args.runs} runs"
                f"{'':<2} {'min':>9} {'median':>9} {'max':>9}"
            )
            for kind, runs in results.items():
                print(row(f"{kind} CPU", [c for c, _ in runs], lambda s: f"{s:.2f}s"))
                print(row(f"{kind} wall", [w for _, w in runs], lambda s: f"{s:.2f}s"))
            cpu = {k: statistics.median(c for c, _ in v) for k, v in results.items()}
            print(f"hybrid / v2 CPU (medians) {cpu['hybrid'] / cpu['v2']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
