"""``shoal-peer reload``: the daemon re-reads its config without dropping in-flight work.

The daemon writes its pid to ``DATA/shoal-peer.pid``; ``shoal-peer reload`` sends it SIGHUP and
waits for ``DATA/reload.json`` (written by the daemon alone) to carry a newer ``seq``: what was
applied live (labels, log level), which changed options need a restart, or the error that left
the running configuration as it was. New labels reach the seeder by a new hello on a fresh
control connection; jobs (a running hook, a download) live in the daemon's nursery, not in the
connection, and go on untouched.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from common.errors import ConfigError, ShoalError
from peer.config import restart_needed
from peer.context import PeerContext

if TYPE_CHECKING:
    from peer.daemon import PeerConfig
from peer.launcher import read_json, write_json

log = logging.getLogger("shoal.peer.reload")

PIDFILE = "daemon.pid"  # the daemon's own pid (shoal-peer.pid is the --service none supervisor's)
RESULT = "reload.json"

# Re-reads the config file with the original flags: (the config a restart would run, log level).
Reparse = Callable[[], "tuple[PeerConfig, str]"]


@dataclass
class Reloads:
    """The daemon's side: SIGHUP -> re-read, apply what is live, say what needs a restart."""

    ctx: PeerContext
    reparse: Reparse
    running: PeerConfig  # what the daemon runs with (labels updated by each reload)
    seq: int = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        pidfile = self.ctx.layout.root / PIDFILE
        previous = read_json(self.ctx.layout.root / RESULT)
        self.seq = int(previous.get("seq", 0)) if previous else 0
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            pidfile.write_text(f"{os.getpid()}\n")
            try:
                task_status.started()
                async for _ in signals:
                    self.reload()
            finally:
                try:
                    if pidfile.read_text().strip() == str(os.getpid()):
                        pidfile.unlink()
                except OSError:
                    pass

    def reload(self) -> dict[str, Any]:
        self.seq += 1
        result: dict[str, Any] = {"seq": self.seq, "at": time.time(), "pid": os.getpid()}
        try:
            new, level = self.reparse()
        except (ShoalError, OSError) as exc:
            result.update(ok=False, error=f"config not reloaded: {exc}", applied={}, restart=[])
            log.error("reload: %s", result["error"])
        else:
            applied: dict[str, Any] = {}
            if new.labels != self.ctx.labels:
                applied["labels"] = new.labels
                self.ctx.set_labels(new.labels)
                self.running = replace(self.running, labels=new.labels)
            if level.upper() != logging.getLevelName(logging.getLogger().level):
                applied["log_level"] = level.upper()
                logging.getLogger().setLevel(level.upper())
            restart = restart_needed(self.running, new)
            result.update(ok=True, error="", applied=applied, restart=restart)
            log.info("reload: applied %s; need a restart: %s", applied or "nothing", restart)
        write_json(self.ctx.layout.root / RESULT, result)
        return result


def request_reload(data_dir: Path, *, timeout: float = 10.0) -> dict[str, Any]:
    """Ask the daemon of ``data_dir`` to reload; its answer (raises ConfigError if none)."""
    try:
        pid = int((data_dir / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        raise ConfigError(
            f"no running shoal-peer for {data_dir} (no readable {data_dir / PIDFILE})"
        ) from None
    before = read_json(data_dir / RESULT)
    seq = int(before.get("seq", 0)) if before else 0
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ConfigError(
            f"shoal-peer pid {pid} (from {data_dir / PIDFILE}) is not running"
        ) from None
    except PermissionError:
        raise ConfigError(f"not allowed to signal shoal-peer pid {pid}: run as its user") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        after = read_json(data_dir / RESULT)
        if after is not None and int(after.get("seq", 0)) > seq:
            return after
        time.sleep(0.05)
    raise ConfigError(f"shoal-peer pid {pid} did not answer the reload within {timeout:.0f}s")


def render(result: dict[str, Any]) -> str:
    if not result.get("ok"):
        return str(result.get("error"))
    lines = [f"applied: {k} = {json.dumps(v)}" for k, v in result.get("applied", {}).items()]
    lines = lines or ["applied: nothing changed"]
    restart = result.get("restart") or []
    if restart:
        lines.append(f"needs a restart to take effect: {', '.join(restart)}")
    return "\n".join(lines)
