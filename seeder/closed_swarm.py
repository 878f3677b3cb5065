"""The control methods of a closed swarm and a signed fleet, wrapped around the plain ones.

- ``release.torrent`` with ``allow`` / ``release.fetch`` with ``address``: the machine an operator
  names is admitted to the seeder's full seed for a while (:mod:`seeder.admission`), and an
  exported torrent announces with a tracker key granted to those addresses only. Any role that
  may fetch a release may grant it (it could copy the bytes anyway).
- ``release.build``: the new release's manifest is signed and stored (:mod:`seeder.signatures`).
- ``hosts.revoke``: the revoked host leaves its rollout's swarm at once.
- :func:`enrolled`: whether a host may still use its tracker key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from common.torrent import keyed_url, with_announce
from seeder.announcekeys import AnnounceKeys
from seeder.authority import SeederCA
from seeder.control import Handler
from seeder.engine import Engine
from seeder.store import Store
from seeder.swarm_access import SeederAdmission

GRANT_SECONDS: Final = 3600.0  # how long `release torrent --allow IP` admits IP by default
FETCH_GRACE: Final = 60.0  # a fetch's grant outlasts its --timeout by this much


def granting(
    methods: dict[str, Handler], admitted: SeederAdmission, keys: AnnounceKeys, tracker_url: str
) -> dict[str, Handler]:
    """``release.torrent`` and ``release.fetch`` that admit the machine they are for."""
    plain_torrent, plain_fetch = methods["release.torrent"], methods["release.fetch"]

    async def release_torrent(params: dict[str, Any]) -> dict[str, Any]:
        allow = [str(ip) for ip in params.get("allow") or []]
        result = await plain_torrent(params)
        if allow:
            seconds = float(params.get("allow_for", GRANT_SECONDS))
            until = min(admitted.grant(ip, seconds) for ip in allow)
            url = keyed_url(tracker_url, keys.grant_key(allow, until))
            result["torrent"] = with_announce(bytes(result["torrent"]), url)
            result["allowed"] = {"addresses": allow, "until": until}
        return result

    async def release_fetch(params: dict[str, Any]) -> dict[str, Any]:
        result = await plain_fetch(params)
        address = params.get("address")
        if address is not None:
            seconds = float(params.get("timeout", GRANT_SECONDS)) + FETCH_GRACE
            until = admitted.grant(str(address), seconds)
            result["allowed"] = {"addresses": [str(address)], "until": until}
        return result

    return {"release.torrent": release_torrent, "release.fetch": release_fetch}


def leaving_the_swarm(revoke: Handler, engine: Engine) -> Handler:
    """``hosts.revoke``, and the revoked host leaves its rollout's swarm at once."""

    async def hosts_revoke(params: dict[str, Any]) -> dict[str, Any]:
        result = await revoke(params)
        engine.host_left(str(params["name"]))
        return result

    return hosts_revoke


def enrolled(
    store: Store, authority: SeederCA, clock: Callable[[], float] = time.time
) -> Callable[[str], bool]:
    """Whether host ``name`` may use its tracker key: holding a host certificate that is neither
    revoked nor expired (the CA's index by name, a dict lookup), and registered (one indexed
    query). O(1) per announce, however many hosts the fleet has."""

    def check(name: str) -> bool:
        return authority.host_in_force(name, clock()) and store.is_host(name)

    return check
