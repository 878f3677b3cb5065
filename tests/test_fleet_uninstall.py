"""``shoal fleet uninstall`` revokes the hosts it removes: the pieces without SSH.

The host agent's uninstall runs here on a directory tree as it would on a host; the revocation
runs against a real seeder (LocalFleet) over real TLS. The SSH end to end is in
tests/test_fleet_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from common.crypto import certs
from common.errors import ConfigError
from seeder import fleet_agent, fleet_ops, fleet_view
from seeder.authority import Issued, identity_dir
from seeder.client import open_client
from seeder.fleet_install import Options
from seeder.fleet_steps import Failed, HostRun, Reason
from seeder.inventory import InventoryHost
from seeder.localfleet import LocalFleet


def _host_tree(root: Path) -> dict[str, Any]:
    """A host's install as the agent finds it: prefix, config, data dir with an identity."""
    for d in ("opt/shoal/current/bin", "var/shoal-peer/identity"):
        (root / d).mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "peer.yml").write_text("seeder: x\n")
    (root / "var/shoal-peer/state.db").write_text("")
    (root / "var/shoal-peer/identity/host.crt").write_text("")
    return {
        "prefix": str(root / "opt/shoal"),
        "data_dir": str(root / "var/shoal-peer"),
        "config": str(root / "etc/peer.yml"),
        "unit": str(root / "shoal-peer.service"),
        "unit_name": "shoal-peer.service",
        "pidfile": str(root / "peer.pid"),
        "service": "none",
        "purge": False,
    }


@pytest.mark.parametrize(
    ("forget", "purge", "removed", "left"),
    [
        (True, False, ["config", "prefix", "identity"], ["state.db"]),
        (False, False, ["config", "prefix"], ["identity", "state.db"]),
        (True, True, ["config", "prefix", "data"], None),
    ],
)
def test_the_agent_forgets_the_identity_it_is_told_to(
    tmp_path: Path, forget: bool, purge: bool, removed: list[str], left: list[str] | None
) -> None:
    req = {**_host_tree(tmp_path), "forget_identity": forget, "purge": purge}
    done = fleet_agent.uninstall(req)
    assert done["ok"] and done["removed"] == removed
    data = tmp_path / "var/shoal-peer"
    assert (sorted(p.name for p in data.iterdir()) if data.exists() else None) == left
    again = fleet_agent.uninstall(req)  # idempotent: nothing left to remove
    assert again["ok"] and again["removed"] == []


def test_the_report_says_per_host_whether_it_was_revoked() -> None:
    runs = {n: HostRun(n) for n in ("web-1", "web-2", "web-3", "web-4")}
    infos: list[dict[str, Any]] = [
        fleet_ops.revocation(["1a2b"]),
        fleet_ops.revocation([]),
        fleet_ops.revocation(None),
        {"revocation": fleet_ops.KEPT, "revoked": []},
    ]
    for run, info in zip(runs.values(), infos, strict=True):
        run.begin("uninstall", 0.0)
        run.changed("removed prefix")
        run.info.update(info)
        if info["revoked"]:
            run.changed("revoked certificate 1a2b")
        run.finish(1.0)
    assert [r.to_dict()["revocation"] for r in runs.values()] == [
        "revoked",
        "already revoked",
        "never enrolled",
        "kept enrolled",
    ]
    text = fleet_view.report(runs, 0.0, "uninstalled").splitlines()
    assert text[1].endswith("removed prefix, revoked certificate 1a2b")
    assert text[2].endswith("removed prefix, already revoked")
    assert text[3].endswith("removed prefix, never enrolled")
    assert text[4].endswith("removed prefix, kept enrolled")


def _client(fleet: LocalFleet, credential: Path | None = None) -> fleet_ops.ClientFactory:
    assert fleet.control is not None
    control, tls = fleet.control, fleet.tls(credential)
    return lambda: open_client(control, tls)


@pytest.mark.integration
async def test_the_revoker_against_a_real_seeder(fleet: LocalFleet) -> None:
    await fleet.start_seeder()
    await fleet.enroll("web-1")
    await fleet.start_peer("web-1", "127.0.0.2")
    async with fleet.client() as client:
        await fleet.wait_connected(client, ["web-1"])
    revoker = fleet_ops.Revoker(_client(fleet))
    await revoker.check()
    first = await revoker.revoke("web-1")
    assert first["revocation"] == "revoked" and len(first["revoked"]) == 1
    async with fleet.client() as client:  # its connection is dropped and stays refused
        with trio.fail_after(30):
            while any(h["connected"] for h in (await client.call("hosts.list"))["hosts"]):
                await trio.sleep(0.2)
    issued = {f"{i.serial:x}": i for i in _index(fleet)}
    assert issued[first["revoked"][0]].name == "web-1"
    assert issued[first["revoked"][0]].revoked_at is not None
    assert await revoker.revoke("web-1") == {"revocation": "already revoked", "revoked": []}
    assert await revoker.revoke("web-9") == {"revocation": "never enrolled", "revoked": []}

    # A credential that may not revoke is found out before any host is touched.
    viewer = fleet.root / "viewer.pem"
    key = certs.generate_key()
    async with fleet.client() as client:
        answer = await client.call(
            "admin.cert", name="vera", role="viewer", public_key=certs.public_pem(key.public_key())
        )
    ca = certs.load_certificate(answer["ca"])
    certs.write_private(
        viewer, certs.Credential(certs.load_certificate(answer["cert"]), key, ca).to_pem()
    )
    runs = {"web-2": HostRun("web-2")}
    host = InventoryHost("web-2", "127.0.0.9", 1, "root", None, "python3", (), {}, {})
    with pytest.raises(ConfigError, match="--keep-enrolled"):
        await fleet_ops.uninstall_fleet(
            [host],
            Options(known_hosts=fleet.root / "kh"),
            runs,
            fleet_ops.Revoker(_client(fleet, viewer)),
        )
    assert runs["web-2"].state == "pending"  # never dialled

    # A seeder that went away fails that host's revocation with its own reason.
    assert fleet.seeder is not None
    await fleet.stop(fleet.seeder)
    with pytest.raises(Failed) as caught:
        await revoker.revoke("web-1")
    assert caught.value.reason is Reason.REVOKE_FAILED


def _index(fleet: LocalFleet) -> list[Issued]:
    """The CA's index as the seeder wrote it."""
    raw = json.loads((identity_dir(fleet.seeder_dir) / "issued.json").read_text())
    return [Issued.from_dict(d) for d in raw]
