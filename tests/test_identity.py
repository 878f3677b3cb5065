"""The pure parts of identity: the role table, the CA's index and revocation, bundles, TTLs."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from common import messages as m
from common.bundle import Bundle
from common.channel import Channel
from common.crypto import certs
from common.durations import parse_duration
from common.errors import ConfigError
from common.protocol import Role
from seeder import roles
from seeder.authority import LastAdmin, SeederCA, UnknownHost, UnknownOperator, init_identity
from seeder.caller import current_caller
from seeder.control import ControlServer
from seeder.engine import Engine
from seeder.store import Store

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

CASES = [
    # role, method, allowed
    ("viewer", "hosts.list", True),
    ("viewer", "rollout.subscribe", True),
    ("viewer", "logs.get", True),
    ("viewer", "rollout.start", False),
    ("viewer", "release.build", False),
    ("deployer", "release.build", True),
    ("deployer", "rollout.abort", True),
    ("deployer", "rollback.start", True),
    ("deployer", "hosts.enroll", False),
    ("deployer", "hosts.revoke", False),
    ("deployer", "admin.cert", False),
    ("deployer", "token.create", False),
    ("admin", "hosts.revoke", True),
    ("viewer", "admin.list", False),  # credentials are the trust configuration: admins only
    ("deployer", "admin.list", False),
    ("deployer", "admin.revoke", False),
    ("admin", "admin.list", True),
    ("admin", "admin.revoke", True),
    ("admin", "rollout.start", True),
    ("host", "hosts.list", False),
    ("host", "rollout.start", False),
    ("seeder", "hosts.list", False),
    ("admin", "no.such.method", False),  # fail closed
]


@pytest.mark.parametrize(("role", "method", "allowed"), CASES)
def test_the_role_table(role: str, method: str, allowed: bool) -> None:
    if allowed:
        roles.check(role, method)
    else:
        with pytest.raises(roles.NotPermitted):
            roles.check(role, method)


def test_every_role_in_the_table_is_an_operator_role() -> None:
    assert set(roles.METHOD_ROLES.values()) <= set(certs.OPERATOR_ROLES)


async def test_a_method_without_a_role_stops_the_server_from_being_built(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        engine = Engine(store, seeder_bt=("127.0.0.1", 1))

        async def handler(params: dict[str, object]) -> dict[str, object]:
            return {}

        with pytest.raises(AssertionError, match=r"no role to brand\.new"):
            ControlServer(store, engine, methods={"hosts.list": handler, "brand.new": handler})
    finally:
        store.close()


def enrolled(tmp_path: Path) -> tuple[SeederCA, certs.PrivateKey]:
    init_identity(tmp_path, ["127.0.0.1"], NOW)
    authority = SeederCA(tmp_path)
    key = certs.generate_key()
    return authority, key


def test_init_refuses_to_overwrite_and_run_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"shoal seeder init --data-dir {tmp_path}"):
        SeederCA(tmp_path)
    init_identity(tmp_path, ["127.0.0.1"], NOW)
    with pytest.raises(ConfigError, match="already holds a seeder identity"):
        init_identity(tmp_path, ["127.0.0.1"], NOW)
    assert stat.S_IMODE((tmp_path / "identity").stat().st_mode) == 0o700


def test_revocation_is_by_host_persisted_and_in_the_crl(tmp_path: Path) -> None:
    authority, key = enrolled(tmp_path)
    pub = certs.public_pem(key.public_key())
    first = certs.load_certificate(
        authority.issue(pub, "web-1", "host", now=NOW, lifetime=DAY, labels={"env": "prod"})
    )
    other = certs.load_certificate(authority.issue(pub, "web-2", "host", now=NOW, lifetime=DAY))
    assert authority.labels("web-1") == {"env": "prod"}
    assert authority.revoke_host("web-1", NOW) == [first.serial_number]
    assert authority.revoke_host("web-1", NOW) == []  # already revoked
    with pytest.raises(UnknownHost):
        authority.revoke_host("web-3", NOW)
    with pytest.raises(UnknownHost):
        authority.revoke_host("admin", NOW)  # an operator, not a host

    again = SeederCA(tmp_path)  # a restart reads the index back
    crl = certs.x509.load_pem_x509_crl(again.crl(NOW))
    revoked = {r.serial_number for r in crl}
    assert revoked == {first.serial_number}
    assert other.serial_number not in revoked
    assert crl.is_signature_valid(again.ca.cert.public_key())  # type: ignore[arg-type]
    # enrolled again, the host is let back in with a new certificate
    back = certs.load_certificate(authority.issue(pub, "web-1", "host", now=NOW, lifetime=DAY))
    assert back.serial_number not in revoked


def test_operator_revocation_by_name_persisted_and_in_the_crl(tmp_path: Path) -> None:
    authority, key = enrolled(tmp_path)
    pub = certs.public_pem(key.public_key())

    def serial(name: str, role: str, lifetime: dt.timedelta = DAY) -> int:
        issued = authority.issue(pub, name, role, now=NOW, lifetime=lifetime)
        return certs.load_certificate(issued).serial_number

    dave = {serial("dave", "deployer"), serial("dave", "viewer")}
    vera = serial("vera", "viewer")
    serial("web-1", "host")
    assert set(authority.revoke_operator("dave", NOW)) == dave  # every role the name holds
    assert authority.revoke_operator("dave", NOW) == []  # already revoked
    with pytest.raises(UnknownOperator, match="no operator certificate was ever issued"):
        authority.revoke_operator("nobody", NOW)
    with pytest.raises(UnknownOperator, match="`shoal hosts revoke web-1`"):
        authority.revoke_operator("web-1", NOW)
    with pytest.raises(UnknownHost, match="`shoal admin revoke vera`"):
        authority.revoke_host("vera", NOW)
    views = {(i.name, i.role): i.state(NOW.timestamp()) for i in authority.operators()}
    assert views == {
        ("admin", "admin"): "active",
        ("dave", "deployer"): "revoked",
        ("dave", "viewer"): "revoked",
        ("vera", "viewer"): "active",
    }
    revoked = {r.serial_number for r in certs.x509.load_pem_x509_crl(SeederCA(tmp_path).crl(NOW))}
    assert revoked == dave and vera not in revoked  # read back as a restart would


def test_the_last_admin_in_force_cannot_be_revoked(tmp_path: Path) -> None:
    authority, key = enrolled(tmp_path)
    pub = certs.public_pem(key.public_key())
    with pytest.raises(LastAdmin, match="the last admin certificate in force"):
        authority.revoke_operator("admin", NOW)
    # an expired admin certificate opens nothing: it does not count as another admin
    authority.issue(pub, "old", "admin", now=NOW - 3 * DAY, lifetime=DAY)
    with pytest.raises(LastAdmin):
        authority.revoke_operator("admin", NOW)
    assert all(i.revoked_at is None for i in authority.operators())  # nothing half-applied
    authority.issue(pub, "alice", "admin", now=NOW, lifetime=DAY)
    assert len(authority.revoke_operator("admin", NOW)) == 1
    with pytest.raises(LastAdmin):
        authority.revoke_operator("alice", NOW)
    # a name holding a deployer and the last admin certificate keeps both
    authority.issue(pub, "alice", "deployer", now=NOW, lifetime=DAY)
    with pytest.raises(LastAdmin):
        authority.revoke_operator("alice", NOW)
    assert [i.revoked_at for i in authority.operators() if i.name == "alice"] == [None, None]


def test_issue_refuses_the_seeder_role_and_other_keys(tmp_path: Path) -> None:
    authority, key = enrolled(tmp_path)
    pub = certs.public_pem(key.public_key())
    with pytest.raises(ConfigError, match="seeder init"):
        authority.issue(pub, "seeder", "seeder", now=NOW, lifetime=DAY)
    _, ed = certs.generate_signing_key()
    with pytest.raises(certs.CertificateError, match="not an ECDSA key"):
        authority.issue(ed, "web-1", "host", now=NOW, lifetime=DAY)


def test_a_bundle_round_trips_and_damage_is_named(tmp_path: Path) -> None:
    authority, key = enrolled(tmp_path)
    cert = authority.issue(certs.public_pem(key.public_key()), "web-1", "host", now=NOW,
                           lifetime=DAY)  # fmt: skip
    bundle = Bundle("web-1", {"a": "b"}, authority.ca_pem, cert, certs.key_pem(key),
                    authority.signing_public())  # fmt: skip
    path = tmp_path / "b.json"
    path.write_bytes(bundle.to_json())
    assert Bundle.read(path) == bundle

    doc = json.loads(path.read_text())
    doc["key"] = certs.key_pem(certs.generate_key()).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="certificate, key and CA disagree"):
        Bundle.read(path)
    path.write_text(json.dumps({**doc, "name": "web-2"}))
    with pytest.raises(ConfigError):
        Bundle.read(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        Bundle.read(path)
    with pytest.raises(ConfigError, match="cannot read"):
        Bundle.read(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90d", 90 * 86400), ("12h", 43200), ("30m", 1800), ("45", 45)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "d", "-1d", "0", "nan", "inf", "1y"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--ttl"):
        parse_duration(text)


async def test_each_request_runs_as_the_certificates_holder(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        engine = Engine(store, seeder_bt=("127.0.0.1", 1))

        async def whoami(params: dict[str, Any]) -> dict[str, Any]:
            caller = current_caller()
            return {"name": caller.name, "role": caller.role}

        server = ControlServer(
            store, engine, methods={"whoami": whoami}, method_roles={"whoami": "viewer"}
        )
        for who in (certs.Holder("vera", "viewer"), certs.Holder("alice", "admin")):
            client_stream, server_stream = trio.testing.memory_stream_pair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.converse, server_stream, who)
                channel = Channel(client_stream, Role.CLIENT)
                await channel.send(m.ClientHello(client="test"))
                await channel.send(m.Request(id=1, method="whoami", params={}))
                reply = await channel.receive()
                assert isinstance(reply, m.Response) and reply.result == vars(who)
                await channel.aclose()
    finally:
        store.close()
