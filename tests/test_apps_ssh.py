"""An application whose remote is served over SSH by a real OpenSSH sshd in a network namespace.

The sshd runs in namespace host h1 (bench/netns.py, bench/sftp.py); the seeder's own ssh (its
``GIT_SSH_COMMAND``: its key, its known_hosts, strict host key checking, run inside the
namespace host h0 that reaches h1) fetches the mirror. Skipped, with the reason, where
namespaces or sshd are not available."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import trio

from bench.netns import Testbed, netns_available
from bench.sftp import sshd_available, sshd_fleet
from seeder.localfleet import LocalFleet
from tests.gitremote import make_remote

pytestmark = [pytest.mark.integration, pytest.mark.netns]


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


async def test_a_remote_over_ssh_is_listed_built_and_followed(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    reason = netns_available() or sshd_available()
    if reason:
        pytest.skip(reason)
    remote = await trio.to_thread.run_sync(make_remote, tmp_path / "git")
    key = tmp_path / "seeder_key"
    await trio.to_thread.run_sync(keygen, key)
    with Testbed(1, None) as bed, sshd_fleet(bed, bed.peers, Path(f"{key}.pub")) as host_keys:
        server = bed.peers[0]
        known = tmp_path / "known_hosts"
        known.write_text(f"{server.ip} {host_keys[server.name].read_text()}")
        ssh = (
            f"ip netns exec {bed.seeder.netns} ssh -i {key} -o UserKnownHostsFile={known}"
            " -o StrictHostKeyChecking=yes -o BatchMode=yes"
        )
        with trio.fail_after(180):
            await fleet.start_seeder(env={"GIT_SSH_COMMAND": ssh})

            def cli(*args: str) -> subprocess.CompletedProcess[str]:
                return fleet.cli(*args)

            url = f"ssh://root@{server.ip}{remote.bare}"
            out = await trio.to_thread.run_sync(cli, "app", "add", "web", "--repo", url)
            assert out.returncode == 0, out.stderr
            scp_like = f"root@{server.ip}:{remote.bare}"
            out = await trio.to_thread.run_sync(cli, "app", "add", "web2", "--repo", scp_like)
            assert out.returncode == 0, out.stderr

            out = await trio.to_thread.run_sync(cli, "release", "build", "web", "--ref", "main")
            assert out.returncode == 0, out.stderr
            first = out.stdout.strip().splitlines()[-1]
            sha = await trio.to_thread.run_sync(
                lambda: (remote.commit("VERSION", "2\n", "over ssh", tag="v2"), remote.push())[0]
            )
            out = await trio.to_thread.run_sync(cli, "app", "refs", "web2", "--json")
            assert out.returncode == 0, out.stderr
            refs = json.loads(out.stdout)
            assert [t["name"] for t in refs["tags"]] == ["v2"]
            assert refs["commits"][0]["sha"] == sha and refs["commits"][0]["subject"] == "over ssh"
            out = await trio.to_thread.run_sync(cli, "release", "build", "web", "--ref", sha[:8])
            assert out.returncode == 0, out.stderr
            second = out.stdout.strip().splitlines()[-1]
            assert second != first and second.startswith("web-v2-")

            stranger = tmp_path / "known_hosts_other"
            stranger.write_text("")
            assert fleet.seeder is not None
            await fleet.stop(fleet.seeder)  # the same seeder, now with an unknown host key
            await fleet.start_seeder(
                env={"GIT_SSH_COMMAND": ssh.replace(str(known), str(stranger))}
            )
            out = await trio.to_thread.run_sync(cli, "app", "refs", "web")
            assert out.returncode == 1 and "app 'web': cannot fetch" in out.stderr, out.stderr
