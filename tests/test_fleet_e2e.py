"""``shoal fleet`` for real: OpenSSH sshd in network namespaces, a real seeder, real installs.

Each namespace of the bench testbed is one "server" with its own sshd (own host key), and its
own prefix, data dir and config path (the namespaces share one file system). The CLI and the
seeder run in the seeder's namespace, where the hosts are reachable. Hosts run the daemon with
``--service none`` (no systemd in namespaces).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from bench.netns import Host, Testbed, netns_available
from bench.sftp import _keygen, sshd_available, sshd_fleet
from seeder.localfleet import LocalFleet
from seeder.wheelhouse import Target, build_bundle

# One worker starts the testbed fleet once (a module fixture) and runs every test on it.
pytestmark = [
    pytest.mark.netns,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("fleet_e2e"),
]
HOSTS = 4
PYTHON = "/usr/bin/python3"  # the system interpreter, as on a real server


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheelhouse cache for the module, filled here: the CLI runs in the seeder's namespace,
    which has no route to a package index (as a seeder box may not)."""
    root = tmp_path_factory.mktemp("shoal-cache")
    probe = "import platform as p, sys; print(*sys.version_info[:2], p.machine(), p.libc_ver()[1])"
    out = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, check=True)
    major, minor, machine, glibc = out.stdout.split()
    build_bundle(root / "wheelhouse", Target(f"{major}.{minor}", machine, glibc))
    return root


