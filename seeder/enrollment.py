"""The control methods that extend or withdraw trust: ``hosts.enroll``, ``admin.cert``,
``admin.list``, ``admin.revoke``, ``hosts.revoke`` (admin only, see :mod:`seeder.roles`).

A revocation takes effect at once twice over: the CA's CRL refuses the certificate in every
later handshake, and every live connection that presented it is closed.

The client generates the key pair and sends only the public key: a private key never crosses
the wire. The seeder answers with the certificate, its CA and (for hosts) the release signing
public key, which the client writes into a bundle or credential file.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from common.crypto import certs
from common.errors import ConfigError
from seeder.authority import HOST_LIFETIME, OPERATOR_LIFETIME, Issued, SeederCA
from seeder.caller import current_caller
from seeder.connections import Connections
from seeder.control import Handler

log = logging.getLogger("shoal.seeder.enrollment")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def enrollment_methods(
    authority: SeederCA, connections: Connections, now: Callable[[], dt.datetime] = _utcnow
) -> dict[str, Handler]:
    async def hosts_enroll(params: dict[str, Any]) -> dict[str, Any]:
        name = certs.check_name(str(params["name"]))
        labels = _labels(params.get("labels") or {})
        cert = authority.issue(
            bytes(params["public_key"]),
            name,
            certs.HOST_ROLE,
            now=now(),
            lifetime=_lifetime(params, HOST_LIFETIME),
            labels=labels,
        )
        log.info("host %s enrolled by %s (labels %s)", name, current_caller().name, labels)
        return {
            **_answer(authority, cert),
            "labels": labels,
            "release_signing_pub": authority.signing_public(),
        }

    async def admin_cert(params: dict[str, Any]) -> dict[str, Any]:
        name, role = certs.check_name(str(params["name"])), str(params["role"])
        if role not in certs.OPERATOR_ROLES:
            raise ConfigError(f"role {role!r} is not one of {', '.join(certs.OPERATOR_ROLES)}")
        cert = authority.issue(
            bytes(params["public_key"]),
            name,
            role,
            now=now(),
            lifetime=_lifetime(params, OPERATOR_LIFETIME),
        )
        log.info("%s certificate for %s issued by %s", role, name, current_caller().name)
        return _answer(authority, cert)

    async def hosts_revoke(params: dict[str, Any]) -> dict[str, Any]:
        name = str(params["name"])
        serials = authority.revoke_host(name, now())
        dropped = connections.disconnect(certs.Holder(name, certs.HOST_ROLE))
        return _revoked("host", name, serials, dropped)

    async def admin_list(params: dict[str, Any]) -> dict[str, Any]:
        at = now().timestamp()
        return {"certificates": [_operator_view(i, at) for i in authority.operators()]}

    async def admin_revoke(params: dict[str, Any]) -> dict[str, Any]:
        name = str(params["name"])
        serials = authority.revoke_operator(name, now())
        dropped = connections.disconnect(*(certs.Holder(name, r) for r in certs.OPERATOR_ROLES))
        return _revoked("operator", name, serials, dropped)

    return {
        "hosts.enroll": hosts_enroll,
        "admin.cert": admin_cert,
        "admin.list": admin_list,
        "admin.revoke": admin_revoke,
        "hosts.revoke": hosts_revoke,
    }


def _revoked(kind: str, name: str, serials: list[int], dropped: int) -> dict[str, Any]:
    """Log a revocation (who did it) and answer it: the serials revoked, connections closed."""
    log.warning(
        "%s %s revoked by %s: %d certificate(s), %d connection(s) closed",
        kind,
        name,
        current_caller().name,
        len(serials),
        dropped,
    )
    return {"name": name, "revoked": [f"{s:x}" for s in serials], "disconnected": dropped}


def _operator_view(issued: Issued, now: float) -> dict[str, Any]:
    """One operator certificate as ``shoal admin list`` shows it (times in ISO 8601, UTC)."""
    return {
        "name": issued.name,
        "role": issued.role,
        "serial": f"{issued.serial:x}",
        "issued_at": _iso(issued.issued_at),
        "not_after": _iso(issued.not_after),
        "revoked_at": None if issued.revoked_at is None else _iso(issued.revoked_at),
        "state": issued.state(now),
    }


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat()


def _answer(authority: SeederCA, cert_pem: bytes) -> dict[str, Any]:
    cert = certs.load_certificate(cert_pem)
    return {
        "name": certs.holder(cert).name,
        "role": certs.holder(cert).role,
        "cert": cert_pem,
        "ca": authority.ca_pem,
        "serial": f"{cert.serial_number:x}",
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


def _lifetime(params: dict[str, Any], default: dt.timedelta) -> dt.timedelta:
    ttl = params.get("ttl")
    if ttl is None:
        return default
    seconds = float(ttl)
    if not 0 < seconds <= 100 * 365 * 86400:
        raise ConfigError(f"ttl {ttl!r}: give a positive number of seconds, at most 100 years")
    return dt.timedelta(seconds=seconds)


def _labels(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in raw.items()
    ):
        raise ConfigError("labels must map non-empty names to strings")
    return dict(raw)
