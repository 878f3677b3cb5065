"""Join tokens on the seeder: what a token allows, checked as pure logic (``now`` comes in).

A token is stored as a :class:`TokenRecord` (the secret's SHA-256, never the secret): when it
expires, how many uses it had and has left, the labels every host joining with it gets, an
optional glob the joining host's name must match, who made it. :func:`check_join` decides
whether a join request may use it; the store consumes a use atomically when the certificate is
recorded (two hosts racing for the last use: one wins, see ``Store.enroll``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from common.crypto.tokens import secret_matches
from common.join import JoinError, RefusalCode

MAX_LABELS = 32
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
MAX_LABEL_VALUE = 253
MAX_TTL = 7 * 24 * 3600.0  # a week: a token is for an enrollment afternoon, not a standing key
MAX_USES = 100_000
_NO_TOKEN = "0" * 64  # compared against when the id is unknown (no secret hashes to it)


@dataclass
class TokenRecord:
    token_id: str
    digest: str  # SHA-256 of the secret
    created_at: float
    expires_at: float
    uses: int  # how many hosts it may enroll in all
    uses_left: int
    labels: dict[str, str] = field(default_factory=dict)
    name_pattern: str = ""  # a glob (fnmatch, case-sensitive); empty: any name
    created_by: str = ""
    revoked_at: float | None = None

    def state(self, now: float) -> str:
        """``active``, ``revoked``, ``used_up`` or ``expired`` (in that order of precedence)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.uses_left <= 0:
            return "used_up"
        if now >= self.expires_at:
            return "expired"
        return "active"

    def view(self, now: float) -> dict[str, Any]:
        """What ``shoal token list --json`` shows (no digest: nothing to brute-force offline)."""
        shown = asdict(self)
        del shown["digest"]
        return {**shown, "state": self.state(now)}


def check_labels(labels: dict[str, str], *, whose: str) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise JoinError(RefusalCode.BAD_REQUEST, f"{whose} has {len(labels)} labels; at most 32")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise JoinError(RefusalCode.BAD_REQUEST, f"{whose}: label key {key!r} is not valid")
        if len(value) > MAX_LABEL_VALUE or not value.isprintable() or "," in value:
            raise JoinError(
                RefusalCode.BAD_REQUEST, f"{whose}: the value of label {key!r} is not valid"
            )
    return labels


def check_join(record: TokenRecord | None, secret: str, name: str, now: float) -> None:
    """Refuse (JoinError) unless ``record`` lets a host named ``name`` join now.

    An unknown token and a wrong secret get the same answer, so a caller learns nothing about
    which token ids exist; only a caller who holds the secret hears that it expired or is used
    up."""
    # An unknown id costs the same digest and comparison as a wrong secret: how long the
    # answer takes says nothing about which ids exist (the comparison is constant-time).
    digest = record.digest if record is not None else _NO_TOKEN
    if not secret_matches(secret, digest) or record is None:
        raise JoinError(RefusalCode.BAD_TOKEN, "invalid join token (unknown id or wrong secret)")
    state = record.state(now)
    if state == "revoked":
        raise JoinError(RefusalCode.REVOKED, f"join token {record.token_id} was revoked")
    if state == "used_up":
        raise JoinError(
            RefusalCode.USED_UP,
            f"join token {record.token_id} is used up (all {record.uses} use(s) taken)",
        )
    if state == "expired":
        raise JoinError(RefusalCode.EXPIRED, f"join token {record.token_id} expired")
    if record.name_pattern and not fnmatch.fnmatchcase(name, record.name_pattern):
        raise JoinError(
            RefusalCode.NAME_REFUSED,
            f"join token {record.token_id} only enrolls names matching {record.name_pattern!r},"
            f" not {name!r}",
        )


def joined_labels(record: TokenRecord, asked: dict[str, str]) -> dict[str, str]:
    """The labels a joining host gets: those it asked for, the token's winning on a clash (the
    operator who made the token decides, e.g. ``env=prod``)."""
    return {**check_labels(asked, whose="the joining host"), **record.labels}
