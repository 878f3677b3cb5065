"""``shoal rollout preflight`` end to end: a real seeder, real peers, the real CLI; nothing changes.

One host is fine, one has a broken live release (its stop hook lost its x bit), one is stopped
(SIGSTOP: connected but silent), later gone (unreachable). A release whose ``runas`` user does
not exist and whose ``files`` destination cannot be created fails those checks everywhere.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import trio

from seeder.localfleet import LocalFleet
from tests.conftest import commit_version, make_app_repo, shoal

pytestmark = pytest.mark.integration

HOSTS = ["pf-1", "pf-2", "pf-3"]


def build(fleet: LocalFleet, repo: Path) -> str:
    return fleet.build_release(repo)


def preflight(fleet: LocalFleet, *args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    out = shoal(fleet.control, "rollout", "preflight", *args, "--timeout", "3", "--json")
    assert out.stderr == "", out.stderr
    table = shoal(fleet.control, "rollout", "preflight", *args, "--timeout", "3")
    assert table.returncode == out.returncode
    return out.returncode, json.loads(out.stdout), table.stdout


def rows(result: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {r["host"]: r for r in result["hosts"]}


def failing(row: dict) -> dict[str, list[str]]:  # type: ignore[type-arg]
    out: dict[str, list[str]] = {}
    for c in row["checks"]:
        if not c["ok"]:
            out.setdefault(c["check"], []).append(c["detail"])
    return out


def snapshot(fleet: LocalFleet, host: str) -> tuple[str, list[str], str]:
    home = fleet.peer_dir(host)
    return (
        os.readlink(home / "current"),
        sorted(p.name for p in (home / "releases").iterdir()),
        (home / "events.log").read_text(),
    )


@pytest.mark.slow
async def test_preflight_rows_per_host_and_nothing_changes(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    with trio.fail_after(240):
        await fleet.start_seeder()
        for i, name in enumerate(HOSTS):
            await fleet.start_peer(name, f"127.0.77.{i + 2}")
        assert fleet.control is not None
        async with fleet.client() as client:
            await fleet.wait_connected(client, HOSTS)
        r1 = await trio.to_thread.run_sync(build, fleet, repo)
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "start", r1, "--wait")
        )
        assert out.returncode == 0, out.stdout + out.stderr

        # The next release is fine; pf-2's live release is not, pf-3 stops answering.
        await trio.to_thread.run_sync(commit_version, repo, "2")
        r2 = await trio.to_thread.run_sync(build, fleet, repo)
        (fleet.peer_dir("pf-2") / "releases" / r1 / "hooks" / "ApplicationStop.sh").chmod(0o644)
        before = {h: snapshot(fleet, h) for h in HOSTS}
        stopped = next(d for d in fleet.daemons if d.name == "pf-3")
        os.killpg(stopped.process.pid, signal.SIGSTOP)
        try:
            code, result, table = await trio.to_thread.run_sync(preflight, fleet, r2)
        finally:
            os.killpg(stopped.process.pid, signal.SIGCONT)
        assert code == 1 and result["ok"] is False and result["release_id"] == r2
        by_host = rows(result)
        assert list(by_host) == HOSTS
        assert by_host["pf-1"]["status"] == "ok" and by_host["pf-1"]["ok"]
        assert {c["check"] for c in by_host["pf-1"]["checks"]} == {
            "disk",
            "hooks",
            "runas",
            "files",
        }
        assert by_host["pf-2"]["status"] == "failed"
        assert failing(by_host["pf-2"]) == {
            "hooks": [
                f"live release {r1} ApplicationStop: hooks/ApplicationStop.sh is not executable "
                "(no x permission)"
            ]
        }
        assert by_host["pf-3"]["status"] == "silent" and by_host["pf-3"]["checks"] == []
        lines = table.splitlines()
        assert lines[0].split() == ["HOST", "STATUS", "DISK", "HOOKS", "RUNAS", "FILES"]
        assert lines[1].split() == ["pf-1", "ok", "ok", "ok", "ok", "ok"]
        assert lines[2].split() == ["pf-2", "failed", "ok", "FAIL", "ok", "ok"]
        assert lines[3].split() == ["pf-3", "silent", "-", "-", "-", "-"]
        assert f"1 of 3 host(s) ready for {r2}" in table
        assert "pf-2: hooks: live release" in table

        # Only pf-1: all good, exit 0.
        code, result, _ = await trio.to_thread.run_sync(preflight, fleet, r2, "--hosts", "pf-1")
        assert code == 0 and result["ok"] and [r["host"] for r in result["hosts"]] == ["pf-1"]

        # A release with an unknown runas user and a destination that cannot be created.
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where a directory should be")
        appspec = (
            (repo / "appspec.yml")
            .read_text()
            .replace(
                "ValidateService.sh\n      timeout: 30\n",
                "ValidateService.sh\n      timeout: 30\n      runas: shoal-no-such-user\n",
            )
        )
        assert "shoal-no-such-user" in appspec
        (repo / "appspec.yml").write_text(
            appspec + f"files:\n  - source: VERSION\n    destination: {blocker}/app\n"
        )
        await trio.to_thread.run_sync(commit_version, repo, "3")
        r3 = await trio.to_thread.run_sync(build, fleet, repo)
        await fleet.stop(stopped)
        async with fleet.client() as client:
            with trio.fail_after(20):
                while True:
                    hosts = (await client.call("hosts.list"))["hosts"]
                    if not next(h for h in hosts if h["name"] == "pf-3")["connected"]:
                        break
                    await trio.sleep(0.1)
        code, result, table = await trio.to_thread.run_sync(preflight, fleet, r3)
        assert code == 1
        by_host = rows(result)
        problems = failing(by_host["pf-1"])
        assert problems == {
            "runas": ["runas user 'shoal-no-such-user' does not exist on this host"],
            "files": [f"{blocker}/app: {blocker} exists and is not a directory"],
        }
        assert set(failing(by_host["pf-2"])) == {"hooks", "runas", "files"}
        assert by_host["pf-3"]["status"] == "unreachable"
        assert by_host["pf-3"]["detail"] == "not connected to the seeder"
        assert "pf-3: not connected to the seeder" in table

        # Asking changed nothing on any host.
        for host in HOSTS[:2]:
            assert snapshot(fleet, host) == before[host]

        # Bad input: a clear one-line error.
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "preflight", "web-v9-00000000")
        )
        assert out.returncode == 1 and "unknown release 'web-v9-00000000'" in out.stderr
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "preflight", r3, "--hosts", "zone=mars")
        )
        assert out.returncode == 1 and "matches no host" in out.stderr
