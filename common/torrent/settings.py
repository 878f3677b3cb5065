"""libtorrent settings for a fleet on a fast, trusted network, and operator overrides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import libtorrent as lt

from common.errors import ConfigError
from common.torrent.metainfo import MiB

ALERT_MASK: Final = (
    lt.alert_category.error
    | lt.alert_category.status
    | lt.alert_category.storage
    | lt.alert_category.tracker
    | lt.alert_category.performance_warning
)


def datacenter_settings(listen_ip: str, port: int) -> dict[str, Any]:
    """libtorrent settings for a fleet on a fast, trusted network (the one place to tune them).

    Base: high_performance_seed(). TCP only (uTP is ~3.5x slower here), no encryption, no
    DHT/LSD/UPnP/NAT-PMP (private torrents; peers come from the tracker and connect_peer),
    listening AND dialling from `listen_ip` so every host shows up with its own address.
    """
    host = f"[{listen_ip}]" if ":" in listen_ip else listen_ip
    return {
        **lt.high_performance_seed(),
        "listen_interfaces": f"{host}:{port}",
        "outgoing_interfaces": listen_ip,
        "listen_system_port_fallback": False,  # a taken port is an error, not another port
        "max_retry_port_bind": 0,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "mixed_mode_algorithm": lt.bandwidth_mixed_algo_t.prefer_tcp,
        "out_enc_policy": lt.enc_policy.disabled,
        "in_enc_policy": lt.enc_policy.disabled,
        "seed_choking_algorithm": lt.seed_choking_algorithm_t.fastest_upload,
        "max_queued_disk_bytes": 64 * MiB,  # hps sets 7 MiB: peers stop reading when full
        "send_buffer_watermark": 16 * MiB,
        "send_buffer_low_watermark": 4 * MiB,
        # Keep only a couple of block requests outstanding per connection: requests go to
        # whoever can serve them now instead of queueing seconds deep at one uploader, which
        # measured 1.49x -> 1.23x of the bound on 16 hosts (bench/README.md). Raise it for
        # links with a large bandwidth-delay product (--torrent-setting request_queue_time=3).
        "request_queue_time": 0,
        # libtorrent drops "redundant" connections, including a fresh seed that a leecher
        # judged uninteresting a moment before the seed's HAVE arrived: the leecher then lost
        # its only source for seconds (seen with slices; bench/README.md). Keep them.
        "close_redundant_connections": False,
        # libtorrent's housekeeping tick (unchoking new connections among it) every 100 ms
        # instead of 500: the first piece of a release arrived after 0.5 s, now 0.1 s.
        "tick_interval": 100,
        "max_failcount": 3,  # hps sets 1: one refused connect would drop a peer for good
        # A peer dialled before it applied the rollout's swarm members (its ip filter still
        # closed) refuses; libtorrent's default 60 s before redialling it then shifted that
        # peer's pieces onto the seeder for a minute (a late filter: 60.4 s -> 1.1 s, isolated).
        "min_reconnect_time": 2,
        "peer_timeout": 60,
        "inactivity_timeout": 60,
        "request_timeout": 60,
        "rate_limit_ip_overhead": False,
        # Two disk threads and one hashing thread carry a peer's 25-100 Mbit/s: with 8 and 4
        # the threads cost more to wake than they did (35.9 vs 39.1 cpu-s/GB, bench/README.md).
        "aio_threads": 2,
        "hashing_threads": 1,
        # The seeder offers slices on several ports of one IP (see common.torrent.slices).
        "allow_multiple_connections_per_ip": True,
        # Fast swarms: accept a short interval from our own tracker, announce everywhere,
        # and don't let a dead tracker hold up shutdown.
        "announce_to_all_tiers": True,
        "announce_to_all_trackers": True,
        "min_announce_interval": 5,
        "stop_tracker_timeout": 1,
        # The ip filter only pauses peer connections to the seeder (see SlicePlan), never the
        # tracker that runs on the same address.
        "apply_ip_filter_to_trackers": False,
        # ssrf_mitigation stays on: it only requires loopback trackers to use /announce paths.
        "alert_mask": ALERT_MASK,
    }


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """Typed libtorrent settings from ``KEY=VALUE`` strings (``--torrent-setting``), checked
    against libtorrent's own list so a typo is an error instead of a silently ignored key."""
    defaults: dict[str, Any] = dict(lt.default_settings())
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in defaults:
            raise ConfigError(
                f"--torrent-setting {pair!r}: not KEY=VALUE with a libtorrent setting"
            )
        kind = type(defaults[key])
        try:
            if kind is bool:
                if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(text)
                out[key] = text.lower() in ("1", "true", "yes", "on")
            elif kind is int:
                out[key] = int(text, 0)
            else:
                out[key] = text
        except ValueError:
            raise ConfigError(
                f"--torrent-setting {pair!r}: {key} takes a {kind.__name__}"
            ) from None
    return out


RATE_LIMITS: Final = ("download_rate_limit", "upload_rate_limit")


def limit_every_peer(ses: lt.session, settings: Mapping[str, Any]) -> None:
    """With a rate limit set, put every peer in the global peer class, where it applies.

    libtorrent exempts private-range peers (its "local" class) from rate limits, and in a
    datacenter every peer is private: without this, an operator's rate limit does nothing."""
    if not any(settings.get(k) for k in RATE_LIMITS):
        return
    every = lt.ip_filter()
    every.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    every.add_rule(
        "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 << lt.session.global_peer_class_id
    )
    ses.set_peer_class_filter(every)
