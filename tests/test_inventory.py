"""The Ansible YAML inventory subset and --limit patterns (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from seeder.inventory import load_inventory, parse_inventory

INVENTORY = """
all:
  vars:
    ansible_user: deploy
    env: staging
    shoal_labels: {team: core}
  hosts:
    bastion:
      ansible_host: 10.0.0.9
  children:
    prod:
      vars:
        env: prod
        zone: a
      children:
        web:
          vars:
            zone: b
            shoal_labels: {tier: front}
          hosts:
            web[01:03]:
            web04:
              ansible_host: 10.0.1.4
              ansible_port: 2222
              zone: c
              rack: 012
        db:
          hosts:
            db[a:b]:
              ansible_ssh_private_key_file: /keys/db
"""


def test_hosts_groups_and_connection_vars() -> None:
    inv = parse_inventory(INVENTORY)
    assert [h.name for h in inv.hosts] == [
        "bastion",
        "web01",
        "web02",
        "web03",
        "web04",
        "dba",
        "dbb",
    ]
    web04 = next(h for h in inv.hosts if h.name == "web04")
    assert (web04.address, web04.port, web04.user) == ("10.0.1.4", 2222, "deploy")
    assert web04.groups == ("all", "prod", "web")
    web01 = inv.hosts[1]
    assert (web01.address, web01.port, web01.key_file) == ("web01", 22, None)
    assert inv.hosts[-1].key_file == "/keys/db"
    assert inv.groups["prod"] == ["web01", "web02", "web03", "web04", "dba", "dbb"]


def test_precedence_host_over_child_over_parent_over_all() -> None:
    hosts = {h.name: h for h in parse_inventory(INVENTORY).hosts}
    assert hosts["bastion"].labels == {"team": "core", "env": "staging"}
    assert hosts["web01"].labels == {"team": "core", "tier": "front", "env": "prod", "zone": "b"}
    # host var wins; the rack keeps the digits as written (not YAML 1.1's octal 10)
    assert hosts["web04"].labels["zone"] == "c"
    assert hosts["web04"].labels["rack"] == "012"
    assert hosts["dba"].labels == {"team": "core", "env": "prod", "zone": "a"}


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("web", {"web01", "web02", "web03", "web04"}),
        ("web01:dba", {"web01", "dba"}),
        ("web01,dba", {"web01", "dba"}),
        ("web0*", {"web01", "web02", "web03", "web04"}),
        ("prod:!web", {"dba", "dbb"}),
        ("!prod", {"bastion"}),
        ("all:&db", {"dba", "dbb"}),
        ("web*:&prod:!web02", {"web01", "web03", "web04"}),
        ("d*", {"dba", "dbb"}),  # a glob matches the group db too
    ],
)
def test_limit_patterns(limit: str, expected: set[str]) -> None:
    assert {h.name for h in parse_inventory(INVENTORY).select(limit)} == expected


def test_limit_keeps_inventory_order() -> None:
    assert [h.name for h in parse_inventory(INVENTORY).select("dbb,web02")] == ["web02", "dbb"]


@pytest.mark.parametrize(
    ("limit", "message"),
    [("nosuch", "'nosuch' matches no host or group"), ("~web.*", "not a supported pattern")],
)
def test_bad_limits_are_refused(limit: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_inventory(INVENTORY).select(limit)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[web]\nweb01\n", "INI format is not supported"),
        ("web01 ansible_host=1.2.3.4\n", "INI format is not supported"),
        (
            "all:\n  hosts:\n    a:\n      ansible_host: '{{ ip }}'\n",
            r"all\.hosts\.a\.ansible_host: Jinja templates are not supported",
        ),
        ("all:\n  host:\n    a:\n", r"all\.host: unknown key"),
        (
            "all:\n  children:\n    web:\n      hots: {a: }\n",
            r"all\.children\.web\.hots: unknown key",
        ),
        ("all:\n  hosts: [a, b]\n", r"all\.hosts: must be a mapping"),
        ("all:\n  hosts:\n    web[3:1]:\n", "the range is empty"),
        ("all:\n  hosts:\n    web[1-3]:\n", "a range is"),
        ("all:\n  hosts:\n    a: {ansible_port: 70000}\n", "70000 is not a TCP port"),
        ("all:\n  hosts:\n    a: {shoal_labels: {x: 'a,b'}}\n", "without , = or spaces"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("all:\n  hosts:\n    a:\n    a:\n", "duplicate key"),
        (
            "all:\n  children:\n    x:\n      children:\n        y:\n          children:\n"
            "            x: {}\n",
            "cycle",
        ),
    ],
)
def test_refused_with_the_key_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_inventory(text, "inv.yml")
    assert "inv.yml" in str(info.value)


def test_top_level_groups_besides_all_are_children_of_all() -> None:
    inv = parse_inventory("web:\n  hosts:\n    w1:\ndb:\n  hosts:\n    d1:\n")
    assert [h.name for h in inv.select("all")] == ["w1", "d1"]
    assert inv.hosts[0].groups == ("all", "web")


def test_an_executable_inventory_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "ec2.py"
    script.write_text("#!/usr/bin/env python3\nprint('{}')\n")
    script.chmod(0o755)
    with pytest.raises(ConfigError, match="dynamic inventory script"):
        load_inventory(script)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_inventory(tmp_path / "missing.yml")


def test_a_yaml_alias_cycle_is_refused() -> None:
    with pytest.raises(ConfigError, match="recursive node"):
        parse_inventory("all:\n  children:\n    x: &g\n      children:\n        y: *g\n")
