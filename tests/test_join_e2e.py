"""Enrolling hosts with join tokens, end to end: the real seeder, the real ``shoal`` and
``shoal-peer`` commands, real sockets and TLS. A joined host then runs with ``shoal-peer run
--data-dir D`` alone, connects over mutual TLS and shows in ``shoal hosts``."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import trio

from common.errors import ShoalError
from seeder.localfleet import LocalFleet

pytestmark = pytest.mark.integration


def _token(fleet: LocalFleet, *args: str) -> dict[str, object]:
    out = fleet.cli("token", "create", *args, "--json")
    assert out.returncode == 0, out.stderr
    made: dict[str, object] = json.loads(out.stdout)
    return made


async def test_join_then_run_with_only_the_data_dir(fleet: LocalFleet) -> None:
    await fleet.start_seeder()
    plain = fleet.cli("token", "create", "--uses", "2", "--ttl", "2h", "--labels", "env=prod")
    assert plain.returncode == 0, plain.stderr
    token = plain.stdout.strip()
    assert token.startswith("shoal1.") and "\n" not in token  # stdout is the token, for $(...)
    assert (
        "shoal-peer join --seeder" in plain.stderr and "2 use(s), labels env=prod," in plain.stderr
    )

    joined = fleet.join("web-1", token, "--labels", "rack=r1")
    assert joined.returncode == 0, joined.stderr
    assert "joined as web-1 (labels: env=prod,rack=r1)" in joined.stdout
    again = fleet.join("web-1", token, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["joined"] is False  # a no-op, and it says so

    await fleet.start_joined_peer("web-1")
    async with fleet.client() as client:
        await fleet.wait_connected(client, ["web-1"])
    hosts = fleet.cli("hosts", "--json")
    assert hosts.returncode == 0, hosts.stderr
    (host,) = [h for h in json.loads(hosts.stdout) if h["name"] == "web-1"]
    assert host["connected"] and host["labels"] == {"env": "prod", "rack": "r1"}

    listing = fleet.cli("token", "list", "--json")
    (record,) = json.loads(listing.stdout)
    assert (record["uses"], record["uses_left"], record["state"]) == (2, 1, "active")
    assert record["created_by"] == "admin" and "digest" not in record
    assert token.split(".")[2] not in listing.stdout  # the secret is never shown again


async def test_used_up_expired_and_revoked_tokens(fleet: LocalFleet) -> None:
    await fleet.start_seeder()
    once = str(_token(fleet, "--uses", "1")["token"])
    assert fleet.join("web-1", once).returncode == 0
    used = fleet.join("web-2", once)
    assert used.returncode == 1 and "is used up (all 1 use(s) taken)" in used.stderr
    assert not (fleet.peer_dir("web-2") / "identity").exists()

    short = str(_token(fleet, "--ttl", "1s")["token"])
    await trio.sleep(1.5)
    expired = fleet.join("web-3", short)
    assert expired.returncode == 1 and "expired" in expired.stderr

    made = _token(fleet, "--uses", "5")
    revoked = fleet.cli("token", "revoke", str(made["token_id"]), "--json")
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["state"] == "revoked"
    refused = fleet.join("web-4", str(made["token"]))
    assert refused.returncode == 1 and "was revoked" in refused.stderr
    unknown = fleet.cli("token", "revoke", "0123456789ab")
    assert unknown.returncode == 1 and "no join token '0123456789ab'" in unknown.stderr


async def test_a_live_name_cannot_be_joined_again_until_revoked(fleet: LocalFleet) -> None:
    await fleet.start_seeder()
    token = str(_token(fleet, "--uses", "3")["token"])
    assert fleet.join("web-1", token).returncode == 0
    other = fleet.root / "elsewhere"
    twin = fleet.join("web-1", token, "--data-dir", str(other))  # the later --data-dir wins
    assert twin.returncode == 1 and "already enrolled" in twin.stderr, twin.stderr
    assert fleet.cli("hosts", "revoke", "web-1").returncode == 0
    assert fleet.join("web-1", token, "--data-dir", str(other)).returncode == 0


async def test_a_seeder_with_another_ca_at_the_address_is_refused(tmp_path: Path) -> None:
    first = LocalFleet(tmp_path / "first")
    try:
        await first.start_seeder()
        token = str(_token(first, "--uses", "1")["token"])
        await first.stop_all()
        # another seeder (its own CA) now answers at the same address
        second = LocalFleet(tmp_path / "second", control=first.control)
        try:
            await second.start_seeder()
            out = first.join("web-1", token)
            assert first.control is not None
            at = f"{first.control.host}:{first.control.port + 3}"
            assert out.returncode == 1
            assert (
                f"CA pin mismatch: the seeder at {at} is not the one this token was made for"
                in (out.stderr)
            )
            assert not (first.peer_dir("web-1") / "identity").exists()
        finally:
            await second.stop_all()
    finally:
        await first.stop_all()


async def test_only_an_admin_makes_tokens(fleet: LocalFleet) -> None:
    await fleet.start_seeder()
    viewer = fleet.root / "viewer.pem"
    made = fleet.cli("admin", "cert", "vera", "--role", "deployer", "--out", str(viewer))
    assert made.returncode == 0, made.stderr
    refused = fleet.cli("token", "create", credential=viewer)
    assert refused.returncode == 1 and "token.create needs role admin" in refused.stderr
    bad = fleet.cli("token", "create", "--uses", "0")
    assert bad.returncode == 1 and "--uses must be a whole number" in bad.stderr
    bad_ttl = fleet.cli("token", "create", "--ttl", "soon")
    assert bad_ttl.returncode == 2 and "--ttl" in bad_ttl.stderr


async def test_a_taken_join_port_is_an_error_naming_the_option(fleet: LocalFleet) -> None:
    with socket.socket() as taken:
        taken.bind((fleet.seeder_ip, 0))
        taken.listen()
        at = f"{fleet.seeder_ip}:{taken.getsockname()[1]}"
        with pytest.raises(
            ShoalError, match=r"join listener cannot listen on \S+ \(--join-listen\)"
        ):
            await fleet.start_seeder(extra=("--join-listen", at))
