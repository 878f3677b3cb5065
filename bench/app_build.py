"""What a build by application costs: fetch, resolve, clean checkout, pack, torrent.

    python -m bench.app_build [--size-mb 50] [--files 200] [--runs 5]

A repository of ``--files`` files holding ``--size-mb`` MB (half random bytes, half text) is the
remote of an application on an in-process seeder store; each run pushes a new commit (one file
changed) and builds it with :func:`seeder.build.build_app_release` (the code ``shoal release
build`` runs: fetch, resolve, ``git archive`` into a temp dir, deterministic pack, torrent). As a
baseline, the same commit streamed through ``git archive | zstd`` in memory-sized chunks (what
the path-based build did, without the checkout). Prints min / median / max seconds per phase
over the runs, interleaved so that noise hits both alike.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import trio
import zstandard

from seeder.app_service import Apps
from seeder.build import build_app_release
from seeder.samplerepo import commit_all, git
from seeder.store import Store

MB = 1_000_000
APPSPEC = "version: 0.0\nos: linux\n"


def make_remote(root: Path, size: int, files: int) -> tuple[Path, Path]:
    work = root / "work"
    work.mkdir(parents=True)
    (work / "appspec.yml").write_text(APPSPEC)
    each = size // files
    for i in range(files):
        path = work / f"d{i % 10}" / f"f{i}.bin"
        path.parent.mkdir(exist_ok=True)
        data = os.urandom(each // 2) + (b"text line %d\n" % i) * (each // 2 // 12)
        path.write_bytes(data)
    commit_all(work, "payload")
    bare = root / "remote.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(bare))
    git(work, "push", "-q", str(bare), "main")
    return work, bare


def baseline(bare: Path, commit: str) -> str:
    """The old path-based build's archive step: git archive streamed through zstd."""
    proc = subprocess.Popen(
        ["git", "archive", "--format=tar", commit], cwd=bare, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    compressor = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    sha = hashlib.sha256()
    while chunk := proc.stdout.read(MB):
        sha.update(compressor.compress(chunk))
    sha.update(compressor.flush())
    proc.wait()
    return sha.hexdigest()


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"build": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="shoal-app-build-") as tmp:
        root = Path(tmp)
        work, bare = await trio.to_thread.run_sync(
            make_remote, root / "git", int(args.size_mb * MB), args.files
        )
        store = Store(root / "seeder.db")
        try:
            apps = Apps(store, root / "data")
            t0 = time.perf_counter()
            await apps.add({"name": "bench", "repo": str(bare)})
            print(f"app add (clone): {time.perf_counter() - t0:.2f}s", flush=True)
            for i in range(args.runs):
                (work / "appspec.yml").write_text(APPSPEC + f"# run {i}\n")
                commit = await trio.to_thread.run_sync(commit_all, work, f"run {i}")
                await trio.to_thread.run_sync(git, work, "push", "-q", str(bare), "main")
                t0 = time.perf_counter()
                built = await build_app_release(
                    apps,
                    "bench",
                    commit[:10],
                    releases_dir=root / "releases",
                    tracker_url="http://127.0.0.1:9/announce",
                )
                times["build"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await trio.to_thread.run_sync(baseline, bare, commit)
                times["baseline"].append(time.perf_counter() - t0)
                print(
                    f"run {i + 1}: build {times['build'][-1]:.2f}s "
                    f"({built.manifest.size / MB:.1f} MB archive), "
                    f"git archive|zstd {times['baseline'][-1]:.2f}s",
                    flush=True,
                )
        finally:
            store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=50.0)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = trio.run(run, args)
    print(f"{args.size_mb:g} MB in {args.files} files, {args.runs} runs, min / median / max s:")
    for name, values in times.items():
        print(
            f"  {name:<9} {min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"
        )


if __name__ == "__main__":
    main()
