"""Environments derived from host records and promotion rules: pure logic."""

from __future__ import annotations

from seeder.environments import environments
from seeder.promote_cli import envs_text
from seeder.store import HostRecord


def host(name: str, env: str | None, current: str | None = None) -> HostRecord:
    labels = {"zone": "a"} if env is None else {"env": env, "zone": "a"}
    return HostRecord(name, "127.0.0.1", 1, labels, current, [], False, 0.0)


def test_environments_group_hosts_releases_and_rules() -> None:
    hosts = [
        host("p2", "prod", "web-v1"),
        host("p1", "prod", "web-v1"),
        host("p3", "prod", "web-v2"),
        host("s1", "staging", "web-v2"),
        host("x1", None),
    ]
    rules = {"web": ["qa:staging", "staging:prod"], "api": ["staging:prod"]}
    envs = environments(hosts, {"p1", "s1"}, rules)
    assert [e["env"] for e in envs] == ["prod", "qa", "staging", ""]
    prod, qa, staging, none = envs
    assert prod["hosts"] == ["p1", "p2", "p3"] and prod["connected"] == 1
    assert prod["releases"] == {"web-v1": 2, "web-v2": 1}
    assert prod["rules_in"] == [
        {"app": "api", "rule": "staging:prod"},
        {"app": "web", "rule": "staging:prod"},
    ]
    assert prod["rules_out"] == []
    assert qa == {
        "env": "qa",
        "hosts": [],
        "connected": 0,
        "releases": {},
        "rules_in": [],
        "rules_out": [{"app": "web", "rule": "qa:staging"}],
    }
    assert [r["rule"] for r in staging["rules_out"]] == ["staging:prod", "staging:prod"]
    assert none["hosts"] == ["x1"] and none["releases"] == {}
    lines = envs_text(envs).splitlines()
    assert lines[0].split()[:3] == ["ENV", "HOSTS", "UP"]
    assert lines[1].split()[:5] == ["prod", "3", "1", "web-v1", "(2),"]
    assert "api:staging:prod, web:staging:prod" in lines[1]
    assert lines[4].startswith("(none)")


def test_no_hosts_no_rules() -> None:
    assert environments([], set(), {}) == []
