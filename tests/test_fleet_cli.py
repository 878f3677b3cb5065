"""``shoal fleet hosts``: the real CLI on inventory files (no SSH needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

INVENTORY = """
all:
  vars: {env: prod}
  children:
    web:
      hosts:
        web[1:2]:
          ansible_user: deploy
          shoal_prefix: /srv/shoal
    db:
      hosts:
        db1: {ansible_host: 10.0.0.9, ansible_port: 2200, rack: r7}
"""


def _shoal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seeder.cli", "fleet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hosts_json_shows_what_the_inventory_resolves_to(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text(INVENTORY)
    out = _shoal("hosts", "--inventory", str(inv), "--limit", "web:db1", "--json")
    assert out.returncode == 0, out.stderr
    hosts = {h["name"]: h for h in json.loads(out.stdout)}
    assert list(hosts) == ["web1", "web2", "db1"]
    assert hosts["web1"]["user"] == "deploy" and hosts["web1"]["prefix"] == "/srv/shoal"
    assert hosts["db1"]["address"] == "10.0.0.9" and hosts["db1"]["port"] == 2200
    assert hosts["db1"]["labels"] == {"env": "prod", "rack": "r7"}
    assert hosts["db1"]["data_dir"] == "/var/lib/shoal-peer"
    table = _shoal("hosts", "--inventory", str(inv), "--limit", "!web")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["HOST", "SSH", "GROUPS", "LABELS"]
    assert table.stdout.splitlines()[1].split() == [
        "db1",
        "root@10.0.0.9:2200",
        "db",
        "env=prod,rack=r7",
    ]
    assert "web1" not in table.stdout


def test_bad_inventories_and_limits_are_one_line_errors(tmp_path: Path) -> None:
    ini = tmp_path / "hosts.ini"
    ini.write_text("[web]\nweb1 ansible_host=10.0.0.1\n")
    out = _shoal("hosts", "--inventory", str(ini))
    assert out.returncode == 1
    assert out.stderr.startswith("shoal: error: inventory") and "INI format" in out.stderr
    inv = tmp_path / "inv.yml"
    inv.write_text(INVENTORY)
    out = _shoal("hosts", "--inventory", str(inv), "--limit", "wbe")
    assert out.returncode == 1 and "'wbe' matches no host or group" in out.stderr
    out = _shoal("hosts")
    assert out.returncode == 1 and "give --inventory FILE" in out.stderr
