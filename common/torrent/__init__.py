"""The libtorrent adapter: the one package in shoal that imports libtorrent.

Callers see infohashes as hex strings and plain Python values, never libtorrent objects, and
:class:`~common.errors.TorrentError` for anything libtorrent reports (translated here, once).

- :mod:`.metainfo`: deterministic hybrid (v1+v2) torrents of release archives
- :mod:`.bencoding`: bencode/bdecode with strict types (the tracker's replies)
- :mod:`.settings`: the session settings for a datacenter, and operator overrides
- :mod:`.session`: a libtorrent session driven by trio (seeding, downloading, alerts)
- :mod:`.slices`: the seeder's slice seeds (each piece leaves the seeder about once)
- :mod:`.access`: a closed swarm's IP filter and tracker keys in announce URLs
"""

from common.torrent.access import keyed_url
from common.torrent.bencoding import Bencodable, bdecode, bencode
from common.torrent.metainfo import (
    choose_piece_size,
    make_torrent,
    piece_size_of,
    torrent_hashes,
    torrent_infohash,
    tracker_hashes,
    with_announce,
)
from common.torrent.session import TorrentSession, TransferStats
from common.torrent.settings import datacenter_settings, parse_overrides
from common.torrent.slices import SliceSeeds

__all__ = [
    "Bencodable",
    "SliceSeeds",
    "TorrentSession",
    "TransferStats",
    "bdecode",
    "bencode",
    "choose_piece_size",
    "datacenter_settings",
    "keyed_url",
    "make_torrent",
    "parse_overrides",
    "piece_size_of",
    "torrent_hashes",
    "torrent_infohash",
    "tracker_hashes",
    "with_announce",
]
