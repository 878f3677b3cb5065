"""The baseline users have today: the seeder pushes the file to every host over SFTP at once.

Each receiving host runs a real OpenSSH `sshd` in its namespace, on its namespace address, with a
throw-away configuration (own host key, one authorized key for root generated per run, no PAM,
foreground, logs to a file). The fan-out itself (paramiko, one thread per host) runs inside the
seeder's namespace as `python -m bench.sftp_fanout`, because only there are the hosts reachable.

Why a real sshd and not paramiko on both ends: the receiving side should cost what it costs in
production (OpenSSH's crypto and sftp-server), so the baseline is not a straw man.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.bound import percentiles
from bench.cleanup import killpg
from bench.netns import Host, Testbed

SSHD = Path("/usr/sbin/sshd")
REPO = Path(__file__).resolve().parents[1]
_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def sshd_available(install: bool = False, timeout: float = 600.0) -> str | None:
    """Return None if OpenSSH's sshd and ssh-keygen are usable, else why not.

    With `install=True` (root only) runs `apt-get install -y openssh-server` first, and
    `apt-get update` + retry if that fails. The package's service is not started by this (the
    benchmark starts its own sshd per namespace); on a Debian box with systemd the package may
    start one on the real network, so prefer a box where it is already installed.
    """
    if SSHD.exists() and shutil.which("ssh-keygen"):
        return None
    if not install:
        return f"{SSHD} not found (Debian package openssh-server)"
    if os.geteuid() != 0:
        return f"{SSHD} not found and installing it needs root"
    apt = ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"]
    for cmd in (apt, ["apt-get", "update"], apt):
        try:
            proc = subprocess.run(
                cmd, env=_APT_ENV, capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(cmd)} failed: {exc}"
        if cmd is apt and proc.returncode == 0:
            break
    if SSHD.exists() and shutil.which("ssh-keygen"):
        return None
    return f"apt-get could not install openssh-server: {proc.stderr.strip()[-500:]}"


def _keygen(path: Path) -> None:
    """Generate an unencrypted Ed25519 key pair at `path` and `path`.pub."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "shoal-bench", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _sshd_config(host: Host, d: Path, port: int, authorized: Path) -> str:
    """An sshd_config that accepts exactly our key for root, on the namespace address only."""
    return "\n".join(
        [
            f"ListenAddress {host.ip}:{port}",
            f"HostKey {d / 'host_key'}",
            f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",  # the temp dir's modes are not sshd's business here
            "UseDNS no",
            "MaxStartups 1000",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "LogLevel INFO",
            "",
        ]
    )


@contextlib.contextmanager
def sshd_fleet(
    bed: Testbed,
    hosts: Sequence[Host],
    client_pub: Path,
    port: int = 22,
    ready_timeout: float = 20.0,
) -> Iterator[dict[str, Path]]:
    """Run one sshd per host (inside its namespace) for the duration of the block.

    Yields {host name: path of that sshd's public host key}. sshd writes its PidFile only
    after its listening socket is bound, so the file's appearance means "ready".
    """
    reason = sshd_available()
    if reason:
        raise RuntimeError(reason)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    procs: list[subprocess.Popen[Any]] = []
    keys: dict[str, Path] = {}
    try:
        for h in hosts:
            d = h.workdir / "sshd"
            d.mkdir(exist_ok=True)
            _keygen(d / "host_key")
            shutil.copy(client_pub, d / "authorized_keys")
            cfg = d / "sshd_config"
            cfg.write_text(_sshd_config(h, d, port, d / "authorized_keys"))
            h.run([str(SSHD), "-t", "-f", str(cfg)], timeout=30)  # config errors fail fast
            with open(d / "sshd.log", "wb") as log:
                procs.append(
                    h.popen(
                        [str(SSHD), "-D", "-e", "-f", str(cfg)],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                    )
                )
            keys[h.name] = d / "host_key.pub"
        deadline = time.monotonic() + ready_timeout
        for h, p in zip(hosts, procs, strict=True):
            pidfile = h.workdir / "sshd" / "sshd.pid"
            while not pidfile.exists():
                if p.poll() is not None or time.monotonic() > deadline:
                    log_tail = (h.workdir / "sshd" / "sshd.log").read_text()[-1000:]
                    raise RuntimeError(f"sshd on {h.name} did not start: {log_tail}")
                time.sleep(0.05)
        yield keys
    finally:
        for p in procs:  # the Testbed would kill them on close; stop them now all the same
            killpg(p, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                killpg(p, signal.SIGKILL)
                p.wait(timeout=10)


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def run_sftp_baseline(
    testbed: Testbed,
    payload: Path,
    *,
    hosts: Sequence[Host] | None = None,
    port: int = 22,
    timeout: float = 1800.0,
    verify: bool = True,
) -> dict[str, Any]:
    """Push `payload` from the seeder to every host (default: all but the seeder) at once.

    Returns {"method": "sftp", "size_bytes", "hosts": {name: seconds}, "connect": {name:
    seconds}, "p50", "p99", "max", "wall"}. Times count from the common start. Raises
    RuntimeError if any host failed or (with `verify`) received different bytes: a baseline
    with hosts missing would look faster than it is.
    """
    targets = list(hosts if hosts is not None else testbed.peers)
    payload = payload.resolve()
    work = testbed.seeder.workdir / "sftp-client"
    work.mkdir(exist_ok=True)
    client_key = work / "id_ed25519"
    if not client_key.exists():
        _keygen(client_key)
    with sshd_fleet(testbed, targets, client_key.with_suffix(".pub"), port) as host_keys:
        spec = {
            "payload": str(payload),
            "key": str(client_key),
            "user": "root",
            "timeout": timeout,
            "targets": [
                {
                    "name": h.name,
                    "ip": h.ip,
                    "port": port,
                    "host_key": str(host_keys[h.name]),
                    "remote_path": str(h.workdir / "sftp" / payload.name),
                }
                for h in targets
            ],
        }
        for h in targets:
            (h.workdir / "sftp").mkdir(exist_ok=True)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        proc = testbed.seeder.run(
            [sys.executable, "-m", "bench.sftp_fanout", str(spec_path)],
            timeout=timeout + 60,
            check=False,
            cwd=REPO,
        )
    try:
        out = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(
            f"sftp fan-out crashed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        ) from exc
    failed = {n: r["error"] for n, r in out["hosts"].items() if not r["ok"]}
    if verify and not failed:
        want = _sha256(payload)
        failed = {
            h.name: "content differs"
            for h in targets
            if _sha256(h.workdir / "sftp" / payload.name) != want
        }
    if failed:
        raise RuntimeError(f"sftp baseline failed on {len(failed)} host(s): {failed}")
    times = {n: float(r["seconds"]) for n, r in out["hosts"].items()}
    return {
        "method": "sftp",
        "size_bytes": payload.stat().st_size,
        "hosts": times,
        "connect": {n: float(r["connect_s"]) for n, r in out["hosts"].items()},
        **percentiles(list(times.values())),
        "wall": float(out["wall"]),
    }
