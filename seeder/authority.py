"""The seeder's identity on disk: its CA, its TLS certificate, the release signing key, and the
index of every certificate the CA issued (and which are revoked).

``shoal seeder init`` writes ``DATA_DIR/identity/``:

- ``ca.crt``, ``ca.key``: the private CA every control connection is checked against;
- ``seeder.crt``, ``seeder.key``: the control server's certificate (SANs: the names it serves);
- ``release-signing.key``, ``release-signing.pub``: the Ed25519 key release manifests are signed
  with;
- ``admin.pem``: the first operator credential (role admin) for the CLI;
- ``issued.json``: serial -> holder, role, labels, expiry, revocation time. Like OpenSSL's CA
  ``index.txt``, it belongs to the CA: the CRL the control server enforces is derived from it,
  and so is the in-memory index of each host's certificates in force (:func:`hosts_in_force`),
  which the tracker asks on every announce.

Every ``*.key`` and ``admin.pem`` is mode 0600. Nothing here is ever overwritten.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import tls
from common.crypto import certs
from common.errors import ConfigError, ShoalError
from seeder.roles import ADMIN

IDENTITY = "identity"
OPERATOR_LIFETIME = dt.timedelta(days=90)
HOST_LIFETIME = dt.timedelta(days=365)
FIRST_ADMIN = "admin"


class UnknownHost(ShoalError):
    """No certificate was ever issued to that host name."""


class UnknownOperator(ShoalError):
    """No operator certificate was ever issued to that name."""


class LastAdmin(ShoalError):
    """Revoking would leave no admin certificate in force: nobody could administer the seeder."""


def identity_dir(data_dir: Path) -> Path:
    return data_dir / IDENTITY


def default_hosts() -> list[str]:
    """What the seeder's certificate names when ``seeder init`` is given no ``--host``: this
    machine's hostname and loopback."""
    return list(dict.fromkeys([socket.gethostname(), "localhost", "127.0.0.1", "::1"]))


@dataclass(frozen=True)
class Issued:
    serial: int
    name: str
    role: str
    labels: dict[str, str]
    not_after: float
    issued_at: float
    revoked_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "serial": f"{self.serial:x}"}

    def in_force(self, now: float) -> bool:
        """Whether it still opens a connection at ``now``: neither revoked nor expired."""
        return self.revoked_at is None and self.not_after > now

    def state(self, now: float) -> str:
        """``revoked``, ``expired`` or ``active`` (in that order of precedence)."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.not_after <= now else "active"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Issued:
        return cls(**{**d, "serial": int(d["serial"], 16), "labels": dict(d["labels"])})


def init_identity(data_dir: Path, hosts: Iterable[str], now: dt.datetime) -> Path:
    """Create the seeder's identity in ``data_dir``; refuses if one is there already."""
    directory = identity_dir(data_dir)
    if (directory / "ca.key").exists() or (directory / "ca.crt").exists():
        raise ConfigError(
            f"{directory} already holds a seeder identity; not overwriting it (every enrolled"
            " host and operator trusts that CA). Use another --data-dir for a new one"
        )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca = certs.Authority.create(f"shoal CA {socket.gethostname()}", now)
    server_key = certs.generate_key()
    server = ca.issue(
        server_key.public_key(),
        "seeder",
        certs.SEEDER_ROLE,
        now=now,
        hosts=list(hosts),
        not_after=ca.cert.not_valid_after_utc,
    )
    signing_private, signing_public = certs.generate_signing_key()
    admin_key = certs.generate_key()
    admin = ca.issue(
        admin_key.public_key(), FIRST_ADMIN, ADMIN, now=now, not_after=now + HOST_LIFETIME
    )
    certs.write_private(directory / "ca.key", certs.key_pem(ca.key))
    certs.write_private(directory / "seeder.key", certs.key_pem(server_key))
    certs.write_private(directory / "release-signing.key", signing_private)
    certs.write_public(directory / "release-signing.pub", signing_public)
    certs.write_public(directory / "seeder.crt", certs.cert_pem(server))
    certs.write_private(
        directory / "admin.pem", certs.Credential(admin, admin_key, ca.cert).to_pem()
    )
    index = [_record(server, {}), _record(admin, {})]
    _write_index(directory, index, create=True)
    certs.write_public(directory / "ca.crt", certs.cert_pem(ca.cert))  # last: marks it complete
    return directory


