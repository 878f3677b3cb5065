"""The daemon restarting itself into ``PREFIX/current`` after an upgrade switched it.

The request only ends the daemon's nursery (every session closes cleanly: hooks' groups, the
libtorrent session with its resume data, the journal); the restart itself happens after
``trio.run`` returned, in :func:`reexec`:

- under the launcher (``PREFIX/bin/shoal-peer``, which the systemd unit and the ``--service
  none`` supervisor run): exit with ``launcher.RESTART``; the launcher starts ``current`` and
  watches it come back;
- started directly (by hand, or by a unit or supervisor of a version before they ran the
  launcher): ``os.execv`` the launcher with the same arguments, so this very process (same
  pid, same systemd main pid or supervisor child) becomes the launcher.

Either way the new version runs supervised, so a version that does not come back is rolled back.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from peer import launcher


@dataclass
class RestartRequest:
    version: str | None = None
    event: trio.Event | None = None

    def request(self, version: str) -> None:
        self.version = version
        if self.event is not None:
            self.event.set()

    async def wait(self) -> None:
        if self.event is None:
            self.event = trio.Event()
        if self.version is not None:
            return
        await self.event.wait()


def reexec(prefix: Path, args: list[str]) -> int:
    """Restart into ``prefix``'s current version (see the module doc). Returns only the exit
    status for the launcher; an exec does not return."""
    if os.environ.get(launcher.LAUNCHED):
        return launcher.RESTART
    program = prefix / "bin" / "shoal-peer"
    sys.stdout.flush()
    sys.stderr.flush()
    os.closerange(3, _max_fd())  # nothing of this process's sockets or files leaks into the next
    os.execv(program, [str(program), *args])
    raise AssertionError("unreachable")  # pragma: no cover


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 4096
