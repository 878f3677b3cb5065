"""Operator certificates listed and revoked for real: a real seeder process, the real CLI, real
TLS connections held open while their certificate is revoked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from common.crypto import certs
from common.errors import ConnectionClosed, RemoteError, TLSRefused
from seeder.localfleet import LocalFleet

pytestmark = pytest.mark.integration


async def cli(
    fleet: LocalFleet, *args: str, credential: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: fleet.cli(*args, credential=credential))


async def issue(fleet: LocalFleet, name: str, role: str, by: Path | None = None) -> Path:
    """An operator credential issued through the seeder (as ``shoal admin cert`` does, without
    a CLI process each time: the CLI's own path is tried in test_identity_e2e)."""
    key = certs.generate_key()
    async with fleet.client(by) as client:
        answer = await client.call(
            "admin.cert", name=name, role=role, public_key=certs.public_pem(key.public_key())
        )
    path = fleet.root / f"{name}.pem"
    cert, ca = certs.load_certificate(answer["cert"]), certs.load_certificate(answer["ca"])
    certs.write_private(path, certs.Credential(cert, key, ca).to_pem())
    return path


async def refused(fleet: LocalFleet, credential: Path) -> None:
    """The seeder refuses ``credential`` in the TLS handshake, as revoked."""
    with pytest.raises(TLSRefused, match="revoked") as caught:
        async with fleet.client(credential) as client:
            await client.call("hosts.list")
    assert caught.value.ours  # the seeder refused our certificate


async def listed(fleet: LocalFleet) -> dict[str, list[dict[str, Any]]]:
    out = await cli(fleet, "admin", "list", "--json")
    assert out.returncode == 0, out.stderr
    by_name: dict[str, list[dict[str, Any]]] = {}
    for cert in json.loads(out.stdout):
        by_name.setdefault(cert["name"], []).append(cert)
    return by_name


@pytest.mark.slow
async def test_a_revoked_deployer_is_dropped_at_once_and_refused_for_good(
    fleet: LocalFleet,
) -> None:
    await fleet.start_seeder()
    dave = await issue(fleet, "dave", "deployer")
    vera = await issue(fleet, "vera", "viewer")
    await fleet.enroll("web-1")

    before = await listed(fleet)
    assert {n: [c["role"] for c in cs] for n, cs in before.items()} == {
        "admin": ["admin"],
        "dave": ["deployer"],
        "vera": ["viewer"],
    }  # operators only: neither the seeder's own certificate nor hosts
    (entry,) = before["dave"]
    assert entry["state"] == "active" and entry["revoked_at"] is None
    assert entry["not_after"] > entry["issued_at"] and int(entry["serial"], 16) > 0
    text = await cli(fleet, "admin", "list")
    assert text.returncode == 0 and "dave" in text.stdout and "deployer" in text.stdout

    # A viewer may neither list credentials nor revoke them.
    out = await cli(fleet, "admin", "revoke", "dave", credential=vera)
    assert out.returncode == 1 and "admin.revoke needs role admin" in out.stderr, out.stderr
    async with fleet.client(vera) as client:
        with pytest.raises(RemoteError, match=r"admin\.list needs role admin"):
            await client.call("admin.list")

    async with fleet.client(dave) as held:  # the deployer's certificate works, and stays open
        await held.call("hosts.list")
        out = await cli(fleet, "admin", "revoke", "dave", "--json")
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout)
        assert answer["revoked"] == [entry["serial"]] and answer["disconnected"] == 1
        with trio.fail_after(10), pytest.raises(ConnectionClosed):
            await held.call("hosts.list")  # its open connection was dropped

    await refused(fleet, dave)
    out = await cli(fleet, "hosts", credential=dave)
    assert out.returncode == 1 and "revoked" in out.stderr, out.stderr
    out = await cli(fleet, "admin", "revoke", "dave")
    assert out.returncode == 0 and "revoked already" in out.stdout, out.stdout

    # Names that hold no operator certificate are refused, pointing the right way.
    async with fleet.client() as client:
        with pytest.raises(RemoteError, match="no operator certificate was ever issued"):
            await client.call("admin.revoke", name="nobody")
        with pytest.raises(RemoteError, match="is a host, not an operator") as host:
            await client.call("admin.revoke", name="web-1")
    assert "`shoal hosts revoke web-1`" in str(host.value)

    # The revocation survives a restart: the CRL comes from the CA's index on disk.
    assert fleet.seeder is not None
    await fleet.stop(fleet.seeder)
    await fleet.start_seeder()
    await refused(fleet, dave)
    (after,) = (await listed(fleet))["dave"]
    assert after["state"] == "revoked" and after["revoked_at"] is not None
    async with fleet.client(vera) as client:  # the others are untouched
        await client.call("hosts.list")


async def test_the_last_admin_certificate_cannot_be_revoked(fleet: LocalFleet) -> None:
    await fleet.start_seeder()
    out = await cli(fleet, "admin", "revoke", "admin")
    assert out.returncode == 1 and "the last admin certificate in force" in out.stderr
    assert "shoal admin cert NAME --role admin" in out.stderr
    async with fleet.client() as client:
        await client.call("hosts.list")  # nothing was revoked

    alice = await issue(fleet, "alice", "admin")
    async with fleet.client(alice) as client:
        await client.call("admin.revoke", name="admin")
        with pytest.raises(RemoteError, match="last admin certificate"):
            await client.call("admin.revoke", name="alice")
    await refused(fleet, fleet.credential)  # the first admin is out

    # With another admin in force, an admin may revoke itself: it hears the answer, then its
    # connection ends.
    bob = await issue(fleet, "bob", "admin", by=alice)
    async with fleet.client(alice) as own:
        answer = await own.call("admin.revoke", name="alice")
        assert answer["disconnected"] == 1
        with trio.fail_after(10), pytest.raises(ConnectionClosed):
            await own.call("hosts.list")
    await refused(fleet, alice)
    async with fleet.client(bob) as client:
        with pytest.raises(RemoteError, match="last admin certificate"):
            await client.call("admin.revoke", name="bob")
        states = {c["name"]: c["state"] for c in (await client.call("admin.list"))["certificates"]}
    assert states == {"admin": "revoked", "alice": "revoked", "bob": "active"}
