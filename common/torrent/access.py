"""Who a libtorrent session talks to: the IP filter of a closed swarm, and the tracker key.

- :func:`allow_only` builds the session's IP filter: every address blocked except the ones given
  (libtorrent then refuses incoming connections from, and never dials, anyone else; it also drops
  connected peers that the new filter blocks). ``None`` lifts the filter. :func:`admitted_by` reads
  one address's verdict back.
- :func:`keyed_url` puts a tracker key into an announce URL (``?hk=...``): the tracker answers only
  announces carrying a key it issued (see ``seeder.announcekeys``). The key is not part of the
  torrent's info dict, so the infohash stays the same for every host.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterable
from typing import Final

import libtorrent as lt

from common.errors import TorrentError

BLOCKED: Final = 1  # lt.ip_filter access flag: 0 allows, 1 blocks
KEY_FIELD: Final = "hk"
MAX_ALLOWED: Final = 10_000  # a fleet of thousands, with room; bounds one filter's size


def allow_only(addresses: Iterable[str] | None) -> lt.ip_filter:
    """An IP filter that blocks everything but ``addresses`` (IPv4 and IPv6); ``None`` (no
    restriction) gives an empty filter that allows everything."""
    f = lt.ip_filter()
    if addresses is None:
        return f
    allowed = sorted({_canonical(a) for a in addresses})
    if len(allowed) > MAX_ALLOWED:
        raise TorrentError(f"{len(allowed)} allowed peer addresses, at most {MAX_ALLOWED}")
    f.add_rule("0.0.0.0", "255.255.255.255", BLOCKED)
    f.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", BLOCKED)
    for ip in allowed:
        f.add_rule(ip, ip, 0)
    return f


def admitted_by(f: lt.ip_filter, address: str) -> bool:
    """Whether ``f`` lets ``address`` connect (and be dialled)."""
    return not int(f.access(_canonical(address))) & BLOCKED


def _canonical(text: str) -> str:
    try:
        addr = ipaddress.ip_address(str(text).split("%", 1)[0])
    except ValueError:
        raise TorrentError(f"{text!r} is not an IP address") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def keyed_url(url: str, key: str | None) -> str:
    """``url`` with the tracker key as its ``hk`` query field (replacing any older one); with
    no key, ``url`` as it is (an exported torrent may carry a key of its own)."""
    if not key:
        return url
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != KEY_FIELD]
    query.append((KEY_FIELD, key))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
