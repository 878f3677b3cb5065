"""What ``shoal fleet`` runs *on the host*: one stdlib-only Python program, sent over SSH.

It is run as ``python3 -c SOURCE OP`` with a JSON request line (and for ``enroll`` the join
token) on stdin, so nothing needs to be installed first and no secret shows in ``ps``. It prints
one JSON object: ``{"ok": true, ...}`` or ``{"ok": false, "reason": ..., "detail": ...}``.

Operations: ``probe`` (the host's interpreter, disk, init system and what of shoal is there),
``install`` (a wheelhouse into ``PREFIX/versions/<id>``, then ``current`` switched), ``configure``
(the launcher ``PREFIX/bin/shoal-peer``, the config file and the unit, each written only if it
differs), ``enroll`` (``shoal-peer join``), ``start``
(the service, restarted only when asked), ``uninstall``. Every write is a temp file + rename;
a version directory counts only once its INSTALLED marker is written, so an interrupted run is
repeated, never half-used.

This module must import nothing outside the standard library (it runs before shoal exists on
the host) and must run on the oldest Python shoal supports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from typing import Any

Req = dict[str, Any]

KEEP_VERSIONS = 3  # current, the previous one (rollback), one more


def _sha(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _free(path: str) -> int:
    """Free bytes on the file system that ``path`` is (or would be) on."""
    while not os.path.exists(path):
        path = os.path.dirname(path) or "/"
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _run(
    argv: list[str], timeout: float = 600, env: dict[str, str] | None = None
) -> tuple[int, str]:
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        env=env,
        text=True,
    )
    return proc.returncode, proc.stdout


def _systemd() -> bool:
    """True when systemd is the init system (what sd_booted() checks) and systemctl exists."""
    return os.path.isdir("/run/systemd/system") and shutil.which("systemctl") is not None


def _route_ip(host: str, port: int) -> str | None:
    """The local address this host uses to reach the seeder (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return str(s.getsockname()[0])
    except OSError:
        return None


def _pid_alive(pidfile: str) -> bool:
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"supervise" in f.read()
    except (OSError, ValueError):
        return False


def _service_running(req: Req) -> bool:
    if req["service"] == "systemd":
        code, _ = _run(["systemctl", "is-active", "--quiet", req["unit_name"]], timeout=30)
        return code == 0
    return _pid_alive(req["pidfile"])


def probe(req: Req) -> Req:
    prefix = req["prefix"]
    current: str | None = None
    with contextlib.suppress(OSError):
        current = os.path.basename(os.readlink(os.path.join(prefix, "current")))
    libc, libc_version = platform.libc_ver()
    try:
        import ensurepip  # noqa: F401
        import venv  # noqa: F401

        has_venv = True
    except ImportError:
        has_venv = False
    service = req.get("service") or "auto"
    if service == "auto":
        service = "systemd" if _systemd() else "none"
    req = dict(req, service=service)
    marker = os.path.join(prefix, "versions", current, "INSTALLED") if current else None
    return {
        "ok": True,
        "python": "{}.{}".format(*sys.version_info[:2]),
        "python_full": platform.python_version(),
        "machine": platform.machine(),
        "glibc": libc_version if libc == "glibc" else None,
        "venv": has_venv,
        "euid": os.geteuid(),
        "systemd": _systemd(),
        "service": service,
        "free_prefix": _free(prefix),
        "free_data": _free(req["data_dir"]),
        "free_tmp": _free(tempfile.gettempdir()),
        "current": current,
        "installed": _read(marker) if marker else None,
        "config_sha": _sha(req["config"]),
        "unit_sha": _sha(req["unit"]) if service == "systemd" else None,
        "enrolled": os.path.isfile(os.path.join(req["data_dir"], "identity", "host.crt")),
        "running": _service_running(req),
        "route_ip": _route_ip(req["seeder_host"], req["seeder_port"]),
        "hostname": socket.gethostname(),
    }


def _atomic_write(path: str, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` unless it is already there; True if it changed."""
    if _read(path) == text:
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".shoal-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def _switch(prefix: str, version: str) -> None:
    tmp = os.path.join(prefix, ".current.new")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join("versions", version), tmp)
    os.replace(tmp, os.path.join(prefix, "current"))


def install(req: Req) -> Req:
    prefix, version, bundle = req["prefix"], req["version"], req["bundle"]
    versions = os.path.join(prefix, "versions")
    target = os.path.join(versions, version)
    marker = os.path.join(target, "INSTALLED")
    if _read(marker) != req["manifest"]:
        if os.path.exists(target):  # an interrupted or different install: start it over
            shutil.rmtree(target)
        os.makedirs(versions, exist_ok=True)
        wheels = tempfile.mkdtemp(prefix=".wheels-", dir=prefix)
        try:
            with tarfile.open(bundle) as tar:
                for member in tar.getmembers():
                    if not member.isfile() or "/" in member.name or member.name.startswith("."):
                        return _fail("install", f"bundle holds an unexpected entry {member.name!r}")
                    tar.extract(member, wheels)
            for name, want in _manifest(req["manifest"]).items():
                if _sha(os.path.join(wheels, name)) != want:
                    return _fail("install", f"wheel {name} does not match its hash")
            code, out = _run([sys.executable, "-m", "venv", target])
            if code != 0:
                return _fail("install", "python3 -m venv failed: " + out[-500:])
            pip = [os.path.join(target, "bin", "python"), "-m", "pip"]
            code, out = _run(
                [
                    *pip,
                    "install",
                    "--no-index",
                    "--find-links",
                    wheels,
                    "--disable-pip-version-check",
                    "-q",
                    "{}=={}".format(req["dist"], req["dist_version"]),
                ]
            )
            if code != 0:
                shutil.rmtree(target, ignore_errors=True)
                return _fail("install", "pip install --no-index failed: " + out[-800:])
            _atomic_write(marker, req["manifest"])
        finally:
            shutil.rmtree(wheels, ignore_errors=True)
    changed = os.path.basename(_readlink(os.path.join(prefix, "current")) or "") != version
    if changed:
        _switch(prefix, version)
    _prune(versions, version, _readlink(os.path.join(prefix, "current")))
    _remove(bundle)
    return {"ok": True, "changed": changed}


def _manifest(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        sha, _, name = line.partition("  ")
        out[name] = sha
    return out


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _prune(versions: str, keep: str, current: str | None) -> None:
    """Remove the oldest versions beyond KEEP_VERSIONS (never the current or the new one)."""
    names = sorted(os.listdir(versions), key=lambda n: os.stat(os.path.join(versions, n)).st_mtime)
    spare = [n for n in names if n not in (keep, os.path.basename(current or ""))]
    for name in spare[: max(0, len(names) - KEEP_VERSIONS)]:
        shutil.rmtree(os.path.join(versions, name), ignore_errors=True)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass


# Run by the current version's interpreter: its own peer.prefix writes the launcher, the same
# code (and so the same bytes) an upgrade of the peer writes it with.
_LAUNCHER = (
    "import sys; from pathlib import Path; from peer.prefix import Prefix; "
    "print(Prefix(Path(sys.argv[1])).install_launcher())"
)


def _install_launcher(prefix: str) -> Req:
    """Write ``PREFIX/bin/shoal-peer``, the launcher the unit runs (unless it is already there)."""
    python = os.path.join(prefix, "current", "bin", "python")
    if not os.path.exists(python):
        return _fail("install", f"{python} does not exist: no version of shoal is current")
    code, out = _run([python, "-I", "-c", _LAUNCHER, prefix], timeout=120)
    said = out.strip().splitlines()[-1:]
    if code != 0 or said not in (["True"], ["False"]):
        return _fail("install", "installing the launcher failed: " + out.strip()[-500:])
    return {"ok": True, "changed": said == ["True"]}


def configure(req: Req) -> Req:
    changed: list[str] = []
    launcher = _install_launcher(req["prefix"])  # first: before the unit that runs it
    if not launcher["ok"]:
        return launcher
    if launcher["changed"]:
        changed.append("launcher")
    if _atomic_write(req["config"], req["config_text"]):
        changed.append("config")
    if req["service"] == "systemd" and _atomic_write(req["unit"], req["unit_text"]):
        changed.append("unit")
        code, out = _run(["systemctl", "daemon-reload"], timeout=60)
        if code != 0:
            return _fail("service", "systemctl daemon-reload failed: " + out[-300:])
    os.makedirs(req["data_dir"], exist_ok=True)
    return {"ok": True, "changed": changed}


def enroll(req: Req, token: str) -> Req:
    if os.path.isfile(os.path.join(req["data_dir"], "identity", "host.crt")):
        return {"ok": True, "changed": False}
    env = dict(os.environ, SHOAL_JOIN_TOKEN=token)
    argv = [req["program"], "join", "--seeder", req["seeder"], "--data-dir", req["data_dir"]]
    argv += ["--name", req["name"], "--labels", req["labels"]]
    code, out = _run(argv, timeout=120, env=env)
    if code != 0:
        return _fail("enroll", out.strip()[-500:])
    return {"ok": True, "changed": True}


def start(req: Req) -> Req:
    restart = req["restart"]
    if req["service"] == "systemd":
        unit = req["unit_name"]
        code, out = _run(["systemctl", "enable", unit], timeout=60)
        if code == 0:
            verb = "restart" if restart else "start"
            code, out = _run(["systemctl", verb, unit], timeout=120)
        if code != 0:
            _, status = _run(["systemctl", "status", "--no-pager", "-n", "5", unit], timeout=30)
            return _fail("service", (out + status).strip()[-800:])
        return {"ok": True, "changed": restart or not _service_running(req)}
    ctl = [req["program"]]
    pid = ["--pidfile", req["pidfile"]]
    was = _pid_alive(req["pidfile"])
    if restart and was:
        code, out = _run([*ctl, "stop", *pid], timeout=90)
        if code != 0:
            return _fail("service", "shoal-peer stop failed: " + out[-500:])
    code, out = _run(
        [*ctl, "start", "--config", req["config"], "--log", req["logfile"], *pid], timeout=60
    )
    if code != 0:
        return _fail("service", out.strip()[-800:])
    return {"ok": True, "changed": restart or not was}


def log_tail(req: Req) -> Req:
    text = _read(req["logfile"]) or ""
    return {"ok": True, "tail": text.splitlines()[-15:]}


def uninstall(req: Req) -> Req:
    removed: list[str] = []
    if req["service"] == "systemd" and os.path.exists(req["unit"]):
        _run(["systemctl", "disable", "--now", req["unit_name"]], timeout=120)
        os.unlink(req["unit"])
        _run(["systemctl", "daemon-reload"], timeout=60)
        removed.append("unit")
    elif _pid_alive(req["pidfile"]):
        program = os.path.join(req["prefix"], "current", "bin", "shoal-peer")
        code, out = _run([program, "stop", "--pidfile", req["pidfile"]], timeout=90)
        if code != 0:
            return _fail("service", "shoal-peer stop failed: " + out[-500:])
        removed.append("daemon")
    for what, path in (("config", req["config"]), ("prefix", req["prefix"])):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
            removed.append(what)
        elif os.path.lexists(path):
            os.unlink(path)
            removed.append(what)
    identity = os.path.join(req["data_dir"], "identity")
    if req["purge"] and os.path.isdir(req["data_dir"]):
        shutil.rmtree(req["data_dir"])
        removed.append("data")
    elif req.get("forget_identity") and os.path.isdir(identity):
        shutil.rmtree(identity)  # its certificate is revoked next: a reinstall joins afresh
        removed.append("identity")
    return {"ok": True, "changed": bool(removed), "removed": removed}


def _fail(reason: str, detail: str) -> Req:
    return {"ok": False, "reason": reason, "detail": detail}


OPS: dict[str, Any] = {
    "probe": probe,
    "install": install,
    "configure": configure,
    "start": start,
    "log_tail": log_tail,
    "uninstall": uninstall,
}


def main() -> None:
    op = sys.argv[1]
    req = json.loads(sys.stdin.readline())
    try:
        result = enroll(req, sys.stdin.readline().strip()) if op == "enroll" else OPS[op](req)
    except OSError as exc:
        reason = "disk full" if exc.errno in (28, 122) else "error"  # ENOSPC, EDQUOT
        result = _fail(reason, f"{exc.filename or op}: {exc.strerror}")
    except subprocess.TimeoutExpired as exc:
        result = _fail("timeout", f"{exc.cmd[0]} timed out after {exc.timeout}s")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
