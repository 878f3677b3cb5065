"""Who a hook runs as, and what it sees of that: ids, groups, environment, reachable paths.

``runas`` in an appspec names a user of the host. :func:`resolve` turns it into the arguments
``subprocess`` needs to switch uid, gid and supplementary groups in the child just before exec
(no shell, ``su`` or login in between); no switch at all when it is unset or names the peer's
own user. :func:`hook_environment` gives the hook the identity of that user from its passwd
entry and a fixed PATH. :func:`reach_problem` tells preflight when the user could not even get
to the release's files (a data directory closed to it).
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NamedTuple

HOOK_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""``PATH`` of every hook, whoever it runs as (the daemon's own PATH is not passed on)."""


class RunAsError(Exception):
    """The hook cannot run as its ``runas`` user here (unknown user, no right to switch)."""


class Identity(NamedTuple):
    """Arguments for subprocess to switch user (all None: stay who we are), and the passwd
    entry of the user the hook runs as (None if the daemon's own user has none)."""

    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None
    entry: pwd.struct_passwd | None = None


def resolve(runas: str | None) -> Identity:
    """``runas`` as ids; no switch when it is unset or already the current user."""
    if runas is None:
        try:
            return Identity(entry=pwd.getpwuid(os.geteuid()))
        except KeyError:  # a uid without a passwd entry (some containers): keep env as given
            return Identity()
    try:
        entry = pwd.getpwnam(runas)
    except KeyError:
        raise RunAsError(f"runas user {runas!r} does not exist on this host") from None
    if entry.pw_uid == os.geteuid():
        return Identity(entry=entry)
    if os.geteuid() != 0:
        raise RunAsError(f"cannot run as user {runas!r}: the peer is not running as root")
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    return Identity(entry.pw_uid, entry.pw_gid, groups, entry)


def runas_problem(runas: str | None) -> str | None:
    """Why this peer could not run a hook as ``runas`` (unknown user, no right to switch)."""
    try:
        resolve(runas)
    except RunAsError as exc:
        return str(exc)
    return None


def hook_environment(env: Mapping[str, str], entry: pwd.struct_passwd | None) -> dict[str, str]:
    """The environment of a hook: ``env`` with the identity of its user and a fixed PATH."""
    out = dict(env)
    out["PATH"] = HOOK_PATH
    if entry is not None:
        out.update(
            HOME=entry.pw_dir or "/",
            USER=entry.pw_name,
            LOGNAME=entry.pw_name,
            SHELL=entry.pw_shell or "/bin/sh",
        )
    return out


def reach_problem(path: Path, runas: str) -> str | None:
    """Why user ``runas`` could not get into directory ``path`` (a parent without search
    permission for it), or None. Root and the peer's own user can always reach it."""
    try:
        ids = resolve(runas)
    except RunAsError as exc:
        return str(exc)
    if ids.user is None or ids.user == 0:
        return None
    groups = set(ids.extra_groups or ()) | {ids.group}
    probe = Path(os.path.abspath(path))
    for directory in [*reversed(probe.parents), probe]:
        try:
            info = directory.stat()
        except FileNotFoundError:
            return None  # made later by the peer, like the release directory itself
        except OSError as exc:
            return f"cannot check {directory}: {exc.strerror}"
        if info.st_uid == ids.user:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            mode = stat.filemode(info.st_mode)
            return (
                f"user {runas!r} cannot reach {path}: {directory} is {mode}"
                f" (uid {info.st_uid}, gid {info.st_gid}), no search permission for it"
            )
    return None
