"""The seeder's default ports and whom its tracker may hand the full seed (pure, no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.addr import Address
from common.errors import ConfigError
from seeder.service import SeederConfig, _origin_policy, default_addresses
from seeder.store import HostRecord, Store


def config(listen: str, **kw: Address) -> SeederConfig:
    return SeederConfig(data_dir=Path("/nonexistent"), listen=Address.parse(listen), **kw)


def test_tracker_and_bittorrent_ports_follow_the_control_port() -> None:
    assert default_addresses(config("10.0.0.1:7700")) == (
        Address("10.0.0.1", 7701),
        Address("10.0.0.1", 7702),
    )
    # the same answer on every start: torrents keep a working tracker URL across restarts
    assert default_addresses(config("10.0.0.1:7700")) == default_addresses(config("10.0.0.1:7700"))
    moved = config(
        "10.0.0.1:7700",
        tracker_listen=Address("10.0.0.2", 80),
        torrent_listen=Address("10.0.0.1", 6000),
    )
    assert default_addresses(moved) == (Address("10.0.0.2", 80), Address("10.0.0.1", 6000))
    assert default_addresses(config("127.0.0.1:0")) == (  # tests: all ephemeral
        Address("127.0.0.1", 0),
        Address("127.0.0.1", 0),
    )


def test_bad_port_choices_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="--tracker-listen"):
        default_addresses(config("10.0.0.1:65535"))
    with pytest.raises(ConfigError, match="--torrent-listen"):
        default_addresses(config("10.0.0.1:65534"))
    with pytest.raises(ConfigError, match="concrete IP"):
        default_addresses(config("10.0.0.1:7700", tracker_listen=Address("0.0.0.0", 7701)))


def test_fleet_hosts_never_get_the_full_seed_from_the_tracker_while_slices_are_on(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "seeder.db")
    try:
        host = HostRecord("web-1", "10.0.0.23", 6881, {}, None, [], True, 0.0)
        store.upsert_host(host, 0.0)
        sliced = _origin_policy(store, slices=True)
        assert not sliced("10.0.0.23")
        assert sliced("10.0.0.99")  # an operator's machine, aria2, ...
        assert _origin_policy(store, slices=False)("10.0.0.23")
    finally:
        store.close()
