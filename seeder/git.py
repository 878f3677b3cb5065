"""The seeder's git: one mirror per application, fetched before every listing and build.

The one seeder module that runs git. It only reads git's machine formats (``for-each-ref
--format`` with NUL separators, ``log -z``, ``rev-parse --disambiguate``) and never a human one.
Every git failure becomes one :class:`GitError` that names the application and never repeats a
password from a URL. Network operations use the seeder process's own credentials (its SSH key or
agent, its git credential helper, read from its global git config) and never prompt: no terminal
prompts, ``ssh -o BatchMode=yes`` unless the seeder's environment sets ``GIT_SSH_COMMAND``, its
own session (no controlling terminal), and a timeout that kills git's whole process group.
Local reads ignore global and system config, so they cannot change a release's bytes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common.errors import ShoalError
from seeder.applications import redact_url
from seeder.refs import (
    SHORT,
    Commit,
    Ref,
    RefError,
    RefTable,
    Resolved,
    resolve_ref,
    split_ancestry,
)

FETCH_TIMEOUT = 600.0  # seconds for a clone or fetch
LOCAL_TIMEOUT = 120.0  # seconds for a local read (archive, log, refs)
PINNED = ("-c", "core.autocrlf=false", "-c", "core.eol=lf", "-c", "tar.umask=0022")
# Environment variables of the seeder's own that fetching may use (credentials, ssh, proxies).
_KEEP = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "XDG_CONFIG_HOME",
    "SSH_AUTH_SOCK",
    "GIT_SSH_COMMAND",
    "GIT_SSH",
    "GIT_CONFIG_GLOBAL",  # where the seeder's credential helper may be configured
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
)
_KEEP_PREFIX = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class GitError(ShoalError):
    """Git could not do what a build or a listing of an application needed."""


@dataclass(frozen=True)
class Mirror:
    """The bare mirror of one application's remote, at ``path``."""

    app: str
    url: str
    path: Path

    # --- network -------------------------------------------------------------------------------

    def sync(self, *, timeout: float = FETCH_TIMEOUT) -> None:
        """Clone the remote on first use, else point the mirror at the app's URL and fetch
        every branch and tag (``--prune``: refs deleted upstream go away here too)."""
        if not (self.path / "HEAD").is_file():
            self._clone(timeout)
            return
        self._git("remote", "set-url", "origin", self.url, what="configure the mirror")
        self._git(
            "fetch", "--prune", "--quiet", "origin", network=True, timeout=timeout, what="fetch"
        )

    def _clone(self, timeout: float) -> None:
        """A fresh mirror, renamed into place only once complete. For a remote on the seeder's
        own disk the error does not say whether the path exists (no probing of the disk)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        try:
            try:
                _run(
                    ["clone", "--mirror", "--quiet", "--", self.url, str(tmp / "m")],
                    cwd=self.path.parent,
                    network=True,
                    timeout=timeout,
                    app=self.app,
                    what=f"clone {redact_url(self.url)}",
                )
            except GitError:
                if self.url.startswith(("/", "file:")):
                    raise GitError(
                        f"app {self.app!r}: cannot clone {self.url}: no git repository the "
                        "seeder can read is there"
                    ) from None
                raise
            shutil.rmtree(self.path, ignore_errors=True)
            (tmp / "m").rename(self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # --- reading -------------------------------------------------------------------------------

    def refs(self) -> RefTable:
        """Every branch and tag with the commit it names (author, dates, subject), tags newest
        first. Annotated tags are peeled: ``*``-fields are those of the commit they point at."""
        own = ["%(objectname)", "%(objecttype)"] + [f"%({f})" for f in _COMMIT_FIELDS]
        peeled = ["%(*objectname)", "%(*objecttype)"] + [f"%(*{f})" for f in _COMMIT_FIELDS]
        fields = ["%(refname)", "%(creatordate:unix)", *own, *peeled]
        out = self._git(
            "for-each-ref",
            "--sort=-creatordate",
            f"--format={'%00'.join(fields)}",
            "refs/heads",
            "refs/tags",
            what="list refs",
        )
        refs = []
        width = 2 + len(_COMMIT_FIELDS)
        for line in out.split(b"\n"):
            if not line:
                continue
            values = line.decode(errors="replace").split("\0")
            name, created = values[0], values[1]
            obj = values[2 : 2 + width]
            if obj[1] == "tag":  # annotated: the commit it points at
                obj = values[2 + width : 2 + 2 * width]
            if obj[1] != "commit":
                continue  # a tag of a tree or blob can't be released
            sha, _, author, email, authored, committed, subject = obj
            email = email.removeprefix("<").removesuffix(">")
            info = Commit(sha, author, email, _num(authored), _num(committed), subject)
            refs.append(Ref(name=name, commit=sha, created=_num(created), info=info))
        return RefTable(tuple(refs))

    def head_branch(self) -> str | None:
        """The remote's default branch (the mirror's HEAD), if it names one."""
        result = _run(
            ["symbolic-ref", "--quiet", "HEAD"], cwd=self.path, app=self.app, what="", check=False
        )
        name = result.stdout.decode().strip()
        return name.removeprefix("refs/heads/") if name.startswith("refs/heads/") else None

    def commits(self, rev: str, count: int) -> list[Commit]:
        """The latest ``count`` commits reachable from ``rev``, newest first."""
        out = self._git(
            "log",
            "-z",
            f"--max-count={count}",
            "--format=%H%x00%an%x00%ae%x00%at%x00%ct%x00%s",
            rev,
            "--",
            what=f"list commits of {rev}",
        )
        return _parse_commits(out)

    def commit(self, sha: str) -> Commit:
        found = self.commits(sha, 1)
        if not found:
            raise GitError(f"app {self.app!r}: commit {sha[:12]} not found")
        return found[0]

    def objects_with_prefix(self, prefix: str) -> list[str]:
        """Full shas of the commits whose id starts with ``prefix`` (at least 4 hex digits)."""
        result = _run(
            ["rev-parse", f"--disambiguate={prefix}"],
            cwd=self.path,
            app=self.app,
            what="look up a short sha",
            check=False,
        )
        shas = result.stdout.decode().split()
        if not shas:
            return []
        kinds = _run(
            ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
            cwd=self.path,
            app=self.app,
            what="look up object types",
            stdin=("\n".join(shas) + "\n").encode(),
        ).stdout.decode()
        return sorted(line.split()[0] for line in kinds.splitlines() if line.endswith(" commit"))

    def resolve(self, ref: str) -> Resolved:
        """The one commit ``ref`` names (branch, tag, full or short sha, then an optional
        ``~N``/``^N`` path); RefError otherwise."""
        table = self.refs()
        base, path = split_ancestry(ref.strip())
        shas = self.objects_with_prefix(base.lower()) if _maybe_sha(base) else []
        found = resolve_ref(self.app, base, table, shas)
        if not path:
            return found
        result = _run(
            [
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                f"{found.commit}{path}^{{commit}}",
            ],
            cwd=self.path,
            app=self.app,
            what="",
            check=False,
        )
        if result.returncode != 0:
            raise RefError(f"app {self.app!r} has no commit {ref!r} ({base} is not that deep)")
        commit = result.stdout.decode().strip()
        at = table.tags_at(commit)
        return Resolved(
            ref=ref.strip(), commit=commit, kind="commit", version=at[0] if at else commit[:SHORT]
        )

    def read_file(self, commit: str, path: str) -> bytes | None:
        """The blob at ``path`` in ``commit``, or None if there is no file there."""
        spec = f"{commit}:{path}"
        kind = _run(["cat-file", "-t", spec], cwd=self.path, app=self.app, what="", check=False)
        if kind.returncode != 0 or kind.stdout.strip() != b"blob":
            return None
        return self._git("cat-file", "blob", spec, what=f"read {path}")

    def export(self, commit: str, dest: Path) -> None:
        """The tree of ``commit`` written out under ``dest`` (a clean checkout, no .git)."""
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            tar = Path(tmp) / "tree.tar"
            self._git("archive", "--format=tar", "-o", str(tar), commit, what="export the commit")
            try:
                with tarfile.open(tar) as t:
                    t.extractall(dest, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise GitError(f"app {self.app!r}: cannot check out {commit[:12]}: {exc}") from None

    def _git(
        self,
        *args: str,
        what: str,
        network: bool = False,
        timeout: float = LOCAL_TIMEOUT,
    ) -> bytes:
        return _run(
            list(args), cwd=self.path, network=network, timeout=timeout, app=self.app, what=what
        ).stdout


_COMMIT_FIELDS = ("authorname", "authoremail", "authordate:unix", "committerdate:unix", "subject")


def _num(text: str) -> float:
    return float(text) if text.strip() else 0.0


def _maybe_sha(ref: str) -> bool:
    return 4 <= len(ref) <= 40 and all(c in "0123456789abcdefABCDEF" for c in ref)


def _parse_commits(out: bytes) -> list[Commit]:
    fields = out.split(b"\0")
    if fields and fields[-1] in (b"", b"\n"):
        fields.pop()
    commits = []
    for i in range(0, len(fields) - 5, 6):
        sha, name, email, authored, committed, subject = (f.decode() for f in fields[i : i + 6])
        commits.append(
            Commit(
                sha=sha.strip(),
                author=name,
                email=email,
                authored_at=float(authored),
                committed_at=float(committed),
                subject=subject,
            )
        )
    return commits


def _env(network: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _KEEP or k in _KEEP_PREFIX}
    # Only these transports, whatever a URL or a config asks (no ext::, fd:: or remote helpers).
    env.update(GIT_TERMINAL_PROMPT="0", GCM_INTERACTIVE="never", LC_ALL="C")
    env["GIT_ALLOW_PROTOCOL"] = "file:git:http:https:ssh"
    if network:
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    else:  # local reads: nothing but the mirror's own config decides what they give
        env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    return env


def _run(
    args: list[str],
    *,
    cwd: Path,
    app: str,
    what: str,
    network: bool = False,
    timeout: float = LOCAL_TIMEOUT,
    check: bool = True,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run git in its own session; GitError (naming the app, no password) on failure."""
    try:
        proc = subprocess.Popen(
            ["git", *PINNED, *args],
            cwd=cwd,
            env=_env(network),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise GitError("git is not installed on the seeder (not found on PATH)") from None
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise GitError(f"app {app!r}: git took more than {timeout:.0f}s to {what}") from None
    except BaseException:
        _kill_group(proc)
        raise
    _kill_group(proc)  # whatever git left behind (an ssh, a remote helper)
    if check and proc.returncode != 0:
        raise GitError(f"app {app!r}: cannot {what}: {_message(err)}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _message(stderr: bytes) -> str:
    """git's own reason, first meaningful lines, passwords removed."""
    lines = [
        line.removeprefix("fatal: ").removeprefix("error: ").strip()
        for line in stderr.decode(errors="replace").splitlines()
        if line.strip()
    ]
    return redact_url("; ".join(lines[:3])) if lines else "(git gave no reason)"
