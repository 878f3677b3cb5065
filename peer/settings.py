"""What ``shoal-peer join`` records for ``shoal-peer run``: ``DATA/peer.json``.

The seeder's control address, the host's name, its labels (the token's included) and the local
IP it reached the seeder from (its default ``--bind``), so that after a join ``shoal-peer run
--data-dir DATA`` needs nothing else. Options given to ``run`` win over the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.errors import ConfigError

FILE = "peer.json"


@dataclass(frozen=True)
class PeerSettings:
    seeder: str  # HOST:PORT of the control port
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    bind: str = ""


def load(data_dir: Path) -> PeerSettings | None:
    path = data_dir / FILE
    try:
        raw = json.loads(path.read_text())
        return PeerSettings(
            seeder=str(raw["seeder"]),
            name=str(raw["name"]),
            labels={str(k): str(v) for k, v in dict(raw.get("labels", {})).items()},
            bind=str(raw.get("bind", "")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a usable peer settings file: {exc}") from None


def save(data_dir: Path, settings: PeerSettings) -> None:
    """Write the file atomically (a crash leaves the old one or the new one)."""
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f".{FILE}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(settings), f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, data_dir / FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
