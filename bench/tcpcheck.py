"""Measure what a shaped link really carries: one TCP stream between two testbed hosts.

Why: tc's configured rate is not the goodput TCP gets (headers, HTB burst, queueing), and the
benchmark compares transfer times against bounds computed from the configured rates, so it
should know the ratio. Plain sockets, no iperf needed.

Entry point (runs inside a namespace): `python -m bench.tcpcheck serve IP PORT` prints one JSON
line {"bytes": n, "seconds": s} after the sender closes; `python -m bench.tcpcheck send IP PORT
SECONDS` streams zeros for SECONDS.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.netns import Host, Testbed

REPO = Path(__file__).resolve().parents[1]
_CHUNK = 256 * 1024


def serve(ip: str, port: int, timeout: float = 120.0) -> dict[str, float]:
    """Accept one connection and count bytes from the first byte to EOF."""
    with socket.create_server((ip, port)) as srv:
        srv.settimeout(timeout)
        print("ready", file=sys.stderr, flush=True)
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(timeout)
            conn.recv(_CHUNK)  # the clock starts at the first byte: connect time excluded
            t0, n = time.monotonic(), 0
            while data := conn.recv(_CHUNK):
                n += len(data)
            dt = time.monotonic() - t0
    return {"bytes": float(n), "seconds": dt}


def send(ip: str, port: int, seconds: float) -> None:
    """Connect (retrying while the server starts) and stream zeros for `seconds`."""
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.create_connection((ip, port), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    buf = bytes(_CHUNK)
    with conn:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            conn.sendall(buf)


def measure_mbit(
    bed: Testbed, src: Host, dst: Host, seconds: float = 5.0, port: int = 5201
) -> float:
    """Goodput in Mbit/s of one TCP stream from `src` to `dst` over `seconds`."""
    py = [sys.executable, "-m", "bench.tcpcheck"]
    srv = dst.popen(
        [*py, "serve", dst.ip, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert srv.stderr is not None
    srv.stderr.readline()  # "ready": the socket is listening
    src.run([*py, "send", dst.ip, str(port), str(seconds)], timeout=seconds + 30, cwd=REPO)
    out, err = srv.communicate(timeout=30)
    if srv.returncode != 0:
        raise RuntimeError(f"tcpcheck server failed: {err.strip()}")
    res = json.loads(out)
    return float(res["bytes"]) * 8 / float(res["seconds"]) / 1e6


def main(argv: list[str]) -> int:
    """`serve IP PORT` | `send IP PORT SECONDS`."""
    if argv[0] == "serve":
        print(json.dumps(serve(argv[1], int(argv[2]))), flush=True)
    elif argv[0] == "send":
        send(argv[1], int(argv[2]), float(argv[3]))
    else:
        raise SystemExit(f"usage: {__doc__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
