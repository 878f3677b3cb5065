"""SFTP fan-out: upload one file to every host at once, one thread per host (entry point).

This is the baseline shoal replaces: what a parallel scp / Ansible `copy` does, done well.
It must run inside the seeder's network namespace (the hosts' addresses exist only there), so
`bench.sftp` starts it as `ip netns exec <seeder-ns> python -m bench.sftp_fanout SPEC.json`.

SPEC.json: {"payload": path, "key": path to private key, "user": "root", "timeout": s,
            "targets": [{"name", "ip", "port", "host_key": path to .pub, "remote_path"}]}
stdout:    one JSON object {"hosts": {name: {"ok", "seconds", "connect_s", "bytes", "error"}}}

Times are measured from one common start instant (all threads released by a barrier) and
include the SSH handshake, as an operator's fan-out would; `connect_s` says how much of it was
handshake. Tuning so the baseline is fair: large SSH window and packets, pipelined SFTP writes
(paramiko's `put`), AES-GCM/CTR ciphers first, host keys pinned (no TOFU shortcut needed).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paramiko

WINDOW = 64 * 1024 * 1024  # SSH channel window (bytes): never the limit below 5 Gbit/s x 100 ms
MAX_PACKET = 256 * 1024  # largest SSH channel packet we accept (OpenSSH's own limit)
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes128-ctr", "aes256-gcm@openssh.com", "aes256-ctr")


def _connect(ip: str, port: int, timeout: float) -> socket.socket:
    """TCP connect, retrying briefly in case sshd is still binding."""
    deadline = time.monotonic() + min(timeout, 15.0)
    while True:
        try:
            sock = socket.create_connection((ip, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def upload(
    target: dict[str, Any], payload: str, key: paramiko.PKey, user: str, timeout: float, t0: float
) -> dict[str, Any]:
    """Upload `payload` to one target; never raises, reports the error instead."""
    res: dict[str, Any] = {
        "ok": False,
        "seconds": None,
        "connect_s": None,
        "bytes": 0,
        "error": None,
    }
    transport = None
    try:
        key_type, key_b64 = Path(target["host_key"]).read_text().split()[:2]
        sock = _connect(target["ip"], int(target["port"]), timeout)
        transport = paramiko.Transport(
            sock, default_window_size=WINDOW, default_max_packet_size=MAX_PACKET
        )
        opts = transport.get_security_options()
        opts.ciphers = tuple(c for c in FAST_CIPHERS if c in opts.ciphers) + tuple(
            c for c in opts.ciphers if c not in FAST_CIPHERS
        )
        transport.start_client(timeout=timeout)
        server_key = transport.get_remote_server_key()
        if (server_key.get_name(), server_key.get_base64()) != (key_type, key_b64):
            raise paramiko.SSHException(f"host key mismatch for {target['name']}")
        transport.auth_publickey(user, key)
        sftp = paramiko.SFTPClient.from_transport(
            transport, window_size=WINDOW, max_packet_size=MAX_PACKET
        )
        if sftp is None:
            raise paramiko.SSHException("could not open the sftp subsystem")
        sftp.get_channel().settimeout(timeout)  # type: ignore[union-attr]
        res["connect_s"] = time.monotonic() - t0
        attrs = sftp.put(payload, target["remote_path"], confirm=True)  # pipelined writes
        res["seconds"] = time.monotonic() - t0
        res["bytes"] = attrs.st_size
        res["ok"] = True
        sftp.close()
    except Exception as exc:  # any failure of one host is a result, not a crash
        res["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if transport is not None:
            transport.close()
    return res


def fan_out(spec: dict[str, Any]) -> dict[str, Any]:
    """Start one thread per target, release them together, wait (bounded) for all."""
    key = paramiko.PKey.from_path(spec["key"])
    timeout = float(spec.get("timeout", 600))
    targets = spec["targets"]
    results: dict[str, dict[str, Any]] = {}
    start = threading.Barrier(len(targets) + 1)
    t0_box: list[float] = []

    def worker(target: dict[str, Any]) -> None:
        start.wait(timeout=30)
        results[target["name"]] = upload(
            target, spec["payload"], key, spec.get("user", "root"), timeout, t0_box[0]
        )

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in targets]
    for th in threads:
        th.start()
    t0_box.append(time.monotonic())
    start.wait(timeout=30)
    deadline = t0_box[0] + timeout + 30
    for th in threads:
        th.join(timeout=max(0.0, deadline - time.monotonic()))
    for t in targets:
        results.setdefault(
            t["name"],
            {"ok": False, "seconds": None, "connect_s": None, "bytes": 0, "error": "timed out"},
        )
    return {"hosts": results, "wall": time.monotonic() - t0_box[0]}


def main(argv: list[str]) -> int:
    """`python -m bench.sftp_fanout SPEC.json`: print the results as JSON on stdout."""
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = fan_out(json.loads(Path(argv[0]).read_text()))
    print(json.dumps(out), flush=True)
    return 0 if all(r["ok"] for r in out["hosts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
