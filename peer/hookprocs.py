"""Every process a hook starts, found and killed, also those that left its process group.

A hook that times out or is aborted must leave nothing behind, but a process group is easy to
leave: ``setsid``, a double fork, a daemon that detaches. Two ways to keep track, best first:

- **cgroup v2** (:class:`CgroupTree`), where the daemon's own cgroup is writable (root, or a
  systemd unit with ``Delegate=yes``) and has ``cgroup.kill`` (Linux 5.14+): each hook gets a
  child cgroup of the daemon's. Membership is inherited by every fork and an unprivileged hook
  cannot move itself out, so ``cgroup.kill`` ends them all at once, new forks included. The
  hook is put in its cgroup before it runs a single instruction: the daemon steps into the
  hook's cgroup for the moment of the fork (one spawn at a time) and steps back.
- **PID scan** (:class:`ScanTree`) everywhere else: the hook's environment carries a marker
  (``SHOAL_HOOK_ID``) that its descendants inherit, and the daemon is a child subreaper
  (``PR_SET_CHILD_SUBREAPER``), so orphans of a double fork are re-parented to it instead of to
  init. Killing scans ``/proc`` for processes with the marker, the hook's descendants and
  orphans adopted since the hook started (the peer starts no other child processes while a
  hook runs), SIGKILLs them, and scans again until none is left. Killed orphans are reaped.
  Escaping it takes a process that clears its environment *and* runs under another parent
  (e.g. started through a system service manager); the cgroup cannot be escaped.

``SHOAL_HOOK_TRACKING=scan`` forces the fallback (tests use it to cover both paths).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Protocol

log = logging.getLogger("shoal.peer.hooks")

MARKER: Final = "SHOAL_HOOK_ID"
FORCE_ENV: Final = "SHOAL_HOOK_TRACKING"
KILL_ROUNDS: Final = 20  # scans per kill; each kills all it finds, forks in between are found next
PR_SET_CHILD_SUBREAPER: Final = 36
PREFIX: Final = "shoal-hook-"


class TrackingError(Exception):
    """The hook could not be put in its tree (its cgroup is gone or not writable)."""


class Tree(Protocol):
    """Where one hook's processes are kept."""

    kind: str
    env: dict[str, str]  # added to the hook's environment

    def spawning(self) -> contextlib.AbstractContextManager[None]:
        """Around the fork of the hook's first process."""
        ...

    def started(self, pid: int) -> None:
        """The hook's first process is ``pid``."""
        ...

    def kill(self) -> int:
        """SIGKILL every process of the hook; how many there were (best effort: 0 on error)."""
        ...

    def close(self) -> None:
        """The hook is over: release what can be released (a cgroup that is empty)."""
        ...


def track(name: str) -> Tree:
    """A tree for one hook: a cgroup where one can be made, else a PID scan."""
    if os.environ.get(FORCE_ENV) != "scan":
        base = _own_cgroup()
        if base is not None:
            try:
                return CgroupTree(base, name)
            except OSError as exc:
                log.debug("no cgroup for hook %s (%s); scanning PIDs instead", name, exc)
    return ScanTree()


# --- cgroup v2 --------------------------------------------------------------------------------


def _own_cgroup() -> Path | None:
    """This process's cgroup v2 directory, if cgroup v2 is mounted and it has cgroup.kill."""
    try:
        line = next(
            (x for x in Path("/proc/self/cgroup").read_text().splitlines() if x.startswith("0::")),
            None,
        )
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    if line is None:
        return None
    relative = line[3:].strip().lstrip("/")
    for mount in mounts:
        left, _, right = mount.partition(" - ")
        if right.split(" ", 1)[0] != "cgroup2":
            continue
        root, point = left.split(" ")[3:5]
        if root != "/":
            continue
        path = Path(point) / relative
        if (path / "cgroup.procs").is_file():
            return path
    return None


