"""Running a rollout's ``--gate`` command on the seeder host, after a wave's bake.

The command runs through ``/bin/sh -c`` (operators write gates as shell one-liners), in its own
process group so that a timeout kills everything it started. Exit 0 lets the rollout go on; any
other exit, a timeout or a command that cannot start halts it. The last lines of its output are
kept for the rollout's timeline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

import trio

OUTPUT_LINES = 50
OUTPUT_BYTES = 64 * 1024


@dataclass(frozen=True)
class GateOutcome:
    exit_code: int | None  # None: it did not finish (timed out or could not start)
    output: tuple[str, ...]
    detail: str


def gate_environment(
    rollout_id: str, release_id: str, wave: int, hosts: tuple[str, ...]
) -> dict[str, str]:
    """What a gate knows about the wave it judges (``wave`` is 1-based here)."""
    return {
        "SHOAL_ROLLOUT_ID": rollout_id,
        "SHOAL_RELEASE_ID": release_id,
        "SHOAL_WAVE": str(wave),
        "SHOAL_HOSTS": ",".join(hosts),
    }


async def run_gate(command: str, env: Mapping[str, str], limit: float) -> GateOutcome:
    """Run the gate to its end, or kill it after ``limit`` seconds."""
    output = bytearray()
    try:
        process = await trio.lowlevel.open_process(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    except OSError as exc:
        return GateOutcome(None, (), f"the gate could not start: {exc}")
    assert process.stdout is not None
    timed_out = False
    try:
        with trio.move_on_after(limit) as scope:
            async with process.stdout:
                while chunk := await process.stdout.receive_some(65536):
                    output += chunk
                    del output[:-OUTPUT_BYTES]
            await process.wait()
        timed_out = scope.cancelled_caught
    finally:
        if process.returncode is None:
            _killpg(process.pid)
            with trio.CancelScope(shield=True):
                await process.wait()
    lines = tuple(output.decode(errors="replace").splitlines()[-OUTPUT_LINES:])
    if timed_out:
        return GateOutcome(None, lines, f"timed out after {limit:g}s and was killed")
    code = process.returncode
    return GateOutcome(code, lines, "passed" if code == 0 else f"exited {code}")


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
