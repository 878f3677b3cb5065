"""The seeder's identity and mutual TLS, tried for real: real seeder and peer processes, the
real CLI, real sockets. Each refusal the security issue lists is attempted here."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from common import messages as m
from common.channel import connect
from common.crypto import certs
from common.errors import ConnectionClosed, RemoteError, TLSRefused
from common.tls import ClientTLS
from seeder.authority import identity_dir
from seeder.localfleet import LocalFleet
from tests.conftest import make_app_repo

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, env=env
    )


def credential(
    fleet: LocalFleet, name: str, role: str, *, ca: certs.Authority | None = None, **kw: object
) -> Path:
    """A credential file issued straight from a CA (the fleet's by default), outside the index:
    for certificates the seeder would never issue (expired ones, another CA's, a host's as a
    CLI credential)."""
    d = identity_dir(fleet.seeder_dir)
    authority = ca or certs.Authority.from_pem(
        (d / "ca.crt").read_bytes(), (d / "ca.key").read_bytes()
    )
    key = certs.generate_key()
    cert = authority.issue(key.public_key(), name, role, now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]
    path = fleet.root / f"{name}-{role}.pem"
    certs.write_private(path, certs.Credential(cert, key, authority.cert).to_pem(), overwrite=True)
    return path


def test_init_makes_the_identity_once_and_run_refuses_without_one(tmp_path: Path) -> None:
    data = tmp_path / "seeder"
    run_out = run("-m", "seeder.cli", "seeder", "run", "--data-dir", str(data),
                  "--listen", "127.0.0.1:0")  # fmt: skip
    assert run_out.returncode == 1
    assert f"shoal seeder init --data-dir {data}" in run_out.stderr, run_out.stderr

    out = run("-m", "seeder.cli", "seeder", "init", "--data-dir", str(data), "--host",
              "seeder.example", "--host", "10.1.2.3", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    ident = Path(info["identity"])
    for name in ("ca.key", "seeder.key", "release-signing.key", "admin.pem"):
        assert stat.S_IMODE((ident / name).stat().st_mode) == 0o600, name
    for name in ("ca.crt", "seeder.crt", "release-signing.pub"):
        assert (ident / name).is_file(), name
    server = certs.load_certificate((ident / "seeder.crt").read_bytes())
    assert certs.holder(server) == certs.Holder("seeder", "seeder")
    sans = server.extensions.get_extension_for_class(certs.x509.SubjectAlternativeName).value
    assert {str(v) for v in sans.get_values_for_type(certs.x509.DNSName)} == {"seeder.example"}
    assert [str(v) for v in sans.get_values_for_type(certs.x509.IPAddress)] == ["10.1.2.3"]
    admin = certs.Credential.from_pem((ident / "admin.pem").read_bytes())
    assert certs.holder(admin.cert).role == "admin"
    certs.check_signing_public((ident / "release-signing.pub").read_bytes())

    before = (ident / "ca.key").read_bytes()
    again = run("-m", "seeder.cli", "seeder", "init", "--data-dir", str(data))
    assert again.returncode == 1 and "already holds a seeder identity" in again.stderr
    assert (ident / "ca.key").read_bytes() == before


async def test_the_cli_needs_a_credential_of_the_seeders_ca(fleet: LocalFleet) -> None:
    await fleet.start_seeder()
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_IDENTITY"}
    bare = await trio.to_thread.run_sync(
        lambda: run("-m", "seeder.cli", "hosts", "--seeder", str(fleet.control), env=env)
    )
    assert bare.returncode == 1
    assert "no credentials: pass --identity or set SHOAL_IDENTITY" in bare.stderr

    evil = certs.Authority.create("evil", NOW)
    stranger = credential(fleet, "mallory", "admin", ca=evil)
    out = await trio.to_thread.run_sync(lambda: fleet.cli("hosts", credential=stranger))
    assert out.returncode == 1 and "refused the remote certificate" in out.stderr, out.stderr
    # ... and one that trusts the seeder but presents another CA's certificate is refused
    assert fleet.control is not None
    ca_pem = (identity_dir(fleet.seeder_dir) / "ca.crt").read_bytes()
    with pytest.raises(TLSRefused, match="refused our certificate") as caught:
        async with await connect(fleet.control, ClientTLS(stranger, None, ca_pem)) as channel:
            await channel.send(m.ClientHello(client="mallory"))
            await channel.receive()
    assert caught.value.ours

    then = NOW - dt.timedelta(days=10)
    expired = credential(fleet, "old", "admin", now=then, not_after=then + dt.timedelta(days=1))
    out = await trio.to_thread.run_sync(lambda: fleet.cli("hosts", credential=expired))
    assert out.returncode == 1 and "expired" in out.stderr, out.stderr

    out = await trio.to_thread.run_sync(lambda: fleet.cli("hosts", "--json"))
    assert out.returncode == 0 and json.loads(out.stdout) == []
    log = (fleet.root / "logs" / "seeder.log").read_text()
    assert "refused a connection from" in log


@pytest.mark.slow
async def test_roles_decide_what_a_caller_may_do(fleet: LocalFleet, tmp_path: Path) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    await fleet.start_seeder()
    await fleet.start_peer("web-1", "127.0.0.2")
    async with fleet.client() as client:
        await fleet.wait_connected(client, ["web-1"])
    viewer, deployer = tmp_path / "viewer.pem", tmp_path / "deployer.pem"
    for who, path in (("vera", viewer), ("dave", deployer)):
        role = path.stem
        out = await trio.to_thread.run_sync(
            lambda w=who, r=role, p=path: fleet.cli(  # type: ignore[misc]
                "admin", "cert", w, "--role", r, "--out", str(p), "--json"
            )
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["role"] == role
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    release_id = await trio.to_thread.run_sync(fleet.build_release, repo)

    # A viewer reads, and may not start a rollout.
    out = await trio.to_thread.run_sync(lambda: fleet.cli("hosts", "--json", credential=viewer))
    assert out.returncode == 0 and [h["name"] for h in json.loads(out.stdout)] == ["web-1"]
    out = await trio.to_thread.run_sync(
        lambda: fleet.cli("rollout", "start", release_id, credential=viewer)
    )
    assert out.returncode == 1 and "needs role deployer" in out.stderr, out.stderr

    # A deployer rolls out, and may not enroll, revoke or issue certificates.
    for args in (
        ("enroll", "web-9", "--out", str(tmp_path / "b.json")),
        ("hosts", "revoke", "web-1"),
        ("admin", "cert", "eve", "--role", "admin", "--out", str(tmp_path / "eve.pem")),
    ):
        out = await trio.to_thread.run_sync(
            lambda a=args: fleet.cli(*a, credential=deployer)  # type: ignore[misc]
        )
        assert out.returncode == 1 and "needs role admin" in out.stderr, (args, out.stderr)
    assert not (tmp_path / "b.json").exists() and not (tmp_path / "eve.pem").exists()
    out = await trio.to_thread.run_sync(
        lambda: fleet.cli("rollout", "start", release_id, "--wait", credential=deployer)
    )
    assert out.returncode == 0, out.stdout + out.stderr

    # A host's certificate speaks the peer protocol only: no operator method at all.
    host = credential(fleet, "web-1", "host")
    out = await trio.to_thread.run_sync(lambda: fleet.cli("hosts", credential=host))
    assert out.returncode == 1 and "a host certificate may not call hosts.list" in out.stderr


async def test_a_hello_must_name_the_host_of_its_certificate(fleet: LocalFleet) -> None:
    control = await fleet.start_seeder()
    bundle = await fleet.enroll("web-1")
    home = fleet.root / "impostor"
    installed = await trio.to_thread.run_sync(
        lambda: run("-m", "peer.cli", "enroll", "--bundle", str(bundle), "--data-dir", str(home))
    )
    assert installed.returncode == 0, installed.stderr
    assert stat.S_IMODE((home / "identity" / "host.key").stat().st_mode) == 0o600
    ident = home / "identity"
    tls = ClientTLS(ident / "host.crt", ident / "host.key", (ident / "ca.crt").read_bytes())
    async with await connect(control, tls) as channel:
        await channel.send(m.Hello(name="web-2", address="127.0.0.9", bt_port=1, labels={}))
        with pytest.raises(ConnectionClosed, match="certificate is 'web-1'"):
            await channel.receive()
    # An operator certificate cannot register as a host either.
    async with await connect(control, fleet.tls()) as channel:
        await channel.send(m.Hello(name="admin", address="127.0.0.9", bt_port=1, labels={}))
        with pytest.raises(ConnectionClosed, match="cannot register as a host"):
            await channel.receive()
    async with fleet.client() as client:
        assert (await client.call("hosts.list"))["hosts"] == []
    # The peer daemon refuses to start under another name than its certificate's.
    out = await trio.to_thread.run_sync(
        lambda: run(
            "-m",
            "peer.cli",
            "run",
            "--seeder",
            str(control),
            "--data-dir",
            str(home),
            "--name",
            "web-2",
        )
    )
    assert out.returncode == 1 and "differs from the host its certificate names" in out.stderr


def test_a_peer_without_identity_refuses_to_start(tmp_path: Path) -> None:
    out = run("-m", "peer.cli", "run", "--seeder", "127.0.0.1:9", "--data-dir", str(tmp_path))
    assert out.returncode == 1
    assert "has no identity" in out.stderr and "shoal enroll NAME --out FILE" in out.stderr


async def test_enroll_then_revoke_drops_the_host_for_good(fleet: LocalFleet) -> None:
    await fleet.start_seeder()
    out = await trio.to_thread.run_sync(
        lambda: fleet.cli(
            "enroll",
            "web-1",
            "--labels",
            "env=prod,rack=r1",
            "--out",
            str(fleet.root / "web-1.json"),
            "--json",
        )
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["labels"] == {"env": "prod", "rack": "r1"}
    fleet.bundles["web-1"] = fleet.root / "web-1.json"
    await fleet.start_peer("web-1", "127.0.0.2", labels="env=dev,zone=a")
    await fleet.start_peer("web-2", "127.0.0.3")
    async with fleet.client() as client:
        await fleet.wait_connected(client, ["web-1", "web-2"])
        hosts = {h["name"]: h for h in (await client.call("hosts.list"))["hosts"]}
    # the labels it was enrolled with win over what its Hello claims
    assert hosts["web-1"]["labels"] == {"env": "prod", "rack": "r1", "zone": "a"}

    out = await trio.to_thread.run_sync(lambda: fleet.cli("hosts", "revoke", "web-1", "--json"))
    assert out.returncode == 0, out.stderr
    revoked = json.loads(out.stdout)
    assert revoked["name"] == "web-1" and len(revoked["revoked"]) == 1
    assert revoked["disconnected"] == 1

    async def connected() -> set[str]:
        async with fleet.client() as client:
            return {h["name"] for h in (await client.call("hosts.list"))["hosts"] if h["connected"]}

    assert await connected() == {"web-2"}  # dropped at once
    log = fleet.root / "logs" / "web-1.log"
    with trio.fail_after(30):
        while "certificate revoked" not in log.read_text():
            await trio.sleep(0.2)  # the peer retries and is refused in the handshake
    assert fleet.seeder is not None
    await fleet.stop(fleet.seeder)
    await fleet.start_seeder()
    async with fleet.client() as client:
        await fleet.wait_connected(client, ["web-2"], wait=60)
        with trio.move_on_after(3):
            while True:
                assert "web-1" not in await connected(), "a revoked host came back"
                await trio.sleep(0.3)
        with pytest.raises(RemoteError, match="no host certificate was ever issued"):
            await client.call("hosts.revoke", name="web-7")


async def test_a_revoked_certificate_is_refused_in_the_handshake(fleet: LocalFleet) -> None:
    control = await fleet.start_seeder()
    bundle = await fleet.enroll("web-1")
    home = fleet.root / "h"
    await trio.to_thread.run_sync(
        lambda: run("-m", "peer.cli", "enroll", "--bundle", str(bundle), "--data-dir", str(home))
    )
    ident = home / "identity"
    tls = ClientTLS(ident / "host.crt", ident / "host.key", (ident / "ca.crt").read_bytes())
    async with fleet.client() as client:
        await client.call("hosts.revoke", name="web-1")
    with pytest.raises(TLSRefused, match="revoked") as caught:
        async with await connect(control, tls) as channel:
            await channel.send(m.Hello(name="web-1", address="127.0.0.9", bt_port=1, labels={}))
            await channel.receive()
    assert caught.value.ours  # the seeder refused our certificate
