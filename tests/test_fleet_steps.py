"""The install's pure parts: what a probe says must change, failure classes, unit and config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from common.addr import Address
from common.install_layout import InstallLayout
from peer.config import parse_config
from seeder.fleet_install import Options, peer_config, render_unit
from seeder.fleet_steps import (
    HEADROOM,
    Failed,
    HostRun,
    Reason,
    check_disk,
    check_python,
    classify_command,
    plan,
    reason_of,
    sha,
)
from seeder.fleet_view import report
from seeder.inventory import parse_inventory

REPO = Path(__file__).resolve().parents[1]
CONFIG = "seeder: x\n"
UNIT = "[Unit]\n"


def _probe(**over: Any) -> dict[str, Any]:
    base = {
        "python": "3.11",
        "python_full": "3.11.2",
        "venv": True,
        "current": "0.1.0-abc",
        "installed": "m\n",
        "config_sha": sha(CONFIG),
        "unit_sha": sha(UNIT),
        "enrolled": True,
        "running": True,
        "free_prefix": 10 << 30,
        "free_data": 10 << 30,
        "free_tmp": 10 << 30,
    }
    return base | over


def test_a_host_that_is_right_needs_nothing() -> None:
    todo = plan(_probe(), "0.1.0-abc", "m\n", CONFIG, UNIT, enroll=True)
    assert not (todo.install or todo.config or todo.unit or todo.enroll or todo.restart)
    assert todo.running


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"current": "0.0.9-old"}, "install"),
        ({"installed": "other\n"}, "install"),  # same name, different wheels
        ({"config_sha": None}, "config"),
        ({"unit_sha": "x"}, "unit"),
        ({"enrolled": False}, "enroll"),
    ],
)
def test_each_difference_is_found(over: dict[str, Any], field: str) -> None:
    todo = plan(_probe(**over), "0.1.0-abc", "m\n", CONFIG, UNIT, enroll=True)
    assert getattr(todo, field)
    assert todo.restart == (field != "enroll")


def test_no_unit_without_systemd_and_no_enroll_without_tokens() -> None:
    todo = plan(_probe(unit_sha=None, enrolled=False), "0.1.0-abc", "m\n", CONFIG, None, False)
    assert not todo.unit and not todo.enroll


def test_python_checks() -> None:
    check_python(_probe(), "python3")
    with pytest.raises(Failed) as info:
        check_python(_probe(python="3.9", python_full="3.9.2"), "/usr/bin/python3")
    assert info.value.reason is Reason.NO_PYTHON and "3.9.2" in info.value.detail
    with pytest.raises(Failed, match="python3-venv"):
        check_python(_probe(venv=False), "python3")


def test_disk_checks_need_room_for_the_install_only_when_installing() -> None:
    small = _probe(free_prefix=HEADROOM + (10 << 20))
    with pytest.raises(Failed) as info:
        check_disk(small, 25 << 20, installing=True)
    assert info.value.reason is Reason.DISK_FULL and "the prefix" in info.value.detail
    check_disk(small, 25 << 20, installing=False)


@pytest.mark.parametrize(
    ("code", "err", "reason"),
    [
        (127, "sh: 1: python3: not found", Reason.NO_PYTHON),
        (1, "sudo: a password is required", Reason.SUDO_REFUSED),
        (1, "OSError: [Errno 28] No space left on device", Reason.DISK_FULL),
        (1, "Traceback ...", Reason.ERROR),
    ],
)
def test_agent_failures_are_classified(code: int, err: str, reason: Reason) -> None:
    assert classify_command(code, "", err, "python3").reason is reason


def test_reason_strings_map_to_classes() -> None:
    assert reason_of("host key changed") is Reason.HOST_KEY_CHANGED
    assert reason_of("service") is Reason.SERVICE_FAILED
    assert reason_of("whatever") is Reason.ERROR


def test_report_groups_failures_by_reason() -> None:
    runs = {n: HostRun(n) for n in ("a", "b", "c")}
    runs["a"].begin("connect", 0.0)
    runs["a"].begin("install", 0.5)
    runs["a"].changed("installed 1")
    runs["a"].finish(2.0)
    assert runs["a"].steps == {"connect": 0.5, "install": 1.5}
    runs["b"].begin("connect", 0.0)
    runs["b"].fail(Reason.UNREACHABLE, "b: timed out", 15.0)
    runs["c"].begin("start", 0.0)
    runs["c"].fail(Reason.SERVICE_FAILED, "exited 1", 3.0)
    text = report(runs, 0.0, "installed")
    assert "unreachable (1):\n    b at connect: b: timed out" in text
    assert "service failed to start (1):\n    c at start: exited 1" in text
    assert "installed 3 host(s)" in text and "1 changed, 2 failed" in text
    assert runs["a"].to_dict()["outcome"] == "changed"


def test_the_config_written_is_what_the_peer_reads() -> None:
    inv = parse_inventory(
        "all:\n  hosts:\n    web-1:\n      env: prod\n      shoal_labels: {tier: '012'}\n"
        "      shoal_torrent_port: 6990\n"
    )
    host = inv.hosts[0]
    opts = Options(known_hosts=Path("k"), peer_seeder=Address("10.0.0.1", 7700))
    text = peer_config(host, InstallLayout(), opts, "10.0.0.5")
    assert peer_config(host, InstallLayout(), opts, "10.0.0.5") == text
    assert parse_config(text, "peer.yml").values == {
        "seeder": "10.0.0.1:7700",
        "data_dir": "/var/lib/shoal-peer",
        "name": "web-1",
        "bind": "10.0.0.5",
        "labels": {"env": "prod", "tier": "012"},
        "torrent_port": 6990,
    }


def test_the_shipped_unit_is_the_documented_one() -> None:
    shipped = (REPO / "seeder" / "deploy" / "systemd" / "shoal-peer.service").read_text()
    assert shipped == (REPO / "deploy" / "systemd" / "shoal-peer.service").read_text()
    assert render_unit(InstallLayout()) == shipped


def test_unit_paths_follow_the_layout_and_refuse_spaces() -> None:
    lay = InstallLayout(PurePosixPath("/srv/shoal"), config=PurePosixPath("/srv/etc/peer.yml"))
    text = render_unit(lay)
    # the launcher of the host's prefix, not a version's own script (it rolls back upgrades)
    assert "\nExecStart=/srv/shoal/bin/shoal-peer run --config /srv/etc/peer.yml\n" in text
    assert "/opt/shoal" not in text and "/etc/shoal/peer.yml" not in text
    with pytest.raises(Exception, match="cannot go into a systemd unit"):
        render_unit(InstallLayout(PurePosixPath("/srv/my shoal")))


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    program = tmp_path / "opt" / "bin" / "shoal-peer"  # the launcher: what the unit runs
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    lay = InstallLayout(PurePosixPath(tmp_path / "opt"), config=PurePosixPath(tmp_path / "p.yml"))
    unit = tmp_path / "shoal-peer.service"
    unit.write_text(render_unit(lay))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if "shoal-peer.service" in line and "network-online.target" not in line
    ]
    assert out.returncode == 0 or not problems, out.stdout + out.stderr
    assert not problems, problems
