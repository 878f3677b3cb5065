"""What a preflight check needs to know about a release, as the seeder sends it to peers.

The seeder reads these facts from the release archive (it has it; a host may not yet), so a host
can check a release before staging it: its size on disk, its hook scripts (present, executable,
their ``#!`` interpreter) and ``runas`` users, and the directories its ``files`` install into.
This is the ``release`` field of :class:`common.messages.Preflight`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from common.errors import ReleaseError, RemoteProtocolError
from common.release import Manifest

CHECKS = ("disk", "hooks", "runas", "files")
"""The kinds of check a peer answers, in the order the CLI shows them."""


@dataclass(frozen=True)
class HookFacts:
    """One hook script of the release, as the archive holds it."""

    event: str
    location: str
    runas: str | None = None
    present: bool = True  # a regular file (or a symlink to one) in the archive
    executable: bool = True  # its mode has an execute bit
    interpreter: str = ""  # the #! line without "#!", e.g. "/usr/bin/env python3"; "" if none


@dataclass(frozen=True)
class ReleaseFacts:
    """The manifest plus what the checks need: unpacked size, hooks, ``files`` destinations."""

    manifest: dict[str, Any]
    unpacked_size: int
    hooks: tuple[HookFacts, ...] = ()
    destinations: tuple[str, ...] = ()

    @property
    def release_id(self) -> str:
        return str(self.manifest["release_id"])

    @property
    def download_size(self) -> int:
        return int(self.manifest["size"])

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.manifest,
            "unpacked_size": self.unpacked_size,
            "hooks": [asdict(h) for h in self.hooks],
            "files": list(self.destinations),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleaseFacts:
        """Parse the seeder's message; RemoteProtocolError names what is malformed."""
        try:
            known = {f.name for f in fields(HookFacts)}  # a newer seeder may send more
            hooks = tuple(
                HookFacts(**{k: v for k, v in dict(h).items() if k in known})
                for h in data.get("hooks", [])
            )
            destinations = tuple(str(d) for d in data.get("files", []))
            manifest = {k: v for k, v in data.items() if k not in _EXTRA}
            facts = cls(manifest, int(data["unpacked_size"]), hooks, destinations)
            Manifest.from_dict(manifest)  # a release id that matches its manifest, a sane name
        except (KeyError, TypeError, ValueError, ReleaseError) as exc:
            raise RemoteProtocolError(f"malformed preflight request: {exc}") from None
        if any(not d.startswith("/") for d in destinations):
            raise RemoteProtocolError("malformed preflight request: a destination is relative")
        return facts


_EXTRA = ("unpacked_size", "hooks", "files")


@dataclass(frozen=True)
class Check:
    """One answer of a peer: which kind of check, whether it passed, and what was seen."""

    check: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def interpreter_line(head: bytes) -> str:
    """The interpreter a script's first bytes name (its ``#!`` line), or "" if none."""
    if not head.startswith(b"#!"):
        return ""
    return head[2:].split(b"\n")[0].decode("utf-8", "replace").strip()
