"""Bencoding (BEP 3) through libtorrent's own encoder and decoder, with strict types.

libtorrent's ``bencode`` quietly turns ``True`` into ``i1e`` and a float into an empty string;
this wrapper refuses both, so a wrong value is a bug found at once rather than a corrupt reply
sent to a client. Text is encoded as UTF-8; dictionary keys must be bytes (BEP 3 sorts them as
raw strings, which libtorrent does).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import libtorrent as lt

from common.errors import TorrentError

Bencodable: TypeAlias = "int | bytes | str | list[Bencodable] | dict[bytes, Bencodable]"


def bencode(value: Bencodable) -> bytes:
    """The bencoding of ints, bytes, str (as UTF-8), lists and dicts with bytes keys."""
    return bytes(lt.bencode(_plain(value)))


def bdecode(data: bytes) -> Any:
    """Decode bencoded bytes; :class:`TorrentError` if they are not valid bencoding."""
    try:
        return lt.bdecode(data)
    except RuntimeError as e:
        raise TorrentError(f"not valid bencoding: {e}") from e


def _plain(value: Bencodable) -> Any:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int | bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, bytes) for key in value):
            raise TypeError("bencoded dictionary keys must be bytes")
        return {key: _plain(item) for key, item in value.items()}
    raise TypeError(f"cannot bencode {type(value).__name__}")
