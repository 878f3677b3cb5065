"""The self-contained bundle ``shoal fleet install`` uploads: a wheelhouse of the running shoal.

Servers often cannot reach a package index, so a host gets one tar of wheels — shoal itself
(rebuilt from the code this process runs, whether it is a source tree or an installed wheel) and
every dependency, downloaded as binary wheels for *the host's* Python version and platform — and
installs it with ``pip install --no-index --find-links``. Bundles are cached under the seeder's
data dir, keyed by shoal's version, a digest of its code and the target platform; the wheels
are built deterministically (``SOURCE_DATE_EPOCH``), so the same code gives the same digest and
an unchanged host stays unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from common.errors import BuildError
from seeder.entry import SEEDER_ONLY

DIST = "shoal"
PACKAGES = ("common", "seeder", "peer")  # the product's top-level packages
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip can hold
PIP_TIMEOUT = 900.0


@dataclass(frozen=True)
class Target:
    """A host's interpreter as probed over SSH: what wheels it can install."""

    python: str  # "3.11"
    machine: str  # "x86_64", "aarch64"
    glibc: str | None  # "2.36"; None for a non-glibc (e.g. musl) system

    @property
    def key(self) -> str:
        libc = f"glibc{self.glibc}" if self.glibc else "nolibc"
        return f"cp{self.python.replace('.', '')}-{self.machine}-{libc}"

    def platforms(self) -> list[str]:
        """pip ``--platform`` tags this host accepts: manylinux up to its glibc, plus aliases."""
        if self.glibc is None:
            raise BuildError(
                f"no binary wheels for a {self.machine} host without glibc (musl is not supported)"
            )
        major, _, minor = self.glibc.partition(".")
        if major != "2" or not minor.isdigit():
            raise BuildError(f"glibc version {self.glibc!r} is not 2.N")
        tags = [f"manylinux_2_{m}_{self.machine}" for m in range(int(minor), 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{self.machine}" for m, name in legacy.items() if int(minor) >= m]
        return tags


@dataclass(frozen=True)
class Bundle:
    """A built wheelhouse: one tar of wheels and what is in it."""

    version: str  # shoal's package version
    target: Target
    archive: Path
    wheels: dict[str, str]  # wheel file name -> sha256

    @property
    def digest(self) -> str:
        lines = "".join(f"{name} {sha}\n" for name, sha in sorted(self.wheels.items()))
        return hashlib.sha256(lines.encode()).hexdigest()

    @property
    def install_id(self) -> str:
        """The name of the version directory on the host: same wheels, same name."""
        return f"{self.version}-{self.digest[:12]}"

    @property
    def manifest(self) -> str:
        """The INSTALLED marker's contents: one ``sha256  name`` line per wheel."""
        return "".join(f"{sha}  {name}\n" for name, sha in sorted(self.wheels.items()))

    @property
    def size(self) -> int:
        return self.archive.stat().st_size


def requirements() -> list[str]:
    """What a peer needs of the running shoal's dependencies: the peer set (no extras such as
    ``dev``, none of the seeder side's packages)."""
    dist = importlib.metadata.distribution(DIST)
    return peer_set(dist.requires or [])


def peer_set(requires: list[str]) -> list[str]:
    """The requirements of ``requires`` a peer-only host installs."""
    seeder_only = set(SEEDER_ONLY.values())
    return [
        r
        for r in requires
        if "extra ==" not in r and Requirement(r).name.lower() not in seeder_only
    ]


def build_bundle(cache: Path, target: Target) -> Bundle:
    """The bundle for ``target``: from the cache, or built now (blocking; minutes at most)."""
    version = importlib.metadata.version(DIST)
    with tempfile.TemporaryDirectory(prefix="shoal-src-") as tmp:
        src = Path(tmp) / "src"
        code = _snapshot(src, version)
        final = cache / f"{version}-{code[:12]}-{target.key}"
        if (final / "bundle.json").is_file():
            return _load(final, target)
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            wheels = work / "wheels"
            _pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(src))
            _pip(
                "download",
                "--only-binary=:all:",
                "--python-version",
                target.python,
                "--implementation",
                "cp",
                "--abi",
                f"cp{target.python.replace('.', '')}",
                *[arg for tag in target.platforms() for arg in ("--platform", tag)],
                "--dest",
                str(wheels),
                *requirements(),
            )
            _write(work, version, target, wheels)
            try:
                work.rename(final)
            except OSError:  # another build got there first: theirs is as good
                if not (final / "bundle.json").is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return _load(final, target)


def _snapshot(dest: Path, version: str) -> str:
    """Copy the running shoal's packages to ``dest`` with a pyproject; their content digest."""
    h = hashlib.sha256(version.encode())
    for name in PACKAGES:
        module = sys.modules.get(name) or __import__(name)
        root = Path(str(module.__file__)).parent
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root.parent)
            if "__pycache__" in rel.parts or path.suffix == ".pyc" or not path.is_file():
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest / rel)
            h.update(f"{rel.as_posix()}\0{path.stat().st_mode & 0o111}\0".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    (dest / "pyproject.toml").write_text(_pyproject(version))
    h.update((dest / "pyproject.toml").read_bytes())
    return h.hexdigest()


def _pyproject(version: str) -> str:
    """A pyproject for the snapshot: the same name, version, dependencies and scripts."""
    dist = importlib.metadata.distribution(DIST)
    q = json.dumps  # a JSON string of ASCII text is a TOML basic string
    scripts = "".join(
        f"{q(ep.name)} = {q(ep.value)}\n"
        for ep in sorted(dist.entry_points, key=lambda e: e.name)
        if ep.group == "console_scripts"
    )
    deps = ", ".join(q(r) for r in requirements())
    include = ", ".join(q(p) for name in PACKAGES for p in (name, f"{name}.*"))
    return (
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        f"[project]\nname = {q(DIST)}\nversion = {q(version)}\n"
        f"requires-python = {q(dist.metadata['Requires-Python'] or '>=3.11')}\n"
        f"dependencies = [{deps}]\n[project.scripts]\n{scripts}"
        f"[tool.setuptools.packages.find]\ninclude = [{include}]\n"
        '[tool.setuptools.package-data]\n"*" = ["*", "**/*"]\n'
    )


def _pip(*args: str) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PIP_NO_INPUT": "1"}
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"building the wheelhouse: pip {args[0]} failed: {exc}") from None
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-4:])
        raise BuildError(f"building the wheelhouse: pip {args[0]} failed: {tail}")


def _write(work: Path, version: str, target: Target, wheels: Path) -> None:
    """The tar (sorted, zero mtimes: same wheels, same bytes) and its bundle.json."""
    names = sorted(p.name for p in wheels.glob("*.whl"))
    if not any(n.startswith(f"{DIST}-{version}-") for n in names):
        raise BuildError(f"pip built no {DIST} {version} wheel")
    digests = {n: hashlib.sha256((wheels / n).read_bytes()).hexdigest() for n in names}
    with tarfile.open(work / "bundle.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for n in names:
            info = tar.gettarinfo(str(wheels / n), arcname=n)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o644
            with (wheels / n).open("rb") as f:
                tar.addfile(info, f)
    meta = {"version": version, "target": target.key, "wheels": digests}
    (work / "bundle.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    shutil.rmtree(wheels)


def _load(final: Path, target: Target) -> Bundle:
    meta = json.loads((final / "bundle.json").read_text())
    return Bundle(meta["version"], target, final / "bundle.tar", dict(meta["wheels"]))
