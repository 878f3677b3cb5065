"""What ``shoal-peer join`` records for ``shoal-peer run``: ``DATA/peer.json``.

The seeder's control address and the local IP this host reached it from (its default
``--bind``), so that after a join ``shoal-peer run --data-dir DATA`` needs nothing else (the
name is the one in ``DATA/identity/host.crt``, the labels are the seeder's record of the
enrollment). Options given to ``run`` win over the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import ConfigError

FILE = "peer.json"


@dataclass(frozen=True)
class PeerSettings:
    seeder: str  # HOST:PORT of the control port
    bind: str = ""


def load(data_dir: Path) -> PeerSettings | None:
    path = data_dir / FILE
    try:
        raw = json.loads(path.read_text())
        return PeerSettings(
            seeder=str(raw["seeder"]),
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
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(settings), f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, data_dir / FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
