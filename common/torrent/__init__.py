"""The libtorrent adapter: the one package in shoal that imports libtorrent.

Callers see infohashes as hex strings and plain Python values, never libtorrent objects, and
:class:`~common.errors.TorrentError` for anything libtorrent reports (translated here, once).

- :mod:`.metainfo`: deterministic v2 torrents of release archives
- :mod:`.settings`: the session settings for a datacenter, and operator overrides
- :mod:`.session`: a libtorrent session driven by trio (seeding, downloading, alerts)
- :mod:`.slices`: the seeder's slice seeds (each piece leaves the seeder about once)
"""

from common.torrent.metainfo import choose_piece_size, make_torrent, torrent_infohash
from common.torrent.session import TorrentSession, TransferStats
from common.torrent.settings import datacenter_settings, parse_overrides
from common.torrent.slices import SliceSeeds

__all__ = [
    "SliceSeeds",
    "TorrentSession",
    "TransferStats",
    "choose_piece_size",
    "datacenter_settings",
    "make_torrent",
    "parse_overrides",
    "torrent_infohash",
]
