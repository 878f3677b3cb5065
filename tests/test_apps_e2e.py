"""Applications end to end, real seeder and CLI: a bare repository over file:// as the remote,
refs listed after pushes, builds by tag, branch and short sha, build steps streamed and kept,
failing and timed-out steps publishing nothing, release history with where releases are live."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from common.archive import list_archive
from common.errors import RemoteError
from seeder.localfleet import LocalFleet, free_port
from tests.gitremote import make_remote

pytestmark = pytest.mark.integration

PEER_IP = "127.0.8.2"
CLI = [sys.executable, "-m", "seeder.cli"]
SHOAL_YML = """\
build: mkdir -p dist && echo compiled > dist/out.txt && echo step-output
include: [appspec.yml, hooks/, dist/]
timeout: 60
"""


def cli_json(fleet: LocalFleet, *args: str) -> Any:
    out = fleet.cli(*args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def refused(fleet: LocalFleet, *args: str) -> str:
    out = fleet.cli(*args)
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    return out.stderr


@pytest.mark.slow
async def test_refs_builds_by_tag_branch_and_short_sha_and_history(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    remote = await trio.to_thread.run_sync(make_remote, tmp_path / "git")
    with trio.fail_after(240):
        await fleet.start_seeder()
        port = free_port(PEER_IP)
        await fleet.start_peer(
            "stg-1", PEER_IP, labels="env=staging", extra=("--torrent-port", str(port))
        )
        added = await trio.to_thread.run_sync(
            lambda: cli_json(fleet, "app", "add", "web", "--repo", remote.url)
        )
        assert added["created"] is True and added["app"]["repo"] == remote.url
        again = await trio.to_thread.run_sync(
            lambda: cli_json(fleet, "app", "add", "web", "--repo", remote.url)
        )
        assert again["created"] is False
        err = await trio.to_thread.run_sync(
            lambda: refused(fleet, "app", "add", "web", "--repo", remote.url, "--branch", "dev")
        )
        assert "exists with other settings" in err

        def push_more() -> tuple[str, str]:
            v2 = remote.commit("VERSION", "2\n", "version 2", tag="v2")
            remote.git("checkout", "-q", "-b", "feature")
            feature = remote.commit("feature.txt", "f\n", "feature work")
            remote.git("checkout", "-q", "main")
            remote.push()
            return v2, feature

        v2, feature = await trio.to_thread.run_sync(push_more)
        refs = await trio.to_thread.run_sync(lambda: cli_json(fleet, "app", "refs", "web"))
        assert {b["name"]: b["sha"] for b in refs["branches"]} == {"main": v2, "feature": feature}
        assert [t["name"] for t in refs["tags"]] == ["v2"]
        assert [c["subject"] for c in refs["commits"]] == ["version 2", "version 1"]
        only = await trio.to_thread.run_sync(
            lambda: cli_json(fleet, "app", "refs", "web", "--commits", "1", "--branch", "feature")
        )
        assert set(only) == {"app", "branch", "commits"}
        assert [c["sha"] for c in only["commits"]] == [feature]
        table = await trio.to_thread.run_sync(lambda: fleet.cli("app", "refs", "web", "--tags"))
        assert "v2" in table.stdout and "version 2" in table.stdout

        by_tag = await trio.to_thread.run_sync(
            lambda: cli_json(fleet, "release", "build", "web", "--ref", "v2")
        )
        assert by_tag["created"] is True and by_tag["release"]["commit"] == v2
        assert by_tag["resolved"]["kind"] == "tag" and by_tag["release"]["ref"] == "v2"
        by_sha = await trio.to_thread.run_sync(
            lambda: cli_json(fleet, "release", "build", "web", "--ref", v2[:7])
        )
        assert by_sha["created"] is False, "same commit, same settings: the same release"
        assert by_sha["release"]["release_id"] == by_tag["release"]["release_id"]
        assert by_sha["release"]["infohash"] == by_tag["release"]["infohash"]
        out = await trio.to_thread.run_sync(
            lambda: fleet.cli("release", "build", "web", "--ref", "feature")
        )
        assert out.returncode == 0, out.stderr
        feature_id = out.stdout.strip().splitlines()[-1]
        assert "(branch feature)" in out.stdout and feature_id.startswith("web-")
        err = await trio.to_thread.run_sync(
            lambda: refused(fleet, "release", "build", "web", "--ref", "v9")
        )
        assert "app 'web' has no branch, tag or commit 'v9'" in err

        rid = by_tag["release"]["release_id"]
        started = await trio.to_thread.run_sync(
            lambda: fleet.cli("rollout", "start", rid, "--hosts", "env=staging", "--wait")
        )
        assert started.returncode == 0, started.stdout + started.stderr
        listing = await trio.to_thread.run_sync(
            lambda: cli_json(fleet, "release", "list", "--app", "web")
        )
        assert [r["release_id"] for r in listing] == [feature_id, rid]  # newest first
        row = listing[1]
        assert (row["ref"], row["commit"], row["subject"]) == ("v2", v2, "version 2")
        assert row["author"] == "shoal sample <sample@shoal.invalid>" and row["size"] > 0
        assert row["live"] == {"staging": 1} and listing[0]["live"] == {}
        refs = await trio.to_thread.run_sync(lambda: cli_json(fleet, "app", "refs", "web"))
        assert {t["name"]: t["releases"] for t in refs["tags"]} == {"v2": [rid]}
        assert {b["name"]: b["releases"] for b in refs["branches"]} == {
            "main": [rid],
            "feature": [feature_id],
        }
        text = await trio.to_thread.run_sync(lambda: fleet.cli("release", "list"))
        assert "staging:1" in text.stdout
        shown = await trio.to_thread.run_sync(lambda: cli_json(fleet, "release", "show", rid))
        assert shown["manifest"]["release_id"] == rid and shown["manifest"]["ref"] == "v2"
        assert [r["state"] for r in shown["rollouts"]] == ["succeeded"]
        assert shown["build"]["from"] == "none" and shown["log"] == []
        err = await trio.to_thread.run_sync(
            lambda: refused(fleet, "release", "list", "--app", "nope")
        )
        assert "no application named 'nope'" in err

        async with fleet.client() as client:
            with pytest.raises(RemoteError, match="not a path"):
                await client.call("release.build", repo=str(remote.bare), ref="main")
            with pytest.raises(RemoteError) as unknown:
                await client.call("release.build", app=str(remote.bare), ref="main")
            assert str(unknown.value) == (
                f"no application named {str(remote.bare)!r} (`shoal app list` shows them)"
            )


async def test_build_steps_stream_are_kept_and_failures_publish_nothing(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    remote = await trio.to_thread.run_sync(make_remote, tmp_path / "git")
    await trio.to_thread.run_sync(
        lambda: (remote.commit("shoal.yml", SHOAL_YML, "build steps"), remote.push())
    )
    releases = fleet.root / "seeder" / "releases"
    with trio.fail_after(240):
        await fleet.start_seeder()
        await trio.to_thread.run_sync(fleet.add_app, remote.url)
        out = await trio.to_thread.run_sync(
            lambda: fleet.cli("release", "build", "web", "--ref", "main")
        )
        assert out.returncode == 0, out.stderr
        assert "[build] step-output" in out.stderr.splitlines()
        rid = out.stdout.strip().splitlines()[-1]
        shown = await trio.to_thread.run_sync(lambda: cli_json(fleet, "release", "show", rid))
        assert {"step": "build", "line": "step-output"} in [
            {k: e[k] for k in ("step", "line")} for e in shown["log"]
        ]
        assert shown["build"]["from"] == "shoal.yml"
        listing = list_archive(releases / rid / shown["manifest"]["archive"])
        assert "dist/out.txt" in listing.modes and "appspec.yml" in listing.modes
        assert "VERSION" not in listing.modes and "shoal.yml" not in listing.modes
        text = await trio.to_thread.run_sync(lambda: fleet.cli("release", "show", rid))
        assert "[build] step-output" in text.stdout

        before = sorted(p.name for p in releases.iterdir())
        changed = await trio.to_thread.run_sync(
            lambda: cli_json(fleet, "app", "set", "web", "--build", "echo about to fail; exit 9")
        )
        assert changed["app"]["build"]["build"] == "echo about to fail; exit 9"
        err = await trio.to_thread.run_sync(
            lambda: refused(fleet, "release", "build", "web", "--ref", "main")
        )
        assert "[build] about to fail" in err and "failed with exit code 9" in err
        await trio.to_thread.run_sync(
            lambda: cli_json(
                fleet, "app", "set", "web", "--build", "echo slow; sleep 120", "--step-timeout", "1"
            )
        )
        err = await trio.to_thread.run_sync(
            lambda: refused(fleet, "release", "build", "web", "--ref", "main")
        )
        assert "timed out after 1s" in err
        assert sorted(p.name for p in releases.iterdir()) == before, "nothing published"
        listed = await trio.to_thread.run_sync(lambda: cli_json(fleet, "release", "list"))
        assert [r["release_id"] for r in listed] == [rid]
        cleared = await trio.to_thread.run_sync(
            lambda: cli_json(fleet, "app", "set", "web", "--clear-build")
        )
        assert cleared["app"]["build"]["build"] == ""
        again = await trio.to_thread.run_sync(
            lambda: cli_json(fleet, "release", "build", "web", "--ref", "main")
        )
        assert again["release"]["release_id"] == rid and again["created"] is False
        default = await trio.to_thread.run_sync(
            lambda: cli_json(fleet, "release", "build", "web")  # the app's branch: main
        )
        assert default["resolved"]["ref"] == "main" and default["release"]["release_id"] == rid


async def test_build_output_reaches_the_operator_while_the_step_runs(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    """The step waits for a file the test creates only after the CLI printed the step's first
    line: the build can only finish if that line was streamed before the step ended."""
    remote = await trio.to_thread.run_sync(make_remote, tmp_path / "git")
    flag = tmp_path / "go"
    step = f"echo waiting; while [ ! -e {flag} ]; do sleep 0.05; done; echo released"
    with trio.fail_after(120):
        await fleet.start_seeder()
        await trio.to_thread.run_sync(lambda: fleet.add_app(remote.url, "web", "--build", step))
        assert fleet.control is not None
        proc = await trio.lowlevel.open_process(
            [
                *CLI,
                *("release", "build", "web", "--ref", "main", "--seeder", str(fleet.control)),
                *("--identity", str(fleet.credential)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None and proc.stdout is not None
            seen = b""
            while b"[build] waiting\n" not in seen:
                chunk = await proc.stderr.receive_some(4096)
                assert chunk, f"the CLI ended before the step's first line: {seen!r}"
                seen += chunk
            assert b"[build] released" not in seen
            await trio.to_thread.run_sync(flag.touch)
            while chunk := await proc.stderr.receive_some(4096):
                seen += chunk
            out = b""
            while chunk := await proc.stdout.receive_some(4096):
                out += chunk
            await proc.wait()
        finally:
            proc.kill()
            await proc.wait()
        assert proc.returncode == 0, seen
        assert b"[build] released\n" in seen and out.strip().splitlines()[-1].startswith(b"web-")
