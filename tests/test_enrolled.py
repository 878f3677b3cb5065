"""The tracker's enrolled check (seeder/closed_swarm.py ``enrolled``) on the real CA and store.

It answers from the CA's index by name (seeder/authority.py ``hosts_in_force``), kept by the one
writer of ``issued.json``; these tests hold it to what a scan of every certificate said: a
revocation counts on the very next announce, expiry is judged at the time of the call, and the
index always says what the file says.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.crypto import certs
from seeder.announcekeys import AnnounceKeys, admission
from seeder.authority import Issued, SeederCA, hosts_in_force, init_identity
from seeder.closed_swarm import enrolled
from seeder.store import HostRecord, Store

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
IP = "10.0.0.1"


class Clock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def authority(tmp_path: Path) -> SeederCA:
    init_identity(tmp_path, ["127.0.0.1"], NOW)
    return SeederCA(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Store(tmp_path / "seeder.db")
    yield db
    db.close()


PUBLIC = certs.public_pem(certs.generate_key().public_key())


def _issue(authority: SeederCA, name: str, role: str = certs.HOST_ROLE, days: int = 1) -> None:
    authority.issue(PUBLIC, name, role, now=NOW, lifetime=days * DAY)


def _register(store: Store, name: str) -> None:
    record = HostRecord(name, IP, 6881, {}, None, [], True, NOW.timestamp())
    store.upsert_host(record, NOW.timestamp())


def _scan(certificates: list[Issued], name: str, now: float) -> bool:
    """What the check was before the index: every certificate, every announce."""
    return any(
        i.name == name and i.role == certs.HOST_ROLE and i.revoked_at is None and i.not_after > now
        for i in certificates
    )


def test_a_revoked_host_is_refused_on_its_very_next_announce(
    authority: SeederCA, store: Store
) -> None:
    clock = Clock()
    keys = AnnounceKeys(os.urandom(32), enrolled=enrolled(store, authority, clock))
    admit = admission(keys, clock)
    _issue(authority, "web-1")
    _register(store, "web-1")
    key = keys.host_key("web-1")
    assert admit(IP, key) is None
    authority.revoke_host("web-1", NOW)  # what `shoal hosts revoke web-1` calls
    assert admit(IP, key) == "host 'web-1' is not enrolled"
    _issue(authority, "web-1")  # enrolled again: a new certificate, the same key works again
    assert admit(IP, key) is None


def test_expiry_is_judged_at_the_time_of_the_call(authority: SeederCA, store: Store) -> None:
    clock = Clock()
    check = enrolled(store, authority, clock)
    _issue(authority, "web-1", days=1)
    _register(store, "web-1")
    clock.now += DAY.total_seconds() - 1
    assert check("web-1")
    clock.now += 1
    assert not check("web-1")  # not_after is not in force
    _issue(authority, "web-1", days=3)  # renewed: the latest expiry counts
    assert check("web-1")


def test_a_certificate_and_a_registration_are_both_needed(
    authority: SeederCA, store: Store
) -> None:
    check = enrolled(store, authority, Clock())
    _issue(authority, "web-1")
    assert not check("web-1")  # never said hello
    _register(store, "web-2")
    assert not check("web-2")  # no certificate
    _issue(authority, "ops", role="deployer")
    _register(store, "ops")
    assert not check("ops")  # an operator's certificate is not a host's
    _register(store, "web-1")
    assert check("web-1")


def test_the_index_says_what_the_file_and_a_scan_say(authority: SeederCA, tmp_path: Path) -> None:
    for name, days in [("a", 1), ("b", 2), ("a", 3), ("c", 1), ("d", 2)]:
        _issue(authority, name, days=days)
    _issue(authority, "b", role="viewer", days=9)
    authority.revoke_host("c", NOW)
    authority.revoke_host("a", NOW)
    _issue(authority, "a", days=1)
    reread = SeederCA(tmp_path)  # what a restart derives from issued.json
    assert hosts_in_force(reread.certificates()) == hosts_in_force(authority.certificates())
    for day in (0, 1, 2, 3):
        now = (NOW + day * DAY).timestamp() - 1
        for name in ("a", "b", "c", "d", "e", "admin", "seeder"):
            want = _scan(authority.certificates(), name, now)
            assert authority.host_in_force(name, now) is want, (name, day)
            assert reread.host_in_force(name, now) is want, (name, day)
