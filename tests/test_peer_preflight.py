"""peer.preflight's checks on a real directory layout: disk, hooks, runas users, destinations."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

import pytest

from common.errors import RemoteProtocolError
from common.preflight import HookFacts, ReleaseFacts, interpreter_line
from peer.layout import Layout
from peer.preflight import interpreter_problem, run_checks
from tests.conftest import MANIFEST

ME = pwd.getpwuid(os.geteuid()).pw_name
RID = MANIFEST.release_id


def facts(**changes: object) -> ReleaseFacts:
    base: dict[str, object] = {
        "manifest": {**MANIFEST.to_dict(), "size": 1000},
        "unpacked_size": 4000,
        "hooks": (HookFacts("ApplicationStart", "hooks/start.sh", interpreter="/bin/sh"),),
        "destinations": (),
    }
    base.update(changes)
    return ReleaseFacts(**base)  # type: ignore[arg-type]


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    lay = Layout(tmp_path / "data")
    lay.create()
    return lay


def by_kind(checks: list, kind: str) -> list:  # type: ignore[type-arg]
    return [c for c in checks if c.check == kind]


def test_a_ready_host_passes_every_check(layout: Layout) -> None:
    checks = run_checks(facts(), layout, staged=False)
    assert [c.check for c in checks] == ["disk", "hooks", "runas", "files"]
    assert all(c.ok for c in checks), checks
    assert "needs 4.9 KiB (download 1000 B + unpacked 3.9 KiB)" in checks[0].detail
    assert checks[1].detail == "ApplicationStart: hooks/start.sh is ready"


def test_disk_counts_download_and_unpack_and_nothing_when_staged(
    layout: Layout, tmp_path: Path
) -> None:
    free = shutil.disk_usage(layout.root).free
    (disk,) = by_kind(run_checks(facts(unpacked_size=free * 2), layout, staged=False), "disk")
    assert not disk.ok and disk.detail.startswith("not enough: needs")
    (layout.release_dir(RID) / "hooks").mkdir(parents=True)
    hook = layout.release_dir(RID) / "hooks" / "start.sh"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    (disk,) = by_kind(run_checks(facts(unpacked_size=free * 2), layout, staged=True), "disk")
    assert disk.ok and "already staged" in disk.detail


def test_hooks_from_the_archive_facts(layout: Layout) -> None:
    hooks = (
        HookFacts("BeforeInstall", "a.sh", present=False),
        HookFacts("AfterInstall", "b.sh", executable=False),
        HookFacts("ValidateService", "c.py", interpreter="/usr/bin/shoal-no-python"),
        HookFacts("ValidateService", "d.py", interpreter="/usr/bin/env shoal-no-such-tool -u"),
    )
    details = [c.detail for c in by_kind(run_checks(facts(hooks=hooks), layout, False), "hooks")]
    assert details == [
        "BeforeInstall: a.sh is not a file in the release",
        "AfterInstall: b.sh is not executable in the release archive (no x permission)",
        "ValidateService: c.py needs the interpreter /usr/bin/shoal-no-python, which is not "
        "installed here",
        "ValidateService: d.py needs shoal-no-such-tool (via /usr/bin/env), which is not on "
        "PATH here",
    ]


def test_hooks_of_a_staged_release_are_checked_on_disk(layout: Layout) -> None:
    scripts = layout.release_dir(RID) / "hooks"
    scripts.mkdir(parents=True)
    (scripts / "start.sh").write_text("#!/bin/sh\n")  # staged, but lost its x bit
    (hook,) = by_kind(run_checks(facts(), layout, staged=True), "hooks")
    assert not hook.ok
    assert hook.detail == "ApplicationStart: hooks/start.sh is not executable (no x permission)"


def test_the_live_releases_stop_hooks_are_checked(layout: Layout) -> None:
    live = layout.release_dir("web-v1-00000000")
    (live / "hooks").mkdir(parents=True)
    (live / "appspec.yml").write_text(
        "version: 0.0\nos: linux\nhooks:\n"
        "  BeforeBlockTraffic:\n    - location: hooks/leave.sh\n      runas: shoal-no-such-user\n"
        "  ApplicationStop:\n    - location: hooks/stop.sh\n"
        "  ApplicationStart:\n    - location: hooks/never-checked.sh\n"
    )
    (live / "hooks" / "leave.sh").write_text("#!/bin/sh\n")
    (live / "hooks" / "leave.sh").chmod(0o755)
    layout.switch_current("web-v1-00000000")
    checks = run_checks(facts(), layout, staged=False)
    hooks = by_kind(checks, "hooks")
    assert [(c.ok, c.detail) for c in hooks[1:]] == [
        (True, "live release web-v1-00000000 BeforeBlockTraffic: hooks/leave.sh is ready"),
        (False, "live release web-v1-00000000 ApplicationStop: hooks/stop.sh does not exist"),
    ]
    (runas,) = by_kind(checks, "runas")
    assert not runas.ok and "'shoal-no-such-user' does not exist" in runas.detail

    (live / "appspec.yml").write_text("version: 9\n")
    (broken,) = by_kind(run_checks(facts(hooks=()), layout, staged=False), "hooks")
    assert not broken.ok and "its hooks would not run" in broken.detail


def test_runas_users_are_checked_once_each(layout: Layout) -> None:
    hooks = (
        HookFacts("BeforeInstall", "a.sh", runas=ME, interpreter=""),
        HookFacts("AfterInstall", "a.sh", runas=ME, interpreter=""),
        HookFacts("AfterInstall", "b.sh", runas="shoal-no-such-user", interpreter=""),
    )
    runas = by_kind(run_checks(facts(hooks=hooks), layout, staged=False), "runas")
    assert [(c.ok, c.detail) for c in runas] == [
        (True, f"user {ME!r} is usable"),
        (False, "runas user 'shoal-no-such-user' does not exist on this host"),
    ]


def test_destinations_writable_creatable_or_not(layout: Layout, tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    destinations = (
        str(tmp_path),
        str(tmp_path / "new" / "deeper"),
        str(tmp_path / "blocker" / "app"),
        str(tmp_path / "dangling" / "app"),
    )
    files = by_kind(run_checks(facts(destinations=destinations), layout, False), "files")
    assert [(c.ok, c.detail) for c in files] == [
        (True, f"{tmp_path} is writable"),
        (True, f"{tmp_path}/new/deeper can be created (in {tmp_path})"),
        (False, f"{tmp_path}/blocker/app: {tmp_path}/blocker exists and is not a directory"),
        (False, f"{tmp_path}/dangling/app: {tmp_path}/dangling is a dangling symlink"),
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_destination_fails(layout: Layout, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    files = by_kind(run_checks(facts(destinations=(str(locked / "app"),)), layout, False), "files")
    assert not files[0].ok and "cannot be created" in files[0].detail


def test_interpreter_lines() -> None:
    assert interpreter_line(b"#!/bin/sh -e\necho") == "/bin/sh -e"
    assert interpreter_line(b"echo hi\n") == ""
    assert interpreter_problem("/bin/sh -e") is None
    assert interpreter_problem("/usr/bin/env sh") is None
    assert interpreter_problem("") is None


def test_the_request_round_trips_and_malformed_ones_are_named() -> None:
    original = facts(destinations=("/srv/app",))
    assert ReleaseFacts.from_dict(original.to_dict()) == original
    with pytest.raises(RemoteProtocolError, match="malformed preflight request"):
        ReleaseFacts.from_dict({"release_id": RID, "size": 1})
    with pytest.raises(RemoteProtocolError, match="does not match its manifest"):
        ReleaseFacts.from_dict({**original.to_dict(), "release_id": "../../etc"})
    with pytest.raises(RemoteProtocolError, match="a destination is relative"):
        ReleaseFacts.from_dict({**original.to_dict(), "files": ["srv"]})
    with pytest.raises(RemoteProtocolError, match="malformed"):
        ReleaseFacts.from_dict({**original.to_dict(), "hooks": [{"bogus": 1}]})


def test_a_partial_download_counts_by_the_blocks_it_holds(layout: Layout) -> None:
    archive = layout.download_dir(RID) / MANIFEST.archive
    archive.parent.mkdir(parents=True)
    with archive.open("wb") as f:
        f.truncate(1000)  # preallocated, sparse: nothing downloaded yet
    (disk,) = by_kind(run_checks(facts(), layout, staged=False), "disk")
    assert "(download 1000 B + unpacked" in disk.detail
    archive.write_bytes(b"x" * 1000)  # all there
    (disk,) = by_kind(run_checks(facts(), layout, staged=False), "disk")
    assert "(download 0 B + unpacked" in disk.detail
