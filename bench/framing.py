"""What the length-prefixed framing costs on the seeder's receive path, against msgpack's
streaming unpacker it replaced.

    git show 6fd5801:common/protocol.py > /tmp/old_protocol.py
    python -m bench.framing /tmp/old_protocol.py [--reports 20000] [--runs 7]

A peer's backlog of ``--reports`` step reports (5 output lines each, as a reconnecting peer
sends its journal) is fed to a server-side :class:`~common.protocol.Connection` in 256 KiB
chunks (the channel's read size) and drained after each chunk, old and new module alternating
``--runs`` times. Prints µs per message, min / median / max.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

from common import messages as m
from common import protocol as new

CHUNK = 256 * 1024


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("old_protocol", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def backlog(module: ModuleType, reports: int) -> bytes:
    client = module.Connection(module.Role.CLIENT)
    msgs: list[m.Message] = [m.Hello(name="web-1", address="10.0.0.5", bt_port=6881)]
    msgs += [
        m.StepReport(
            rollout_id="r20261202-001122-abcd",
            host="web-1",
            step="ApplicationStart",
            attempt=1,
            state="succeeded",
            result="succeeded",
            detail="ApplicationStart: hooks/start.sh succeeded",
            exit_code=0,
            output=[f"line {i} of the hook's output" for i in range(5)],
            at=1.7e9,
            seq=i,
        )
        for i in range(reports)
    ]
    return b"".join(client.send(msg) for msg in msgs)


def drain(module: ModuleType, wire: bytes) -> float:
    """Seconds to decode ``wire`` on a server connection, fed in channel-sized chunks."""
    server = module.Connection(module.Role.SERVER)
    count = 0
    started = time.perf_counter()
    for offset in range(0, len(wire), CHUNK):
        server.receive_data(wire[offset : offset + CHUNK])
        while server.next_event() is not module.NEED_DATA:
            count += 1
    took = time.perf_counter() - started
    assert count == wire.count(b"ApplicationStart: hooks") + 1, count
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="the protocol module before framing")
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    old = load(args.old)
    wires = {
        "streaming (old)": backlog(old, args.reports),
        "framed (new)": backlog(new, args.reports),
    }
    times: dict[str, list[float]] = {name: [] for name in wires}
    for _ in range(args.runs):
        for name, module in (("streaming (old)", old), ("framed (new)", new)):
            times[name].append(drain(module, wires[name]) / (args.reports + 1) * 1e6)
    for name, values in times.items():
        low, mid, high = min(values), statistics.median(values), max(values)
        size = len(wires[name])
        print(f"{name:16} {low:6.2f} / {mid:6.2f} / {high:6.2f} us per message, {size} bytes")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
