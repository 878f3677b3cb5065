"""Where an installed peer lives: one virtualenv per shoal version under a prefix.

```
PREFIX/versions/<id>/             a virtualenv of one wheel set; <id> = <version>-<digest>,
PREFIX/versions/<id>/INSTALLED    written last (common/install_layout.py, as shoal fleet does)
PREFIX/current -> versions/<id>   the version that runs, switched atomically
PREFIX/bin/shoal-peer             the launcher (peer/launcher.py): runs current, rolls back
PREFIX/upgrade*.json              an upgrade in flight (see peer/launcher.py)
```

A new version is installed from a release's wheels with ``pip --no-index`` (servers often reach
no package index), checked by running its own ``shoal-peer version``, and only then switched to.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from common.errors import ConfigError, ShoalError
from common.install_layout import INSTALLED, check_version
from peer import launcher

INSTALL_TIMEOUT = 900.0
CHECK_TIMEOUT = 60.0


class UpgradeError(ShoalError):
    """An upgrade step failed on this host (the message says what and why)."""


def running_version() -> str:
    """The version of shoal this interpreter runs."""
    try:
        return importlib.metadata.version("shoal")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def detect_prefix() -> Path | None:
    """The prefix this interpreter was installed in (``PREFIX/versions/<id>``), if it was."""
    here = Path(sys.prefix)
    if here.parent.name == "versions" and (here.parent.parent / "current").is_symlink():
        return here.parent.parent
    return None


def running_install_id() -> str | None:
    """The name of the version directory this interpreter runs from, if it is one."""
    here = Path(sys.prefix)
    return here.name if here.parent.name == "versions" else None


@dataclass(frozen=True)
class Prefix:
    root: Path

    def version_dir(self, install_id: str) -> Path:
        try:
            return self.root / "versions" / check_version(install_id)
        except ConfigError as exc:
            raise UpgradeError(str(exc)) from None

    @property
    def launcher(self) -> Path:
        return self.root / "bin" / "shoal-peer"

    def current(self) -> str | None:
        return launcher.current_version(self.root)

    def switch(self, install_id: str) -> None:
        if not self.installed(install_id):
            raise UpgradeError(f"{self.version_dir(install_id)} is not (completely) installed")
        launcher.switch_current(self.root, install_id)

    def installed(self, install_id: str) -> bool:
        return (self.version_dir(install_id) / INSTALLED).is_file()

    def check_layout(self) -> None:
        if not (self.root / "versions").is_dir():
            raise UpgradeError(
                f"{self.root} is not a shoal install prefix (no versions/ directory): "
                "install the peer with `shoal fleet install` or start it with --prefix"
            )

    def install_launcher(self) -> bool:
        """Write ``PREFIX/bin/shoal-peer`` (the launcher) if it is missing or differs; whether
        it changed. Run by the base interpreter, isolated: it belongs to no version."""
        base = getattr(sys, "_base_executable", sys.executable)
        text = f"#!{base} -I\n" + Path(launcher.__file__).read_text(encoding="utf-8")
        target = self.launcher
        try:
            if target.read_text(encoding="utf-8") == text:
                return False
        except OSError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o755)
        os.replace(tmp, target)
        return True

    async def install(self, install_id: str, version: str, wheels: Path, marker: str) -> str:
        """Install shoal ``version`` from the ``wheels`` directory into its own virtualenv,
        ``versions/<install_id>``; ``marker`` is the INSTALLED file's text, written last."""
        target = self.version_dir(install_id)
        if self.installed(install_id):
            return f"shoal {version} is already installed in {target}"
        await trio.to_thread.run_sync(_prepare, wheels, target)
        base = getattr(sys, "_base_executable", sys.executable)
        venv = [base, "-m", "venv"]
        if _system_site_packages():
            venv.append("--system-site-packages")
        try:
            await _run([*venv, str(target)], "creating the virtualenv")
            pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--no-index"]
            pip += ["--no-cache-dir", "--disable-pip-version-check", "-q"]
            await _run([*pip, "--find-links", str(wheels), f"shoal=={version}"], "pip install")
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(lambda: shutil.rmtree(target, ignore_errors=True))
            raise
        (target / INSTALLED).write_text(marker)
        return f"shoal {version} installed in {target}"

    async def check(self, install_id: str, version: str) -> str:
        """Run the new version's own ``shoal-peer version``: it must import and say ``version``."""
        program = self.version_dir(install_id) / "bin" / "shoal-peer"
        out = await _run([str(program), "version"], f"{program} version", limit=CHECK_TIMEOUT)
        said = out.strip().splitlines()[-1] if out.strip() else ""
        if said != version:
            raise UpgradeError(f"{program} version said {said!r}, expected {version!r}")
        return f"{program} runs and says {version}"


def _system_site_packages() -> bool:
    """Whether the running virtualenv sees the system's site-packages (the new one will too)."""
    try:
        cfg = (Path(sys.prefix) / "pyvenv.cfg").read_text()
    except OSError:
        return False
    return bool(re.search(r"^include-system-site-packages\s*=\s*true\s*$", cfg, re.M | re.I))


def _prepare(wheels: Path, target: Path) -> None:
    if not any(wheels.glob("*.whl")):
        raise UpgradeError(f"the release holds no wheels ({wheels} has none)")
    shutil.rmtree(target, ignore_errors=True)  # a half-installed earlier attempt
    target.parent.mkdir(parents=True, exist_ok=True)


async def _run(cmd: list[str], what: str, limit: float = INSTALL_TIMEOUT) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.pop(launcher.LAUNCHED, None)
    try:
        with trio.fail_after(limit):
            proc = await trio.run_process(
                cmd, capture_stdout=True, capture_stderr=True, check=False, env=env
            )
    except trio.TooSlowError:
        raise UpgradeError(f"{what} did not finish within {limit:.0f}s") from None
    except OSError as exc:
        raise UpgradeError(f"{what}: cannot run {cmd[0]}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        text = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        tail = " | ".join(text[-5:]) or "no output"
        raise UpgradeError(f"{what} failed (exit {proc.returncode}): {tail}")
    return bytes(proc.stdout).decode(errors="replace")
