"""Tracker keys: the tracker answers only announces that carry a key the seeder issued.

A key names its holder and carries an HMAC-SHA256 over that name with the seeder's tracker secret
(``DATA/tracker.secret``, 32 random bytes, mode 0600, made on first start), so the tracker checks
it without a lookup and nobody can make one up. Holders:

- ``h:NAME``: an enrolled host; a peer gets its key in the control channel's Welcome, over the
  authenticated connection, and puts it into its announce URLs (``/announce?hk=KEY``);
- ``o``: the seeder's own full seed;
- ``g:IP[,IP...]:UNTIL``: a grant to a machine (``shoal release torrent --allow IP``), valid
  only from those IPs and until the Unix time UNTIL.

The tracker refuses a missing, malformed, forged or expired key, and a host key whose host is no
longer enrolled, with a bencoded ``failure reason`` (:class:`KeyRefused`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from common.errors import ConfigError, ShoalError

SECRET_FILE: Final = "tracker.secret"
SECRET_SIZE: Final = 32
MAC_HEX: Final = 32  # 128 bits of the HMAC, in hex
MAX_KEY: Final = 300


class KeyRefused(ShoalError):
    """An announce's tracker key is not acceptable; the message says why (for the client)."""


def load_secret(data_dir: Path) -> bytes:
    """The tracker secret of this data dir, created (0600) the first time."""
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the tracker secret {path}: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(SECRET_SIZE))
    try:
        secret = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the tracker secret {path}: {exc.strerror}") from None
    if len(secret) != SECRET_SIZE:
        raise ConfigError(f"{path} is not a tracker secret ({SECRET_SIZE} bytes); remove it")
    return secret


class AnnounceKeys:
    """Issues and checks tracker keys. ``enrolled(name)`` says whether a host may still use its
    key (revoked or forgotten hosts may not). Pure: ``now`` is passed in."""

    def __init__(self, secret: bytes, enrolled: Callable[[str], bool]) -> None:
        self._secret = secret
        self._enrolled = enrolled

    def _mac(self, subject: str) -> str:
        digest = hmac.new(self._secret, subject.encode(), hashlib.sha256).hexdigest()
        return digest[:MAC_HEX]

    def _key(self, subject: str) -> str:
        return f"{subject}.{self._mac(subject)}"

    def host_key(self, name: str) -> str:
        return self._key(f"h:{name}")

    def origin_key(self) -> str:
        return self._key("o")

    def grant_key(self, ips: Sequence[str], until: float) -> str:
        return self._key(f"g:{','.join(ips)}:{int(until)}")

    def check(self, key: str | None, ip: str, now: float) -> str:
        """The key's holder (``h:NAME``, ``o`` or ``g:IPS:UNTIL``), or KeyRefused."""
        if not key:
            raise KeyRefused("this tracker answers enrolled hosts only: no tracker key (hk)")
        subject, dot, mac = key.rpartition(".")
        if len(key) > MAX_KEY or not dot or len(mac) != MAC_HEX:
            raise KeyRefused("malformed tracker key")
        if not hmac.compare_digest(mac, self._mac(subject)):
            raise KeyRefused("unknown tracker key")
        kind, _, rest = subject.partition(":")
        if kind == "h" and not self._enrolled(rest):
            raise KeyRefused(f"host {rest!r} is not enrolled")
        if kind == "g":
            granted, _, until = rest.rpartition(":")
            if not any(_same_ip(one, ip) for one in granted.split(",")):
                raise KeyRefused("this tracker key was granted to another address")
            if now > int(until):
                raise KeyRefused("this tracker key has expired")
        return subject


def admission(
    keys: AnnounceKeys, clock: Callable[[], float]
) -> Callable[[str, str | None], str | None]:
    """The tracker's admission check (seeder.tracker.AnnounceCheck): None, or why not."""

    def admit(ip: str, key: str | None) -> str | None:
        try:
            keys.check(key, ip, clock())
        except KeyRefused as exc:
            return str(exc)
        return None

    return admit


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False
