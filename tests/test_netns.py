"""The namespace testbed and the SFTP baseline, for real (root + Linux namespaces needed).

No timed assertions: shaping is checked by reading back the tc configuration, plus one loose
upper bound (a shaped link can never carry much more than its rate, however loaded the box).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.netns import Host, Testbed, netns_available, slow_host_rates
from bench.sftp import run_sftp_baseline, sshd_available
from bench.tcpcheck import measure_mbit

# One worker starts the testbed once (a module fixture) and runs every test on it.
pytestmark = [pytest.mark.netns, pytest.mark.xdist_group("netns")]
REPO = Path(__file__).resolve().parents[1]

_ECHO_SERVER = (
    "import socket,sys; s=socket.create_server((sys.argv[1], 7000)); s.settimeout(20);"
    "print('ready', flush=True); c,_=s.accept(); c.settimeout(20); c.sendall(c.recv(64)[::-1])"
)
_ECHO_CLIENT = (
    "import socket,sys; c=socket.create_connection((sys.argv[1], 7000), timeout=10);"
    "c.sendall(b'hello'); print(c.recv(64).decode())"
)


def _ours(prefix: str) -> tuple[str, str]:
    """Lines of `ip netns list` and `ip link` (root namespace) that mention `prefix`."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    link = subprocess.run(["ip", "link"], capture_output=True, text=True, timeout=10)

    def pick(out: str) -> str:
        return "\n".join(ln for ln in out.splitlines() if prefix in ln)

    return pick(ns.stdout), pick(link.stdout)


def _alive(pid: int) -> bool:
    """True if `pid` runs (a zombie waiting for its new parent to reap it counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture(scope="module")
def netns_ok() -> None:
    reason = netns_available()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def bed(netns_ok: None) -> Iterator[Testbed]:
    with Testbed(3, 20.0, host_rates={3: (5.0, 10.0)}) as tb:
        yield tb
    assert _ours(tb.prefix) == ("", "")


def _echo(src: Host, dst: Host) -> str:
    srv = dst.popen([sys.executable, "-c", _ECHO_SERVER, dst.ip], stdout=subprocess.PIPE, text=True)
    assert srv.stdout is not None
    assert srv.stdout.readline().strip() == "ready"
    out = src.run([sys.executable, "-c", _ECHO_CLIENT, dst.ip], timeout=30).stdout.strip()
    srv.wait(timeout=30)
    return out


def test_hosts_reach_each_other_and_nothing_else(bed: Testbed) -> None:
    assert [h.name for h in bed.hosts] == ["seeder", "h1", "h2", "h3"]
    assert len({h.ip for h in bed.hosts}) == 4
    for src, dst in [(0, 1), (1, 2), (2, 3), (3, 0)]:
        assert _echo(bed.hosts[src], bed.hosts[dst]) == "olleh"
    for h in bed.hosts:
        routes = h.run(["ip", "route", "show"]).stdout
        assert "default" not in routes  # no way out of the emulated switch
        links = h.run(["ip", "-o", "link", "show"]).stdout.splitlines()
        assert [ln.split(":")[1].strip().split("@")[0] for ln in links] == ["lo", "eth0"]


def test_shaping_is_installed_as_configured(bed: Testbed) -> None:
    for h in bed.hosts[:3]:
        up, down = bed.tc_show(h)
        for side in (up, down):
            assert "qdisc htb 1: root" in side
            assert "rate 20Mbit ceil 20Mbit" in side
            assert "bfifo" in side
    up, down = bed.tc_show(bed.hosts[3])
    assert "rate 5Mbit" in up and "rate 10Mbit" in down
    assert (bed.hosts[3].up_mbit, bed.hosts[3].down_mbit) == (5.0, 10.0)


def test_shaped_link_is_not_exceeded(bed: Testbed) -> None:
    # Loose, one-sided: the configured rate is a ceiling that load cannot raise.
    mbit = measure_mbit(bed, bed.hosts[1], bed.hosts[3], seconds=2.0)
    assert 0 < mbit < 10.0 * 1.2


def test_close_kills_processes_even_outside_their_group(netns_ok: None) -> None:
    tb = Testbed(1, None)
    try:
        plain = tb.hosts[1].popen(["sleep", "300"])
        tb.hosts[1].popen(["setsid", "-f", "sleep", "301"])  # leaves our process group
        deadline = time.monotonic() + 10
        pids: list[int] = []
        while len(pids) < 2 and time.monotonic() < deadline:
            out = subprocess.run(
                ["ip", "netns", "pids", tb.hosts[1].netns],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            pids = [int(p) for p in out.split()]
            time.sleep(0.05)
        assert len(pids) == 2
    finally:
        tb.close()
    assert plain.returncode is not None
    assert not [p for p in pids if _alive(p)]
    assert _ours(tb.prefix) == ("", "")
    assert not tb.workdir.exists()


_CHILD = """
import sys, time
from bench.netns import Testbed
with Testbed(2, 10.0) as tb:
    tb.hosts[1].popen(["sleep", "300"])
    print(tb.prefix, flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_still_cleans_up(netns_ok: None, sig: signal.Signals) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        prefix = child.stdout.readline().strip()
        assert prefix.startswith("shl") and _ours(prefix)[0]
        os.kill(child.pid, sig)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
    assert _ours(prefix) == ("", "")


def test_rates_and_validation(netns_ok: None) -> None:
    assert slow_host_rates(8, 0.25, 5.0) == {1: 5.0, 5: 5.0}
    assert slow_host_rates(3, 0.0, 5.0) == {}
    with pytest.raises(ValueError):
        Testbed(2, 10.0, host_rates={7: 1.0})
    with pytest.raises(ValueError):
        Testbed(2, 10.0, prefix="Bad-Prefix")


def test_sftp_baseline_delivers_identical_bytes(netns_ok: None, tmp_path: Path) -> None:
    reason = sshd_available(install=True)
    if reason:
        pytest.skip(reason)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(1 << 20))
    with Testbed(2, 100.0) as tb:
        res = run_sftp_baseline(tb, payload, timeout=120)
        for h in tb.peers:
            assert (h.workdir / "sftp" / "payload.bin").read_bytes() == payload.read_bytes()
        prefix = tb.prefix
    assert res["method"] == "sftp" and res["size_bytes"] == 1 << 20
    assert set(res["hosts"]) == {"h1", "h2"}
    assert 0 < res["p50"] <= res["max"] == max(res["hosts"].values())
    assert _ours(prefix) == ("", "")
