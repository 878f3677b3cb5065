"""Security on in the namespace benchmarks: the seeder's identity and every host's bundle, made
before any daemon starts (as ``shoal seeder init`` and ``shoal enroll`` would), so the swarm
and overhead benchmarks measure shoal as it runs in production: mutual TLS on every control
connection."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from common.crypto import certs
from seeder.authority import identity_dir, init_identity
from seeder.client import IDENTITY_ENV
from seeder.localfleet import offline_bundle


@dataclass(frozen=True)
class BenchIdentity:
    credential: Path  # the admin credential the CLI presents
    bundles: dict[str, Path]  # host name -> its enrollment bundle

    @property
    def env(self) -> dict[str, str]:
        """The environment for the ``shoal`` CLI: the admin credential in SHOAL_IDENTITY."""
        return {**os.environ, IDENTITY_ENV: str(self.credential)}

    def peer_args(self, name: str) -> list[str]:
        """What ``shoal-peer run`` needs to install host ``name``'s identity."""
        return ["--bundle", str(self.bundles[name])]


def prepare(seeder_data: Path, seeder_ip: str, hosts: list[str], out: Path) -> BenchIdentity:
    """Init the seeder's identity in ``seeder_data`` (for ``seeder_ip``) and enroll ``hosts``."""
    seeder_data.mkdir(parents=True, exist_ok=True)
    init_identity(seeder_data, [seeder_ip], dt.datetime.now(dt.UTC))
    out.mkdir(parents=True, exist_ok=True)
    bundles = {}
    for name in hosts:
        path = out / f"{name}.bundle.json"
        certs.write_private(path, offline_bundle(seeder_data, name, {}).to_json(), overwrite=True)
        bundles[name] = path
    return BenchIdentity(identity_dir(seeder_data) / "admin.pem", bundles)