class CgroupTree:
    kind = "cgroup"

    def __init__(self, base: Path, name: str) -> None:
        _sweep(base)
        self.base = base
        self.path = base / f"{PREFIX}{os.getpid()}-{_safe(name)}-{secrets.token_hex(4)}"
        self.path.mkdir()
        if not (self.path / "cgroup.kill").exists():
            self.path.rmdir()
            raise OSError("cgroup.kill is missing (Linux older than 5.14)")
        self.env: dict[str, str] = {}

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """The daemon steps into the hook's cgroup for the fork; the child is born there."""
        me = str(os.getpid())
        try:
            (self.path / "cgroup.procs").write_text(me)
        except OSError as exc:
            raise TrackingError(f"cannot enter cgroup {self.path}: {exc.strerror}") from None
        try:
            yield
        finally:
            try:
                (self.base / "cgroup.procs").write_text(me)
            except OSError as exc:  # we stay in the hook's cgroup: harmless, but say so
                log.error("cannot return to cgroup %s: %s", self.base, exc.strerror)

    def started(self, pid: int) -> None:
        pass

    def kill(self) -> int:
        try:
            count = len(self.pids())
            (self.path / "cgroup.kill").write_text("1")
        except OSError as exc:
            log.error("cannot kill the processes of cgroup %s: %s", self.path, exc)
            return 0
        return count

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def close(self) -> None:
        with contextlib.suppress(OSError):  # still populated: a daemon the hook started
            self.path.rmdir()


def _sweep(base: Path) -> None:
    """Remove this daemon's empty hook cgroups left from earlier hooks (daemons since gone)."""
    mine = f"{PREFIX}{os.getpid()}-"
    with contextlib.suppress(OSError):
        for child in base.iterdir():
            if child.name.startswith(mine):
                with contextlib.suppress(OSError):
                    child.rmdir()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)[:40] or "hook"


# --- PID scan ---------------------------------------------------------------------------------


class _Proc:
    __slots__ = ("pid", "ppid", "start", "state")

    def __init__(self, pid: int, ppid: int, state: str, start: int) -> None:
        self.pid, self.ppid, self.state, self.start = pid, ppid, state, start


_subreaper = False


def _become_subreaper() -> None:
    global _subreaper
    if _subreaper:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.warning("cannot become a child subreaper (orphans of hooks go to init): %s", exc)
    _subreaper = True


_roots: set[int] = set()  # first processes of the hooks running now (their runner waits on them)


class ScanTree:
    kind = "scan"

    def __init__(self) -> None:
        _become_subreaper()
        self.token = secrets.token_hex(16)
        self.env = {MARKER: self.token}
        self.root: int | None = None
        self.root_start = 0
        self._needle = f"{MARKER}={self.token}".encode()
        self._killed: set[int] = set()

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        yield

    def started(self, pid: int) -> None:
        self.root = pid
        _roots.add(pid)
        proc = _read(pid)
        self.root_start = proc.start if proc is not None else 0

    def kill(self) -> int:
        for _ in range(KILL_ROUNDS):
            found = self.members() - self._killed
            if not found:
                break
            for pid in found:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self._killed |= found
        return len(self._killed)

    def members(self) -> set[int]:
        """Live processes of this hook: marked, descended from it, or orphans adopted since."""
        me = os.getpid()
        procs = [p for p in map(_read, _all_pids()) if p is not None and p.state not in "ZX"]
        roots = {p.pid for p in procs if p.pid != me and self._marked(p.pid)}
        if self.root is not None:
            roots.add(self.root)
            roots |= {  # orphans re-parented to us (the subreaper) since the hook started
                p.pid
                for p in procs
                if p.ppid == me and p.pid not in _roots and p.start >= self.root_start
            }
        children: dict[int, list[int]] = {}
        for p in procs:
            children.setdefault(p.ppid, []).append(p.pid)
        alive = {p.pid for p in procs}
        found, todo = set(), [r for r in roots if r in alive]
        while todo:
            pid = todo.pop()
            if pid in found or pid == me:
                continue
            found.add(pid)
            todo.extend(children.get(pid, ()))
        return found

    def _marked(self, pid: int) -> bool:
        try:
            return self._needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False

    def close(self) -> None:
        """Reap the killed orphans that were re-parented to us (else they stay zombies)."""
        if self.root is not None:
            _roots.discard(self.root)
        _reap_adopted(self._killed - {self.root} if self.root else self._killed)
        self._killed.clear()


def _all_pids() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


def _read(pid: int) -> _Proc | None:
    """ppid, state and start time (clock ticks since boot) of ``pid`` from /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and ")"
    return _Proc(pid, int(fields[1]), fields[0], int(fields[19]))


def _reap_adopted(pids: set[int]) -> None:
    """Collect the exit status of killed orphans re-parented to us (else they stay zombies).
    Only pids this module killed, so no other waiter's child is ever taken."""
    me = os.getpid()
    for pid in pids:
        proc = _read(pid)
        if proc is not None and proc.ppid == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
