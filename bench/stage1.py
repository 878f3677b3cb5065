"""One host stages one release over loopback: verify and unpack after the download, or on the
way (streamed), side by side, interleaved, with CPU seconds and wall time of each phase.

    python -m bench.stage1 --size-mb 50 --runs 5

A seeder session and a downloading session run in this process on 127.0.0.x (no shaping, but
``--rate-mb`` limits the download in libtorrent: the figures are CPU cost, not swarm timing).
CPU is this process's (all threads) from getrusage.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from common.archive import file_digest, unpack
from common.torrent import TorrentSession, make_torrent
from peer.verify import download_streamed
from seeder.packing import pack_tree


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def one(
    mode: str,
    torrent: bytes,
    digest: str,
    name: str,
    seeder: tuple[str, int],
    root: Path,
    n: int,
    overrides: dict[str, Any],
) -> dict[str, float]:
    async with trio.open_nursery() as nursery:
        leecher = TorrentSession(f"127.0.0.{10 + n}", overrides=overrides)
        await nursery.start(leecher.run)
        dl, dest = root / f"dl{n}", root / f"rel{n}" / "r"
        c0, t0 = cpu(), time.monotonic()
        if mode == "file":
            await leecher.download(torrent, dl, peers=[seeder])
            c1, t1 = cpu(), time.monotonic()
            got = await trio.to_thread.run_sync(file_digest, dl / name)
            await trio.to_thread.run_sync(unpack, dl / name, dest)
        else:
            marks: list[tuple[float, float]] = []
            streamed = await download_streamed(
                leecher,
                torrent,
                dl / name,
                dest,
                digest,
                lambda sources: marks.append((cpu(), time.monotonic())),
                peers=[seeder],
            )
            c1, t1 = marks[0]
            got = streamed.digest or ""
            await trio.to_thread.run_sync(streamed.unpack, dl / name, dest)
        c2, t2 = cpu(), time.monotonic()
        if got != digest:
            raise SystemExit(f"{mode}: digest {got} is not {digest}")
        nursery.cancel_scope.cancel()
    return {"download_s": t1 - t0, "after_s": t2 - t1, "cpu_s": c2 - c0, "after_cpu_s": c2 - c1}


async def main_async(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    with tempfile.TemporaryDirectory(prefix="shoal-stage1-") as tmp:
        root = Path(tmp)
        repo = root / "app"
        repo.mkdir()
        (repo / "payload.bin").write_bytes(os.urandom(int(args.size_mb * 1e6)))
        archive = root / "seed" / "app.tar.zst"
        digest = pack_tree(repo, archive).digest
        torrent, _ = make_torrent(archive, tracker_url="http://127.0.0.1:1/announce")
        results: dict[str, list[dict[str, float]]] = {"file": [], "streamed": []}
        overrides: dict[str, Any] = {}
        if args.rate_mb:  # pieces then arrive one by one, as in a swarm, not in a burst
            overrides["download_rate_limit"] = int(args.rate_mb * 1e6)
            overrides["ignore_limits_on_local_network"] = False
        async with trio.open_nursery() as nursery:
            seeder = TorrentSession("127.0.0.2")
            await nursery.start(seeder.run)
            seeder.seed(torrent, archive.parent)
            n = 0
            for _ in range(args.runs):
                for mode in results:
                    n += 1
                    results[mode].append(
                        await one(
                            mode,
                            torrent,
                            digest,
                            archive.name,
                            ("127.0.0.2", seeder.listen_port),
                            root,
                            n,
                            overrides,
                        )
                    )
            nursery.cancel_scope.cancel()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stage1", description=__doc__.split("\n")[0])
    p.add_argument("--size-mb", type=float, default=50.0)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rate-mb", type=float, default=0.0, help="download limit, MB/s (0: none)")
    args = p.parse_args(argv)
    results: dict[str, Any] = trio.run(main_async, args)
    print(f"{args.size_mb:g} MB, {args.runs} runs each, min / median / max")
    for mode, runs in results.items():
        cells = []
        for key in ("download_s", "after_s", "cpu_s", "after_cpu_s"):
            v = [r[key] for r in runs]
            cells.append(f"{key} {min(v):.3f}/{statistics.median(v):.3f}/{max(v):.3f}")
        print(f"{mode:>9}: " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
