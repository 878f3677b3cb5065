"""A closed swarm's pure parts: tracker keys, the tracker refusing announces without one, the
seeder's time-limited grants and each rollout's swarm members (no sockets, ``now`` passed in)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.torrent import bdecode, keyed_url
from seeder.announcekeys import AnnounceKeys, KeyRefused, admission, load_secret
from seeder.membership import Membership
from seeder.model import RolloutModel, TargetModel
from seeder.store import HostRecord
from seeder.swarm_access import Grants
from seeder.tracker import Tracker
from seeder.waves import Plan, RolloutOptions

ENROLLED = {"web-1", "web-2"}
NOW = 1_000_000.0


def keys(secret: bytes = b"s" * 32) -> AnnounceKeys:
    return AnnounceKeys(secret, enrolled=lambda name: name in ENROLLED)


def test_keys_are_checked_without_a_lookup_and_cannot_be_made_up() -> None:
    k = keys()
    assert k.check(k.host_key("web-1"), "10.0.0.1", NOW) == "h:web-1"
    assert k.check(k.origin_key(), "10.0.0.9", NOW) == "o"
    for bad, reason in [
        (None, "no tracker key"),
        ("", "no tracker key"),
        ("web-1", "malformed"),
        ("h:web-1." + "0" * 32, "unknown tracker key"),
        (keys(b"t" * 32).host_key("web-1"), "unknown tracker key"),  # another seeder's
        (k.host_key("ghost"), "not enrolled"),  # issued once, host since forgotten/revoked
        ("x" * 400, "malformed"),
    ]:
        with pytest.raises(KeyRefused, match=reason):
            k.check(bad, "10.0.0.1", NOW)


def test_a_grant_key_works_only_from_its_addresses_and_until_it_ends() -> None:
    k = keys()
    key = k.grant_key(["10.0.0.50", "127.0.0.1"], NOW + 60)
    assert k.check(key, "10.0.0.50", NOW).startswith("g:")
    assert k.check(key, "127.0.0.1", NOW + 60).startswith("g:")
    with pytest.raises(KeyRefused, match="granted to another address"):
        k.check(key, "10.0.0.51", NOW)
    with pytest.raises(KeyRefused, match="expired"):
        k.check(key, "10.0.0.50", NOW + 61)


def test_the_tracker_answers_only_announces_with_a_key() -> None:
    k = keys()
    tracker = Tracker(admit=admission(k, lambda: NOW), clock=lambda: NOW)
    query = "info_hash=" + "a" * 20 + "&peer_id=" + "p" * 20 + "&port=6881&left=0"

    def get(ip: str, url: str) -> dict[bytes, object]:
        status, body = tracker.respond(ip, url.encode())
        assert status == 200
        reply: dict[bytes, object] = bdecode(body)
        return reply

    ok = get("10.0.0.1", keyed_url("/announce?" + query, k.host_key("web-1")))
    assert b"failure reason" not in ok and b"interval" in ok
    assert tracker.swarm_peers(b"a" * 20) == [("10.0.0.1", 6881)]
    leecher = query.replace("left=0", "left=100")
    other = get("10.0.0.2", keyed_url("/announce?" + leecher, k.host_key("web-2")))
    assert other[b"peers"] == bytes([10, 0, 0, 1]) + (6881).to_bytes(2, "big")
    for url in (
        "/announce?" + query,
        keyed_url("/announce?" + query, "h:web-2." + "1" * 32),
        "/scrape",
    ):
        refused = get("10.0.0.3", url)
        assert b"failure reason" in refused and b"peers" not in refused and b"files" not in refused
    assert tracker.swarm_peers(b"a" * 20) == [("10.0.0.1", 6881), ("10.0.0.2", 6881)]


def test_the_tracker_secret_is_made_once_private_and_kept(tmp_path: Path) -> None:
    first = load_secret(tmp_path)
    assert len(first) == 32 and load_secret(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "tracker.secret").stat().st_mode) == 0o600
    (tmp_path / "tracker.secret").write_bytes(b"short")
    with pytest.raises(ConfigError, match="not a tracker secret"):
        load_secret(tmp_path)


def test_grants_expire_and_are_extended_never_cut() -> None:
    grants = Grants()
    assert grants.grant("10.0.0.5", 60, NOW) == NOW + 60
    assert grants.grant("10.0.0.5", 10, NOW + 1) == NOW + 60  # not shortened
    assert grants.active(NOW + 59) == {"10.0.0.5"}
    assert grants.active(NOW + 60) == set()
    for ip, seconds, reason in [("nope", 5, "not an IP"), ("10.0.0.6", 0, "between"),
                                ("10.0.0.6", float("nan"), "between")]:  # fmt: skip
        with pytest.raises(ConfigError, match=reason):
            grants.grant(ip, seconds, NOW)


def rollout(rid: str, hosts: list[str], token: int) -> RolloutModel:
    r = RolloutModel(
        rollout_id=rid,
        release_id="web-v1",
        selector="all",
        kind="rollout",
        token=token,
        options=RolloutOptions(),
        plan=Plan(waves=[hosts], max_failures=0, wave_max_failures=None, min_staged=1.0),
        created_at=NOW,
        updated_at=NOW,
    )
    for h in hosts:
        r.targets[h] = TargetModel(h, "web-v1", None, 0, updated_at=NOW)
    return r


def test_a_rollouts_swarm_is_its_targets_and_the_seeder_and_follows_their_addresses() -> None:
    hosts = [
        HostRecord(f"web-{i}", f"10.0.0.{i}", 6881, {}, None, [], False, NOW) for i in (1, 2, 3)
    ]
    members = Membership(hosts, ["10.0.0.100"])
    a, b = rollout("ra", ["web-1", "web-2"], 1), rollout("rb", ["web-3", "web-9"], 2)
    assert members.addresses(a) == ["10.0.0.1", "10.0.0.100", "10.0.0.2"]
    assert members.message(b).addresses == ["10.0.0.100", "10.0.0.3"]  # web-9: no address known
    assert members.message(b).token == 2
    assert not members.host_seen("web-1", "10.0.0.1")  # same address: nothing to tell anyone
    assert members.host_seen("web-1", "10.0.0.11")
    assert "10.0.0.11" in members.addresses(a) and "10.0.0.1" not in members.addresses(a)
    assert members.forget("web-2") and "10.0.0.2" not in members.addresses(a)
    assert members.union([a, b]) == {"10.0.0.11", "10.0.0.100", "10.0.0.3"}
