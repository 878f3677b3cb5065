"""How big the largest control message gets: a Stage carrying a big release's torrent.

    python -m bench.frame_size [--sizes-gb 1 10 100] [--runs 1]

For each size, a sparse file of that many bytes (no disk used) is turned into a release torrent
by :func:`common.torrent.make_torrent` (the code ``shoal release build`` runs: hybrid v1+v2,
private, the piece size the seeder picks), and the torrent is put into a
:class:`~common.messages.Stage` the way a rollout sends it, with 32 slice seeds listed and a
full manifest. Prints the piece size, piece count, torrent bytes and the Stage frame's bytes
against :data:`common.protocol.CLIENT_FRAME_LIMIT`. The figures size the frame limit.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import messages as m
from common.protocol import CLIENT_FRAME_LIMIT, Connection, Role
from common.torrent import make_torrent, piece_size_of

GB = 1_000_000_000
TRACKER = "http://10.0.0.1:7701/announce?key=" + "k" * 64


def stage_frame(torrent: bytes, size: int) -> int:
    """Bytes on the wire of a Stage with this torrent (after a peer's hello)."""
    manifest = {
        "app": "a" * 64,
        "version": "v" * 40,
        "commit": "c" * 40,
        "size": size,
        "digest": "d" * 64,
        "infohash": "e" * 64,
        "archive": "a" * 120,
        "signature": "s" * 128,
    }
    stage = m.Stage(
        rollout_id="r" * 36,
        manifest=manifest,
        torrent=torrent,
        peers=[["10.0.0.1", 6881]] * 32,
    )
    server = Connection(Role.SERVER)
    client = Connection(Role.CLIENT)
    server.receive_data(client.send(m.Hello(name="h", address="10.0.0.2", bt_port=6881)))
    server.next_event()
    return len(server.send(stage))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[1, 10, 100])
    args = parser.parse_args()
    print(f"a peer accepts frames of up to {CLIENT_FRAME_LIMIT} bytes from the seeder")
    columns = ("release", "piece", "pieces", "torrent", "stage", "%limit", "s")
    print(" ".join(f"{c:>{w}}" for c, w in zip(columns, (10, 9, 7, 10, 10, 7, 6), strict=True)))
    with tempfile.TemporaryDirectory() as tmp:
        for gb in args.sizes_gb:
            size = int(gb * GB)
            payload = Path(tmp) / "release.tar.zst"
            with payload.open("wb") as f:
                f.truncate(size)  # sparse: hashing reads zeros, nothing hits the disk
            started = time.perf_counter()
            torrent, _ = make_torrent(payload, tracker_url=TRACKER)
            took = time.perf_counter() - started
            piece = piece_size_of(torrent)
            frame = stage_frame(torrent, size)
            print(
                f"{gb:>8g}GB {piece:>9} {-(-size // piece):>7} {len(torrent):>10} {frame:>10}"
                f" {100 * frame / CLIENT_FRAME_LIMIT:>6.1f}% {took:>6.1f}"
            )
            payload.unlink()


if __name__ == "__main__":
    main()
