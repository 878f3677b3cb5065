"""End to end with real processes, real sockets and real libtorrent: git ref → release → swarm →
hooks → reports, driven through the real ``shoal`` CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
import trio

from common.addr import Address
from common.protocol import frame
from seeder.localfleet import LocalFleet, free_port
from tests.conftest import commit_version, make_app_repo, shoal

pytestmark = pytest.mark.integration

HOSTS = ["web-1", "web-2", "web-3"]
# The live release's hooks run first (as in CodeDeploy), then the new release's, in this order.
STOP_ORDER = ["BeforeBlockTraffic", "AfterBlockTraffic", "ApplicationStop"]
ACTIVATE_ORDER = [
    "BeforeInstall",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
]
STEPS = {
    "stage",
    "download",
    "verify",
    "unpack",
    "activate",
    "Install",
    *STOP_ORDER,
    *ACTIVATE_ORDER,
}


async def start(fleet: LocalFleet, hosts: list[str] = HOSTS) -> None:
    await fleet.start_seeder()
    for i, name in enumerate(hosts):
        await fleet.start_peer(name, f"127.0.0.{i + 2}", labels=f"zone={'ab'[i % 2]}")
    assert fleet.control is not None
    async with fleet.client() as client:
        await fleet.wait_connected(client, hosts)


def build(fleet: LocalFleet, repo: Path, ref: str) -> str:
    return fleet.build_release(repo, ref)


def events(fleet: LocalFleet, host: str) -> list[tuple[str, str]]:
    log = fleet.peer_dir(host) / "events.log"
    return [tuple(line.split()) for line in log.read_text().splitlines()]  # type: ignore[misc]


def current(fleet: LocalFleet, host: str) -> str:
    return Path(os.readlink(fleet.peer_dir(host) / "current")).name


def status(fleet: LocalFleet, rollout_id: str = "") -> dict:  # type: ignore[type-arg]
    args = ["rollout", "status", *([rollout_id] if rollout_id else []), "--json"]
    out = shoal(fleet.control, *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
async def test_full_rollout_then_upgrade_then_failing_hook(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    repo = tmp_path / "app"
    with trio.fail_after(240):
        await start(fleet)

        # 1. First release on three hosts: every hook in order, current switched, all reported.
        r1 = await trio.to_thread.run_sync(build, fleet, repo, "main")
        assert r1 == await trio.to_thread.run_sync(build, fleet, repo, "main"), "not deterministic"
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "start", r1, "--wait")
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "succeeded: 3 succeeded" in out.stdout
        first = status(fleet)
        assert first["state"] == "succeeded"
        for host in HOSTS:
            assert events(fleet, host) == [(e, r1) for e in ACTIVATE_ORDER]
            assert current(fleet, host) == r1
            target = next(t for t in first["targets"] if t["host"] == host)
            steps = {s["step"]: s for s in target["steps"]}
            assert set(steps) == STEPS, f"{host} reported {sorted(steps)}"
            assert all(s["state"] == "succeeded" for s in steps.values())
            for event in STOP_ORDER:  # nothing was live before
                assert steps[event]["result"] == "skipped"
            assert target["exit_codes"] == dict.fromkeys(ACTIVATE_ORDER, 0)

        # 2. A new commit on the same peers: the previous release's ApplicationStop runs first.
        await trio.to_thread.run_sync(commit_version, repo, "2")
        r2 = await trio.to_thread.run_sync(build, fleet, repo, "main")
        assert r2 != r1
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "start", r2, "--hosts", "all", "--wait")
        )
        assert out.returncode == 0, out.stdout + out.stderr
        for host in HOSTS:
            assert events(fleet, host)[len(ACTIVATE_ORDER) :] == [(e, r1) for e in STOP_ORDER] + [
                (e, r2) for e in ACTIVATE_ORDER
            ]
            assert current(fleet, host) == r2
            assert os.readlink(fleet.peer_dir(host) / "previous").endswith(r1)

        # 3. A third release whose ValidateService fails on web-2 only. The default waves are
        # one host at a time here (1, 10%, 50%, 100% of 3): web-1 switches, web-2 fails, the
        # failure budget (0) is exceeded and web-3 is never activated.
        (fleet.peer_dir("web-2") / "fail-ValidateService").touch()
        await trio.to_thread.run_sync(commit_version, repo, "3")
        r3 = await trio.to_thread.run_sync(build, fleet, repo, "main")
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "start", r3, "--wait")
        )
        assert out.returncode == 1, out.stdout
        third = status(fleet)
        assert third["state"] == "halted"
        assert "web-2" in third["error"] and "ValidateService" in third["error"]
        assert [w["state"] for w in third["waves"]] == ["done", "halted", "skipped"]
        by_host = {t["host"]: t for t in third["targets"]}
        assert by_host["web-1"]["state"] == "succeeded"
        assert by_host["web-3"]["state"] == "staged"
        bad = by_host["web-2"]
        assert bad["state"] == "failed"
        assert bad["exit_codes"]["ValidateService"] == 3
        assert "told to fail" in bad["output"]
        failed_step = next(s for s in bad["steps"] if s["step"] == "ValidateService")
        assert failed_step["result"] == "failed"
        assert current(fleet, "web-2") == r2, "a failed activation must leave the previous release"
        assert current(fleet, "web-3") == r2, "a halted rollout activates nothing more"
        assert current(fleet, "web-1") == r3

        # 4. The failing peer stays up and takes the next rollout.
        (fleet.peer_dir("web-2") / "fail-ValidateService").unlink()
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "start", r3, "--hosts", "web-2,web-3", "--wait")
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert current(fleet, "web-2") == r3

        hosts = json.loads(shoal(fleet.control, "hosts", "--json").stdout)
        assert {h["name"]: h["current"] for h in hosts} == dict.fromkeys(HOSTS, r3)


async def test_bad_input_changes_nothing(fleet: LocalFleet, tmp_path: Path) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    with trio.fail_after(120):
        await start(fleet, HOSTS[:1])

        def refused(*args: str, match: str) -> None:
            out = shoal(fleet.control, *args)
            assert out.returncode != 0
            lines = out.stderr.strip().splitlines()
            assert len(lines) == 1 and match in lines[0], out.stderr

        await trio.to_thread.run_sync(fleet.add_app, repo)
        await trio.to_thread.run_sync(
            lambda: refused("release", "build", "web", "--ref", "nope", match="nope")
        )
        await trio.to_thread.run_sync(
            lambda: refused(
                "app", "add", "other", "--repo", str(tmp_path), match="no git repository"
            )
        )
        await trio.to_thread.run_sync(
            lambda: refused("release", "build", "other", "--ref", "main", match="no application")
        )
        (repo / "appspec.yml").write_text("version: 0.0\nos: linux\nhooks: [1, 2\n")
        await trio.to_thread.run_sync(lambda: commit_version(repo, "broken-yaml"))
        await trio.to_thread.run_sync(
            lambda: refused("release", "build", "web", "--ref", "main", match="appspec")
        )
        (repo / "appspec.yml").write_text(
            "version: 0.0\nos: linux\nhooks:\n  BeforeInstall:\n    - location: hooks/gone.sh\n"
        )
        await trio.to_thread.run_sync(lambda: commit_version(repo, "missing-hook"))
        await trio.to_thread.run_sync(
            lambda: refused("release", "build", "web", "--ref", "main", match="hooks/gone.sh")
        )
        (repo / "appspec.yml").unlink()
        await trio.to_thread.run_sync(lambda: commit_version(repo, "no-appspec"))
        await trio.to_thread.run_sync(
            lambda: refused("release", "build", "web", "--ref", "main", match="appspec.yml")
        )
        listing = shoal(fleet.control, "release", "list", "--json")
        assert json.loads(listing.stdout) == []
        releases_dir = fleet.root / "seeder" / "releases"
        assert [p.name for p in releases_dir.iterdir()] == []

        await trio.to_thread.run_sync(
            lambda: refused("rollout", "start", "web-v9-00000000", match="unknown release")
        )
        good = await trio.to_thread.run_sync(build, fleet, repo, "main~3")
        await trio.to_thread.run_sync(
            lambda: refused(
                "rollout", "start", good, "--hosts", "zone=mars", match="matches no host"
            )
        )


async def test_garbage_closes_one_connection_only(fleet: LocalFleet) -> None:
    with trio.fail_after(60):
        await start(fleet, HOSTS[:1])
        assert fleet.control is not None
        control = fleet.control

        async def dial(secure: bool) -> trio.abc.Stream:
            tcp = await trio.open_tcp_stream(control.host, control.port)
            return await fleet.tls().connect(tcp, control.host) if secure else tcp

        plain = await dial(secure=False)  # not even TLS: refused in the handshake
        await plain.send_all(b"\xc1\xc1 this is not msgpack")
        with trio.fail_after(10), contextlib.suppress(trio.BrokenResourceError):
            while await plain.receive_some(4096):
                pass  # an alert, then end of stream
        await plain.aclose()
        bad = await dial(secure=True)  # authenticated, then garbage
        await bad.send_all(frame(b"\xc1\xc1 this is not msgpack"))
        with trio.fail_after(10):
            while await bad.receive_some(4096):
                pass  # a goodbye, then end of stream: the seeder closed it
        await bad.aclose()
        truncated = await dial(secure=True)
        await truncated.send_all(frame(b"\x85\xa1t\xa5hello" * 9)[:12])  # a frame cut short
        await truncated.aclose()
        async with fleet.client() as client:
            hosts = (await client.call("hosts.list"))["hosts"]
        assert [h["connected"] for h in hosts] == [True]
        log = fleet.root / "logs" / "seeder.log"
        while "middle of a message" not in log.read_text():  # bounded by the fail_after above
            await trio.sleep(0.1)
        assert "undecodable control message" in log.read_text()
        assert "refused a connection from" in log.read_text()


@pytest.mark.slow
async def test_peer_waits_for_seeder_and_seeder_restart_loses_nothing(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    with trio.fail_after(120):
        # A peer started before its seeder keeps retrying and never exits.
        fleet.control = Address("127.0.0.1", free_port("127.0.0.1", block=4))
        peer = await fleet.start_peer("web-1", "127.0.0.2")
        log = fleet.root / "logs" / "web-1.log"
        while log.read_text().count("retrying in") < 3:
            await trio.sleep(0.2)
        assert peer.process.returncode is None
        await fleet.start_seeder()
        async with fleet.client() as client:
            await fleet.wait_connected(client, ["web-1"], wait=60)
        rid = await trio.to_thread.run_sync(build, fleet, repo, "main")
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "start", rid, "--wait")
        )
        assert out.returncode == 0, out.stdout + out.stderr
        before = status(fleet)

        # Restart the seeder: rollouts, events and hosts survive; the peer reconnects.
        assert fleet.seeder is not None
        await fleet.stop(fleet.seeder)
        await fleet.start_seeder()
        async with fleet.client() as client:
            await fleet.wait_connected(client, ["web-1"], wait=60)
        assert status(fleet, before["rollout_id"]) == before
        assert events(fleet, "web-1") == [(e, rid) for e in ACTIVATE_ORDER], "a hook ran twice"


@pytest.mark.slow
async def test_peer_killed_during_a_hook_does_not_repeat_it(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    with trio.fail_after(120):
        await start(fleet, HOSTS[:1])
        home = fleet.peer_dir("web-1")
        (home / "slow-BeforeInstall").touch()  # the hook sleeps 3 s after logging
        rid = await trio.to_thread.run_sync(build, fleet, repo, "main")
        out = await trio.to_thread.run_sync(lambda: shoal(fleet.control, "rollout", "start", rid))
        assert out.returncode == 0, out.stderr
        while not (home / "events.log").exists():
            await trio.sleep(0.05)
        peer = next(d for d in fleet.daemons if d.name == "web-1")
        await fleet.stop(peer, signal.SIGKILL)  # no chance to journal anything more
        await trio.sleep(3.5)  # the orphaned hook finishes on its own
        await fleet.start_peer("web-1", "127.0.0.2")
        while status(fleet)["state"] not in ("succeeded", "failed", "halted"):
            await trio.sleep(0.2)
        assert status(fleet)["state"] == "halted"  # the one host failed: over the budget of 0
        target = status(fleet)["targets"][0]
        assert target["state"] == "failed"
        steps = {s["step"]: s for s in target["steps"]}
        assert steps["BeforeInstall"]["result"] == "interrupted"
        assert steps["activate"]["state"] == "failed"
        assert events(fleet, "web-1") == [("BeforeInstall", rid)], "a hook ran twice"
        assert not (home / "current").exists()

        # The restarted peer takes the next rollout.
        (home / "slow-BeforeInstall").unlink()
        out = await trio.to_thread.run_sync(
            lambda: shoal(fleet.control, "rollout", "start", rid, "--wait")
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert current(fleet, "web-1") == rid
