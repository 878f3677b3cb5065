"""Build steps: ``before_build``, ``build``, ``after_build``, run on the seeder in a clean checkout.

Where they come from: the application's seeder settings (``shoal app add/set --build ...``) if
they declare any build setting, else the ``shoal.yml`` beside the release's ``appspec.yml`` at
the commit being built, else there are none. See README, "Build steps".

Each step is ``/bin/sh -c CMD`` in its own session and process group, with a minimal
environment (``PATH``, ``HOME`` (a fresh temp dir), ``LANG``, ``SHOAL_APP``, ``SHOAL_REF``,
``SHOAL_COMMIT``, ``SHOAL_VERSION``), stdin closed, stdout and stderr merged and handed on line by
line. A step that outlives its timeout has its whole process group killed; when a step ends,
whatever it left running in its group is killed too. A failing step raises
:class:`BuildStepFailed` with its exit code and last lines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import yaml

from common.errors import BuildError, ConfigError
from seeder.applications import BuildSettings

SHOAL_YML = ("shoal.yml", "shoal.yaml")
LINE_BYTES = 4096  # longer lines are cut
TAIL_LINES = 20  # lines of a failing step quoted in its error
DRAIN_GRACE = 2.0  # seconds to read what is left in the pipe after a step ended
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
OnLine = Callable[[str, str], None]  # (step, line)


class BuildStepFailed(BuildError):
    """A build step exited non-zero or timed out; nothing was published."""

    def __init__(self, message: str, *, step: str, exit_code: int | None, tail: list[str]):
        super().__init__(message)
        self.step = step
        self.exit_code = exit_code
        self.tail = tail


@dataclass(frozen=True)
class StepContext:
    app: str
    ref: str
    commit: str
    version: str
    home: Path  # a fresh, empty directory

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH") or DEFAULT_PATH,
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "SHOAL_APP": self.app,
            "SHOAL_REF": self.ref,
            "SHOAL_COMMIT": self.commit,
            "SHOAL_VERSION": self.version,
        }


def parse_shoal_yml(text: bytes, *, source: str) -> BuildSettings:
    """The build settings of a repository's ``shoal.yml`` (top-level keys ``before_build``,
    ``build``, ``after_build``, ``timeout``, ``include``, ``exclude``)."""
    try:
        data: Any = yaml.safe_load(text.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if data is None:
        return BuildSettings()
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of build settings")
    return BuildSettings.from_dict(data, source=source)


def choose_settings(
    seeder: BuildSettings, repo_file: bytes | None, *, source: str
) -> tuple[BuildSettings, str]:
    """(settings, where from): the app's seeder settings win as a whole if they declare any."""
    if seeder.declared():
        return seeder, "seeder"
    if repo_file is not None:
        return parse_shoal_yml(repo_file, source=source), source
    return BuildSettings(), "none"


async def run_steps(
    settings: BuildSettings, cwd: Path, context: StepContext, on_line: OnLine
) -> None:
    for name, command in settings.steps():
        await run_step(name, command, cwd, context, settings.timeout, on_line)


async def run_step(
    name: str, command: str, cwd: Path, context: StepContext, limit: float, on_line: OnLine
) -> None:
    """Run one step; ``limit`` is its timeout in seconds, after which its group is killed."""
    timeout = limit
    tail: list[str] = []

    def line(text: str) -> None:
        tail.append(text)
        del tail[:-TAIL_LINES]
        on_line(name, text)

    on_line(name, f"$ {command}")
    proc = await trio.lowlevel.open_process(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=context.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    timed_out = False
    try:
        async with trio.open_nursery() as nursery:
            assert proc.stdout is not None
            reading = trio.CancelScope()
            nursery.start_soon(_read_lines, proc.stdout, line, reading)
            with trio.move_on_after(timeout) as waiting:
                await proc.wait()
            timed_out = waiting.cancelled_caught
            _kill_group(proc.pid)  # a timed-out step, and what a finished one left running
            reading.deadline = trio.current_time() + DRAIN_GRACE
    finally:
        _kill_group(proc.pid)
        with trio.CancelScope(shield=True):
            await proc.wait()
    if timed_out:
        on_line(name, f"[shoal] {name} timed out after {timeout:g}s; its process group was killed")
        raise BuildStepFailed(
            f"build step {name} timed out after {timeout:g}s (process group killed); last "
            f"lines:\n" + "\n".join(tail),
            step=name,
            exit_code=None,
            tail=tail,
        )
    if proc.returncode != 0:
        code = proc.returncode
        on_line(name, f"[shoal] {name} failed with exit code {code}")
        raise BuildStepFailed(
            f"build step {name} failed with exit code {code}; last lines:\n" + "\n".join(tail),
            step=name,
            exit_code=code,
            tail=tail,
        )


async def _read_lines(
    stream: trio.abc.ReceiveStream, line: Callable[[str], None], scope: trio.CancelScope
) -> None:
    buffer = b""
    with scope:
        while chunk := await stream.receive_some(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line(raw[:LINE_BYTES].decode(errors="replace").rstrip("\r"))
            if len(buffer) > LINE_BYTES:
                line(buffer[:LINE_BYTES].decode(errors="replace"))
                buffer = b""
    if buffer:
        line(buffer[:LINE_BYTES].decode(errors="replace"))


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
