"""``shoal fleet upgrade``: package the running shoal as a release and roll it out to the peers.

The wheelhouse is ``--wheelhouse DIR`` (a directory of wheels: shoal and every dependency a peer
needs), or else the bundle ``shoal fleet install`` would upload (seeder/wheelhouse.py: the code
this CLI runs, rebuilt as a wheel, plus its dependencies for this machine's Python and platform).
Its bytes go to the seeder (``upgrade.*`` methods, seeder/upgrades.py), which builds the release;
then it is an ordinary rollout (:func:`seeder.cli._start`): waves, budgets, watch, reports.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from common.errors import ConfigError
from seeder import rollout_cli

WithSeeder = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def add_upgrade(group: argparse.ArgumentParser, with_seeder: WithSeeder) -> argparse.ArgumentParser:
    """``fleet upgrade`` in the ``fleet`` group's parser; the caller adds ``--wait`` and
    ``--timeout`` as for ``rollout start``."""
    fleet = next(a for a in group._actions if isinstance(a, argparse._SubParsersAction))
    p = with_seeder(
        fleet.add_parser("upgrade", help="roll the running shoal version out to the peers")
    )
    p.add_argument(
        "--wheelhouse",
        type=Path,
        help="directory of wheels to ship (shoal + dependencies); default: build the bundle"
        " of the running shoal for this machine's Python and platform",
    )
    p.add_argument(
        "--cache",
        type=Path,
        help="where built bundles are kept (default: $XDG_CACHE_HOME/shoal/bundles)",
    )
    rollout_cli.add_wave_options(p)
    p.add_argument("--json", action="store_true", help="print the rollout as rollout start does")
    return p


def wheelhouse_files(directory: Path) -> dict[str, Path]:
    """The wheels of a wheelhouse directory (ConfigError if it is not one)."""
    if not directory.is_dir():
        raise ConfigError(f"--wheelhouse {directory}: not a directory")
    wheels = {p.name: p for p in sorted(directory.iterdir()) if p.name.endswith(".whl")}
    if not wheels:
        raise ConfigError(f"--wheelhouse {directory}: holds no .whl files")
    return wheels


def _built_bundle(cache: Path, into: Path) -> dict[str, Path]:
    """The running shoal's bundle for this machine (seeder/wheelhouse.py), unpacked in ``into``."""
    from seeder.wheelhouse import Target, build_bundle

    libc, version = platform.libc_ver()
    target = Target(
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        machine=platform.machine(),
        glibc=version if libc == "glibc" and version else None,
    )
    bundle = build_bundle(cache, target)
    with tarfile.open(bundle.archive) as tar:
        tar.extractall(into, filter="data")
    return wheelhouse_files(into)


async def build_upgrade_release(client: Any, args: argparse.Namespace) -> str:
    """Upload the wheelhouse, have the seeder build the release; its release id."""
    if getattr(args, "auto_rollback", None):
        raise ConfigError(
            "--auto-rollback does not apply to fleet upgrade: a peer whose new version does"
            " not come back rolls itself back; to go back on purpose, upgrade to the old wheels"
        )
    with tempfile.TemporaryDirectory(prefix="shoal-upgrade-") as tmp:
        if args.wheelhouse is not None:
            wheels = wheelhouse_files(args.wheelhouse)
        else:
            cache = args.cache or _default_cache()
            wheels = await trio.to_thread.run_sync(_built_bundle, cache, Path(tmp))
        upload = await client.call("upgrade.begin")
        upload_id, chunk = str(upload["upload_id"]), int(upload["chunk"])
        digests = {}
        for name, path in wheels.items():
            digests[name] = await trio.to_thread.run_sync(_sha256, path)
            offset = 0
            with path.open("rb") as f:
                while data := f.read(chunk):
                    await client.call(
                        "upgrade.put", upload_id=upload_id, name=name, offset=offset, data=data
                    )
                    offset += len(data)
        built = await client.call("upgrade.build", upload_id=upload_id, files=digests)
    release = built["release"]
    state = "built" if built.get("created") else "already known"
    print(
        f"shoal {release['version']} upgrade release {release['release_id']}"
        f" ({len(wheels)} wheels, {release['size']} bytes) {state}",
        file=sys.stderr if args.json else sys.stdout,
        flush=True,
    )
    return str(release["release_id"])


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shoal" / "bundles"