@dataclass
class Fleet:
    bed: Testbed
    local: LocalFleet
    key: Path
    known_hosts: Path
    inventory: Path
    cache: Path

    def shoal(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.local.cli(*args, timeout=timeout)

    def fleet(self, action: str, *args: str) -> tuple[int, dict[str, Any]]:
        out = self.shoal(
            "fleet",
            action,
            "--inventory",
            str(self.inventory),
            "--known-hosts",
            str(self.known_hosts),
            "--json",
            *args,
        )
        try:
            doc = json.loads(out.stdout)
        except json.JSONDecodeError:
            why = f"fleet {action}: {out.returncode}\n{out.stdout}\n{out.stderr}"
            raise AssertionError(why) from None
        return out.returncode, {h["host"]: h for h in doc["hosts"]}

    def install(self, *args: str) -> tuple[int, dict[str, Any]]:
        return self.fleet("install", "--cache", str(self.cache), "--service", "none", *args)

    def hosts(self) -> dict[str, Any]:
        out = self.shoal("hosts", "--json")
        assert out.returncode == 0, out.stderr
        return {h["name"]: h for h in json.loads(out.stdout)}


def _inventory(
    bed: Testbed, key: Path, extra: str = "", host_vars: dict[str, dict[str, str]] | None = None
) -> str:
    lines = [
        "all:",
        "  vars:",
        "    ansible_user: root",
        f"    ansible_ssh_private_key_file: {key}",
    ]
    lines += [f"    ansible_python_interpreter: {PYTHON}", "    shoal_service: none"]
    lines += ["    env: test", "  children:", "    web:", "      hosts:"]
    for h in bed.peers:
        lines += [
            f"        {h.name}:",
            f"          ansible_host: {h.ip}",
            f"          zone: z{h.index % 2}",
            f"          shoal_prefix: {h.workdir}/opt/shoal",
            f"          shoal_data_dir: {h.workdir}/var/shoal-peer",
            f"          shoal_config: {h.workdir}/etc/peer.yml",
        ]
        lines += [f"          {k}: {v}" for k, v in (host_vars or {}).get(h.name, {}).items()]
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
async def fleet(tmp_path: Path, cache: Path) -> AsyncIterator[Fleet]:
    for reason in (netns_available(), sshd_available()):
        if reason:
            pytest.skip(reason)
    with Testbed(HOSTS, None) as bed:
        key = tmp_path / "id_ed25519"
        _keygen(key)
        with sshd_fleet(bed, bed.peers, key.with_suffix(".pub")) as host_keys:
            known = tmp_path / "known_hosts"
            known.write_text(
                "".join(
                    f"{h.ip} {' '.join(host_keys[h.name].read_text().split()[:2])}\n"
                    for h in bed.peers
                )
            )
            inventory = tmp_path / "inventory.yml"
            inventory.write_text(_inventory(bed, key))
            local = LocalFleet(tmp_path / "fleet", seeder_ip=bed.seeder.ip, netns=bed.seeder.netns)
            try:
                await local.start_seeder()
                yield Fleet(bed, local, key, known, inventory, cache)
            finally:
                await local.stop_all()


def _problems(results: dict[str, Any]) -> dict[str, Any]:
    return {n: (r["step"], r["reason"], r["detail"]) for n, r in results.items() if r["reason"]}


def _daemon_pid(h: Host) -> int:
    return int((h.workdir / "var" / "shoal-peer" / "shoal-peer.pid").read_text())


def _regenerate_host_key(h: Host) -> None:
    """The host was "reinstalled": a new host key, picked up by sshd on SIGHUP."""
    d = h.workdir / "sshd"
    for name in ("host_key", "host_key.pub"):
        (d / name).unlink()
    _keygen(d / "host_key")
    os.kill(int((d / "sshd.pid").read_text()), signal.SIGHUP)


async def test_install_is_idempotent_and_refuses_changed_host_keys(fleet: Fleet) -> None:
    names = [h.name for h in fleet.bed.peers]
    code, first = await trio.to_thread.run_sync(fleet.install)
    assert code == 0, _problems(first)
    for name in names:
        assert first[name]["outcome"] == "changed", first[name]
        assert any(c.startswith("installed 0.1.0-") for c in first[name]["changes"])
        assert "started" in first[name]["changes"]
        assert "enrolled" in first[name]["changes"]  # by a join token: the key stays there
    hosts = fleet.hosts()
    for h in fleet.bed.peers:
        assert hosts[h.name]["connected"], hosts[h.name]
        assert hosts[h.name]["labels"] == {"env": "test", "zone": f"z{h.index % 2}"}
        assert hosts[h.name]["address"] == h.ip
        current = h.workdir / "opt" / "shoal" / "current"
        assert os.readlink(current).startswith("versions/0.1.0-")
        assert (current / "bin" / "shoal-peer").exists()
        identity = h.workdir / "var" / "shoal-peer" / "identity"
        assert (identity / "host.key").stat().st_mode & 0o077 == 0
    pids = {h.name: _daemon_pid(h) for h in fleet.bed.peers}

    code, second = await trio.to_thread.run_sync(fleet.install)
    assert code == 0, _problems(second)
    assert {n: r["outcome"] for n, r in second.items()} == dict.fromkeys(names, "unchanged")
    assert {h.name: _daemon_pid(h) for h in fleet.bed.peers} == pids  # nothing restarted

    good, changed, refused, nopython = fleet.bed.peers
    _regenerate_host_key(changed)
    stranger = fleet.key.with_name("stranger")
    _keygen(stranger)  # a key no host authorizes
    extra = "    ghost:\n      hosts:\n        ghost1:\n          ansible_host: 10.77.0.250\n"
    broken = {
        refused.name: {"ansible_ssh_private_key_file": str(stranger)},
        nopython.name: {"ansible_python_interpreter": "/nonexistent/python3"},
    }
    fleet.inventory.write_text(_inventory(fleet.bed, fleet.key, extra, broken))
    code, third = await trio.to_thread.run_sync(lambda: fleet.install("--accept-new"))
    assert code == 1
    assert third[changed.name]["outcome"] == "failed"
    assert third[changed.name]["reason"] == "host key changed"
    assert "HOST KEY CHANGED" in third[changed.name]["detail"]
    assert third["ghost1"]["reason"] == "unreachable", third["ghost1"]
    assert third[refused.name]["reason"] == "auth refused", third[refused.name]
    assert third[nopython.name]["reason"] == "no python3", third[nopython.name]
    assert third[good.name]["outcome"] == "unchanged", third[good.name]
    # --accept-new never overwrites a recorded key: the changed one is still refused, the
    # recorded line is still the old one
    assert fleet.known_hosts.read_text().count(changed.ip + " ") == 1

    code, status = await trio.to_thread.run_sync(fleet.fleet, "status", "--limit", "web")
    assert code == 1 and status[changed.name]["reason"] == "host key changed"
    s = status[good.name]
    assert (s["reachable"], s["running"], s["connected"]) == (True, True, True), s
    assert s["version"].startswith("0.1.0-")
    # the host whose python is gone still runs its daemon: the seeder sees it connected
    assert status[nopython.name]["connected"] is True


async def test_uninstall_then_reinstall(fleet: Fleet) -> None:
    one = fleet.bed.peers[0]
    code, first = await trio.to_thread.run_sync(lambda: fleet.install("--limit", one.name))
    assert code == 0 and list(first) == [one.name], first
    data = one.workdir / "var" / "shoal-peer"
    assert (data / "state.db").exists()
    code, gone = await trio.to_thread.run_sync(
        lambda: fleet.fleet("uninstall", "--limit", one.name)
    )
    assert code == 0, gone
    assert "removed daemon" in gone[one.name]["changes"]
    assert not (one.workdir / "opt" / "shoal").exists()
    assert not (one.workdir / "etc" / "peer.yml").exists()
    assert (data / "state.db").exists()  # the data dir stays without --purge
    # the host left the fleet: its identity is gone and its certificate revoked
    assert "removed identity" in gone[one.name]["changes"] and not (data / "identity").exists()
    assert gone[one.name]["revocation"] == "revoked" and len(gone[one.name]["revoked"]) == 1
    with trio.fail_after(30):
        while fleet.hosts()[one.name]["connected"]:
            await trio.sleep(0.3)
    code, again = await trio.to_thread.run_sync(
        lambda: fleet.fleet("uninstall", "--limit", one.name)
    )
    assert code == 0 and again[one.name]["outcome"] == "unchanged"
    assert again[one.name]["revocation"] == "already revoked"
    code, status = await trio.to_thread.run_sync(fleet.fleet, "status", "--limit", one.name)
    assert status[one.name]["version"] is None and status[one.name]["running"] is False
    # installed again, it joins afresh under its name (the old certificate stays revoked)
    code, back = await trio.to_thread.run_sync(lambda: fleet.install("--limit", one.name))
    assert code == 0, _problems(back)
    assert "enrolled" in back[one.name]["changes"]
    assert fleet.hosts()[one.name]["connected"]


async def test_a_daemon_that_cannot_start_is_reported_with_its_log(fleet: Fleet) -> None:
    bad = fleet.bed.peers[2]
    fleet.inventory.write_text(
        _inventory(fleet.bed, fleet.key, host_vars={bad.name: {"shoal_bind": "10.99.99.99"}})
    )
    code, out = await trio.to_thread.run_sync(fleet.install, "--limit", bad.name, "--wait", "10")
    assert code == 1
    assert out[bad.name]["reason"] == "service failed to start", out[bad.name]
    assert out[bad.name]["step"] == "wait connected"
    assert "cannot listen for peers on 10.99.99.99" in out[bad.name]["detail"]
