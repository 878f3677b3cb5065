"""SSH to fleet hosts (the one module that imports paramiko; its exceptions end here).

Host keys are checked strictly against a known_hosts file: an unknown key is refused unless
``accept_new`` (trust on first use: the key is appended to the file), and a key that differs
from the recorded one is always refused, naming the host and both SHA256 fingerprints.
Authentication is by the SSH agent or a key file, never a password. Everything here blocks:
callers run it in worker threads.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from common.errors import ShoalError

CONNECT_TIMEOUT = 15.0
_known_hosts_lock = threading.Lock()  # threads of one run append to the same file


class SshError(ShoalError):
    """An SSH failure, with its reason class (``unreachable``, ``auth refused``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    port: int
    user: str
    key_file: str | None = None


@dataclass(frozen=True)
class Completed:
    exit_code: int
    stdout: str
    stderr: str


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _host_id(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class _Policy(paramiko.MissingHostKeyPolicy):
    """Unknown host keys: refused, or (``accept_new``) recorded in the known_hosts file."""

    def __init__(self, known_hosts: Path, accept_new: bool, name: str) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self.name = name

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if not self.accept_new:
            raise SshError(
                "host key unknown",
                f"{self.name}: host key {key.get_name()} {fingerprint(key)} of {hostname} is not"
                f" in {self.known_hosts} (check it, then pass --accept-new to record it)",
            )
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _known_hosts_lock:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with self.known_hosts.open("a") as f:
                f.write(line)


class Session:
    """One authenticated SSH connection to one host."""

    def __init__(self, target: Target, client: paramiko.SSHClient) -> None:
        self.target = target
        self.client = client

    def run(self, command: str, stdin: str = "", timeout: float = 600.0) -> Completed:
        """Run ``command`` through the remote shell, feed it ``stdin``, wait for it (bounded)."""
        name = self.target.name
        try:
            chan = self.client.get_transport().open_session(timeout=CONNECT_TIMEOUT)  # type: ignore[union-attr]
            chan.settimeout(1.0)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin.encode())
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if (
                    chan.exit_status_ready()
                    and not chan.recv_ready()
                    and not chan.recv_stderr_ready()
                ):
                    break
                if time.monotonic() > deadline:
                    chan.close()
                    raise SshError("timeout", f"{name}: a command ran longer than {timeout:.0f}s")
                chan.status_event.wait(0.05)
            code = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError("unreachable", f"{name}: connection lost: {exc}") from None
        return Completed(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def put(self, local: Path, remote: str) -> None:
        """Upload a file to ``remote`` (written under a temporary name, then renamed)."""
        tmp = f"{remote}.part"
        try:
            with self.client.open_sftp() as sftp:
                sftp.put(str(local), tmp, confirm=True)
                sftp.posix_rename(tmp, remote)
        except OSError as exc:
            if "No space" in str(exc) or getattr(exc, "errno", None) == 28:
                raise SshError("disk full", f"{self.target.name}: upload: {exc}") from None
            raise SshError(
                "upload failed", f"{self.target.name}: upload to {remote}: {exc}"
            ) from None
        except (paramiko.SSHException, EOFError) as exc:
            raise SshError("unreachable", f"{self.target.name}: upload: {exc}") from None

    def close(self) -> None:
        self.client.close()


def connect(
    target: Target,
    known_hosts: Path,
    *,
    accept_new: bool = False,
    timeout: float = CONNECT_TIMEOUT,
) -> Session:
    """Connect and authenticate, checking the host key; SshError with the reason class."""
    client = paramiko.SSHClient()
    name = target.name
    try:
        if known_hosts.exists():
            client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(_Policy(known_hosts, accept_new, name))
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            key_filename=target.key_file,
            allow_agent=True,
            look_for_keys=target.key_file is None,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
        )
    except SshError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise SshError(
            "host key changed",
            f"{name}: HOST KEY CHANGED for {_host_id(target.address, target.port)}: it offers"
            f" {exc.key.get_name()} {fingerprint(exc.key)}, {known_hosts} has"
            f" {fingerprint(exc.expected_key)}. Refusing to connect (someone may be"
            " intercepting; if the host was reinstalled, remove the old line from known_hosts)",
        ) from None
    except paramiko.PasswordRequiredException:
        client.close()
        raise SshError(
            "auth refused",
            f"{name}: key file {target.key_file} is encrypted; load it into ssh-agent instead",
        ) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise SshError("auth refused", f"{name}: {target.user}@{target.address}: {exc}") from None
    except TimeoutError as exc:
        client.close()
        raise SshError(
            "unreachable", f"{name}: {target.address}:{target.port}: timed out ({exc})"
        ) from None
    except (paramiko.ssh_exception.NoValidConnectionsError, OSError) as exc:
        client.close()
        raise SshError("unreachable", f"{name}: {target.address}:{target.port}: {exc}") from None
    except (paramiko.SSHException, EOFError) as exc:
        client.close()
        raise SshError("unreachable", f"{name}: SSH handshake failed: {exc}") from None
    return Session(target, client)
