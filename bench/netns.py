"""An emulated fleet on one Linux box: network namespaces on a bridge, links shaped with tc.

Layout (why: the benchmark must never touch the machine's real network):

    netns <prefix>-sw          netns <prefix>-h0 (seeder)     netns <prefix>-h<i> (host i)
    ┌─────────────────────┐    ┌──────────────────────┐
    │ br0 ── <prefix>p0 ──┼────┼─ eth0 10.77.0.1/16    │    ... one veth pair per host
    │     ── <prefix>p<i> ┼──  └──────────────────────┘
    └─────────────────────┘

The bridge lives in its own "switch" namespace, not in the root namespace, so the root
namespace gets no new interface, route or bridge, its firewall (e.g. a Docker FORWARD DROP
policy or br_netfilter hooks) never sees the traffic, and no namespace has a route out: packets
can only go from one emulated host to another. Deleting the namespaces removes everything.

Shaping: a host's upload is shaped on its own eth0 (egress, inside the host namespace); its
download on the switch-side veth (egress towards the host, inside the switch namespace). Each
side is HTB (one class, rate = ceil) with a leaf FIFO sized in milliseconds of traffic, or a netem
leaf when a delay is asked for. `delay_ms` is added on each host's upload only, so it is the
one-way delay between any two hosts and the round-trip time is `2 * delay_ms`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.cleanup import (
    PREFIX_RE,
    NetnsError,
    killpg,
    netns_list,
    register,
    sh,
    sweep,
    unregister,
)

_GSO_BYTES = 65536  # veths pass GSO super-packets up to 64 KiB through the qdisc


def _new_prefix() -> str:
    """A fresh, short, unique-enough prefix: 'shl' + 6 hex digits (pid-ish + random)."""
    return f"shl{os.getpid() % 0x10000:04x}{secrets.token_hex(1)}"


def netns_available() -> str | None:
    """Return None if this box can build a Testbed, else a reason why not (for pytest.skip).

    Tries the real thing on a throw-away namespace pair: namespace, bridge, veth, HTB, bfifo.
    """
    if os.uname().sysname != "Linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (euid is not 0)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    return _probe("bfifo limit 100000", "cannot build a namespace testbed here")


def netem_available() -> str | None:
    """Return None if the kernel has netem (needed for `delay_ms > 0`), else a reason.

    Some VM kernels are built without sch_netem; shaping (HTB) still works there.
    """
    return netns_available() or _probe("netem delay 1ms", "no netem qdisc (delay)")


def _probe(leaf: str, what: str) -> str | None:
    """Build a bridge + veth + HTB class (+ `leaf` qdisc) in scratch namespaces, then drop it."""
    probe = _new_prefix()
    sw, h = f"{probe}-sw", f"{probe}-h0"
    try:
        sh(f"ip netns add {sw}".split())
        sh(f"ip netns add {h}".split())
        sh(f"ip -n {sw} link add br0 type bridge".split())
        sh(f"ip link add name {probe}p0 netns {sw} type veth peer name eth0 netns {h}".split())
        sh(f"tc -n {h} qdisc add dev eth0 root handle 1: htb default 1".split())
        sh(f"tc -n {h} class add dev eth0 parent 1: classid 1:1 htb rate 10mbit".split())
        sh(f"tc -n {h} qdisc add dev eth0 parent 1:1 handle 10: {leaf}".split())
    except NetnsError as exc:
        return f"{what}: {exc}"
    finally:
        for ns in (h, sw):
            sh(["ip", "netns", "del", ns], check=False)
    return None


def slow_host_rates(n_hosts: int, fraction: float, slow_rate_mbit: float) -> dict[int, float]:
    """Pick round(fraction * n_hosts) of hosts 1..n_hosts, spread evenly, and give them a rate.

    Deterministic so that repeated runs slow down the same hosts.
    """
    k = round(fraction * n_hosts)
    return {1 + (j * n_hosts) // k: slow_rate_mbit for j in range(k)} if k else {}


@dataclass
class Host:
    """One emulated server: a namespace with one interface `eth0` at `ip`.

    Index 0 is the seeder. `up_mbit`/`down_mbit` are the shaped rates (None = unshaped).
    `workdir` is a private scratch directory (all namespaces share the file system).
    """

    index: int
    name: str
    netns: str
    ip: str
    up_mbit: float | None
    down_mbit: float | None
    workdir: Path
    _bed: Testbed = field(repr=False)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside this host's namespace, in its own process group (session).

        The Testbed remembers the process and kills its whole group on close().
        """
        return self._bed._spawn(["ip", "netns", "exec", self.netns, *argv], **kw)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = True,
        input: str | None = None,
        **kw: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the namespace to completion (text output captured; `kw` as Popen).

        On timeout the process group is killed and TimeoutExpired is raised.
        """
        proc = self.popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            killpg(proc, signal.SIGKILL)
            proc.communicate(timeout=10)
            raise
        result = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check:
            result.check_returncode()
        return result


class Testbed:
    """N+1 shaped hosts on one emulated switch; a context manager that always cleans up.

    Host 0 is the seeder (rate `seeder_rate_mbit`, default `rate_mbit`), hosts 1..n_hosts get
    `rate_mbit` both ways unless `host_rates[i]` says otherwise: a float (both ways) or an
    (up, down) pair. `rate_mbit=None` leaves links unshaped. Addresses are taken in order from
    `subnet` (seeder first). `queue_ms` sizes each shaped queue in milliseconds of traffic.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        n_hosts: int,
        rate_mbit: float | None,
        seeder_rate_mbit: float | None = None,
        host_rates: dict[int, float | tuple[float, float]] | None = None,
        delay_ms: float = 0.0,
        prefix: str | None = None,
        subnet: str = "10.77.0.0/16",
        queue_ms: float = 50.0,
    ) -> None:
        self.prefix = prefix or _new_prefix()
        if not PREFIX_RE.match(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} must match {PREFIX_RE.pattern}")
        if n_hosts < 1:
            raise ValueError("need at least one host besides the seeder")
        net = ipaddress.ip_network(subnet)
        if net.num_addresses - 2 < n_hosts + 1:
            raise ValueError(f"subnet {subnet} too small for {n_hosts + 1} hosts")
        self.delay_ms = float(delay_ms)
        if self.delay_ms > 0 and (why := netem_available()):
            raise NetnsError(f"delay_ms={delay_ms} needs netem: {why}")
        self.queue_ms = float(queue_ms)
        self.switch_ns = f"{self.prefix}-sw"
        self.hosts: list[Host] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.RLock()
        self._closed = False
        rates: dict[int, tuple[float | None, float | None]] = {
            i: (rate_mbit, rate_mbit) for i in range(n_hosts + 1)
        }
        if seeder_rate_mbit is not None:
            rates[0] = (seeder_rate_mbit, seeder_rate_mbit)
        for i, r in (host_rates or {}).items():
            if not 0 <= i <= n_hosts:
                raise ValueError(f"host_rates names host {i}, not in 0..{n_hosts}")
            rates[i] = r if isinstance(r, tuple) else (r, r)
        if any(r is not None and r <= 0 for pair in rates.values() for r in pair):
            raise ValueError(f"rates must be positive Mbit/s (or None): {rates}")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        addrs = net.hosts()
        for i in range(n_hosts + 1):
            wd = self.workdir / f"h{i}"
            wd.mkdir()
            self.hosts.append(
                Host(
                    index=i,
                    name="seeder" if i == 0 else f"h{i}",
                    netns=f"{self.prefix}-h{i}",
                    ip=str(next(addrs)),
                    up_mbit=rates[i][0],
                    down_mbit=rates[i][1],
                    workdir=wd,
                    _bed=self,
                )
            )
        self._prefixlen = net.prefixlen
        if taken := set(self.namespaces()) & netns_list():  # never adopt (and delete) others'
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise NetnsError(f"namespaces already exist: {sorted(taken)}")
        register(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- building -------------------------------------------------------------------------

    def _build(self) -> None:
        """Create the switch, the hosts, their links, addresses and shaping.

        (Names are validated: no spaces, so commands are written as strings and split.)
        """
        sw = self.switch_ns
        sh(f"ip netns add {sw}".split())
        sh(f"ip -n {sw} link set lo up".split())
        sh(f"ip -n {sw} link add br0 type bridge stp_state 0".split())
        sh(f"ip -n {sw} link set br0 up".split())
        for h in self.hosts:
            port, ns = self.port_name(h), h.netns
            sh(f"ip netns add {ns}".split())
            # Both ends are created directly in their namespaces: no name ever appears in root.
            sh(f"ip link add name {port} netns {sw} type veth peer name eth0 netns {ns}".split())
            sh(f"ip -n {sw} link set {port} master br0".split())
            sh(f"ip -n {sw} link set {port} up".split())
            # IPv4 only: no router solicitations / MLD chatter on the emulated wire.
            ipv6_off = f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1"
            sh(ipv6_off.split(), check=False)
            sh(f"ip -n {ns} link set lo up".split())
            sh(f"ip -n {ns} addr add {h.ip}/{self._prefixlen} dev eth0".split())
            sh(f"ip -n {ns} link set eth0 up".split())
            if h.up_mbit is not None:
                self._shape(ns, "eth0", h.up_mbit, self.delay_ms)
            if h.down_mbit is not None:
                self._shape(sw, port, h.down_mbit, 0.0)

    def _shape(self, ns: str, dev: str, rate_mbit: float, delay_ms: float) -> None:
        """Install HTB at `rate_mbit` on `dev`'s egress with a FIFO (or netem delay) leaf.

        burst: at least one GSO super-packet so HTB never stalls on one, or 4 ms of traffic.
        queue: `queue_ms` of traffic plus the bytes in flight inside the delay line, so TCP
        can fill the pipe without the queue becoming the thing measured.
        """
        if rate_mbit <= 0:
            raise ValueError(f"rate must be positive, got {rate_mbit}")
        byte_rate = rate_mbit * 1e6 / 8
        burst = max(_GSO_BYTES + 1600, int(byte_rate * 0.004))
        quantum = min(200_000, max(1600, int(byte_rate / 10)))
        queue_bytes = max(2 * _GSO_BYTES, int(byte_rate * (self.queue_ms + delay_ms) / 1000))
        rate = f"{int(rate_mbit * 1e6)}bit"
        if delay_ms > 0:
            leaf = f"netem delay {delay_ms}ms limit {queue_bytes // 1500 + 1}"
        else:
            leaf = f"bfifo limit {queue_bytes}"
        tc = f"tc -n {ns}"
        sh(f"{tc} qdisc replace dev {dev} root handle 1: htb default 1".split())
        sh(
            f"{tc} class add dev {dev} parent 1: classid 1:1 htb rate {rate} ceil {rate}"
            f" burst {burst} cburst {burst} quantum {quantum}".split()
        )
        sh(f"{tc} qdisc add dev {dev} parent 1:1 handle 10: {leaf}".split())

    # -- queries --------------------------------------------------------------------------

    @property
    def seeder(self) -> Host:
        """Host 0."""
        return self.hosts[0]

    @property
    def peers(self) -> list[Host]:
        """Hosts 1..N."""
        return self.hosts[1:]

    def port_name(self, host: Host) -> str:
        """Name of the switch-side veth of `host` (inside the switch namespace)."""
        return f"{self.prefix}p{host.index}"

    def namespaces(self) -> list[str]:
        """Every namespace this testbed owns (switch last)."""
        return [h.netns for h in self.hosts] + [self.switch_ns]

    def tc_show(self, host: Host) -> tuple[str, str]:
        """`tc qdisc show` + `tc class show` text for (upload side, download side) of `host`."""
        sides = ((host.netns, "eth0"), (self.switch_ns, self.port_name(host)))
        up, down = (
            sh(["tc", "-n", ns, "qdisc", "show", "dev", dev])
            + sh(["tc", "-n", ns, "class", "show", "dev", dev])
            for ns, dev in sides
        )
        return up, down

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        """Popen in a new session (so the group can be killed) and remember it."""
        with self._lock:
            if self._closed:
                raise RuntimeError("testbed is closed")
            kw.setdefault("start_new_session", True)
            proc: subprocess.Popen[Any] = subprocess.Popen(argv, **kw)
            self._procs.append(proc)
            return proc

    def _kill_all(self, grace: float) -> None:
        """SIGTERM every group, wait up to `grace` s, SIGKILL what is left, then sweep the
        namespaces (`ip netns pids`) for anything that escaped its group (e.g. setsid)."""
        for proc in self._procs:
            killpg(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killpg(proc, signal.SIGKILL)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        sweep(self.namespaces())

    # -- teardown -------------------------------------------------------------------------

    def close(self, grace: float = 5.0) -> None:
        """Kill every process started here (by group), delete every namespace and link.

        Idempotent and safe to call again after being interrupted half-way.
        """
        with self._lock:
            self._closed = True
            try:
                self._kill_all(grace)
            finally:
                live = netns_list()
                # Deleting a host namespace deletes its eth0 and hence the veth's switch end.
                for ns in self.namespaces():
                    if ns in live:
                        sh(["ip", "netns", "del", ns], check=False)
                shutil.rmtree(self.workdir, ignore_errors=True)
                left = set(self.namespaces()) & netns_list()
                unregister(self)
                if left:
                    raise NetnsError(f"namespaces left behind: {sorted(left)}")

    def __enter__(self) -> Testbed:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