def _record(cert: Any, labels: dict[str, str]) -> Issued:
    who = certs.holder(cert)
    return Issued(
        serial=cert.serial_number,
        name=who.name,
        role=who.role,
        labels=labels,
        not_after=cert.not_valid_after_utc.timestamp(),
        issued_at=cert.not_valid_before_utc.timestamp(),
    )


def hosts_in_force(index: Iterable[Issued]) -> dict[str, float]:
    """Host name -> the latest expiry among its unrevoked host certificates (hosts whose every
    certificate is revoked are absent). Expiry is left to the reader, who knows ``now``."""
    until: dict[str, float] = {}
    for i in index:
        if i.role == certs.HOST_ROLE and i.revoked_at is None:
            until[i.name] = max(until.get(i.name, i.not_after), i.not_after)
    return until


def _write_index(directory: Path, index: list[Issued], *, create: bool = False) -> None:
    data = json.dumps([i.to_dict() for i in index], indent=1, sort_keys=True).encode()
    certs.write_private(directory / "issued.json", data, overwrite=not create)


class SeederCA:
    """The loaded identity of a seeder: issues host and operator certificates, revokes hosts,
    and keeps the control server's CRL in step. The one writer of ``issued.json``."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = identity_dir(data_dir)
        missing = [
            n
            for n in ("ca.crt", "ca.key", "seeder.crt", "seeder.key", "issued.json")
            if not (self.dir / n).is_file()
        ]
        if missing:
            raise ConfigError(
                f"no seeder identity in {self.dir} (missing {', '.join(missing)}): create it"
                f" with `shoal seeder init --data-dir {data_dir}`"
            )
        try:
            self.ca = certs.Authority.from_pem(
                (self.dir / "ca.crt").read_bytes(), (self.dir / "ca.key").read_bytes()
            )
            raw = json.loads((self.dir / "issued.json").read_text())
            self._set_index([Issued.from_dict(d) for d in raw])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read the seeder identity in {self.dir}: {exc}") from None
        self.ca_pem = certs.cert_pem(self.ca.cert)
        self.server_tls: tls.ServerTLS | None = None

    def _set_index(self, index: list[Issued]) -> None:
        """The one place the index changes (after it is on disk): what derives from it with it."""
        self._index = index
        self._in_force = hosts_in_force(index)

    def _commit(self, index: list[Issued]) -> None:
        """Write the new index to ``issued.json``, then make it the one in memory."""
        _write_index(self.dir, index)
        self._set_index(index)

    def open_server_tls(self, now: dt.datetime) -> tls.ServerTLS:
        """The control server's TLS context, refusing every revoked certificate."""
        self.server_tls = tls.ServerTLS(
            self.dir / "seeder.crt", self.dir / "seeder.key", self.ca_pem, self.crl(now)
        )
        return self.server_tls

    def crl(self, now: dt.datetime) -> bytes:
        """The CRL (PEM) of every revoked certificate, signed by the CA."""
        revoked = [i.serial for i in self._index if i.revoked_at is not None]
        return certs.crl_pem(self.ca.revocation_list(revoked, now))

    def signing_public(self) -> bytes:
        path = self.dir / "release-signing.pub"
        try:
            return certs.check_signing_public(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None

    def issue(
        self,
        public_key_pem: bytes,
        name: str,
        role: str,
        *,
        now: dt.datetime,
        lifetime: dt.timedelta,
        labels: dict[str, str] | None = None,
    ) -> bytes:
        """A client certificate (PEM) for a host or an operator, recorded in the index."""
        if role == certs.SEEDER_ROLE:
            raise ConfigError("the seeder's own certificate is made by `shoal seeder init` only")
        key = certs.load_public_key(public_key_pem)
        cert = self.ca.issue(key, name, role, now=now, not_after=now + lifetime)
        self._commit([*self._index, _record(cert, dict(labels or {}))])
        return certs.cert_pem(cert)

    def revoke_host(self, name: str, now: dt.datetime) -> list[int]:
        """Revoke every unrevoked certificate issued to host ``name``; their serials."""
        ever = [i for i in self._index if i.name == name and i.role == certs.HOST_ROLE]
        if not ever:
            if any(i.name == name and i.role in certs.OPERATOR_ROLES for i in self._index):
                raise UnknownHost(
                    f"{name!r} is an operator, not a host: revoke it with"
                    f" `shoal admin revoke {name}`"
                )
            raise UnknownHost(f"no host certificate was ever issued to {name!r}")
        return self._revoke([i.serial for i in ever if i.revoked_at is None], now)

    def revoke_operator(self, name: str, now: dt.datetime) -> list[int]:
        """Revoke every unrevoked operator certificate of ``name``; their serials.

        Refused (LastAdmin, nothing revoked) if no admin certificate would be left in force:
        the CLI could then reach nothing that issues a new one."""
        ever = [i for i in self._index if i.name == name and i.role in certs.OPERATOR_ROLES]
        if not ever:
            if any(i.name == name and i.role == certs.HOST_ROLE for i in self._index):
                raise UnknownOperator(
                    f"{name!r} is a host, not an operator: revoke it with"
                    f" `shoal hosts revoke {name}`"
                )
            raise UnknownOperator(
                f"no operator certificate was ever issued to {name!r}"
                " (`shoal admin list` shows them)"
            )
        at = now.timestamp()
        serials = [i.serial for i in ever if i.revoked_at is None]
        admins_left = [
            i for i in self._index if i.role == ADMIN and i.in_force(at) and i.serial not in serials
        ]
        if not admins_left and any(i.role == ADMIN and i.in_force(at) for i in ever):
            raise LastAdmin(
                f"refusing to revoke {name!r}: it holds the last admin certificate in force, and"
                " nobody could administer this seeder afterwards; issue another first"
                " (`shoal admin cert NAME --role admin --out FILE`)"
            )
        return self._revoke(serials, now)

    def _revoke(self, serials: list[int], now: dt.datetime) -> list[int]:
        """Mark ``serials`` revoked at ``now``, persist the index, then refuse them in every
        handshake from now on (the control server's CRL)."""
        if serials:
            at = now.timestamp()
            self._commit(
                [
                    Issued(**{**vars(i), "revoked_at": at}) if i.serial in serials else i
                    for i in self._index
                ]
            )
            if self.server_tls is not None:
                self.server_tls.reload(self.crl(now))
        return serials

    def labels(self, name: str) -> dict[str, str]:
        """The labels given when host ``name`` was last enrolled (none if it never was)."""
        for i in reversed(self._index):
            if i.name == name and i.role == certs.HOST_ROLE:
                return dict(i.labels)
        return {}

    def host_in_force(self, name: str, now: float) -> bool:
        """Whether host ``name`` holds a host certificate that is neither revoked nor expired at
        ``now``: one dict lookup (the tracker asks on every announce). A revocation counts from
        the moment :meth:`revoke_host` returns."""
        until = self._in_force.get(name)
        return until is not None and until > now

    def certificates(self) -> list[Issued]:
        return list(self._index)

    def operators(self) -> list[Issued]:
        """Every operator certificate ever issued (revoked and expired ones too), oldest first."""
        return [i for i in self._index if i.role in certs.OPERATOR_ROLES]
