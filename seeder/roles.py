"""Who may call which control method: the one table, method -> the least role that may call it.

Roles rank ``viewer`` < ``deployer`` < ``admin``: a viewer reads (lists, status, watch, logs,
stats); a deployer also builds releases and runs rollouts (start, pause, resume, abort,
rollback, app refs); an admin also enrolls and revokes hosts, issues, lists and revokes
operator certificates and join tokens, and configures applications. Listing credentials
(``admin.list``, ``token.list``) is admin-only although it only reads: who holds which
certificate, and which serials are in force, is the trust configuration an attacker would map
first, and nobody below admin can act on it. A host's certificate may call no method: it only speaks
the peer side of the protocol.

Every method the control server offers must be in :data:`METHOD_ROLES` (the server refuses to
start otherwise), so a new method cannot slip in without someone deciding who may call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from common.errors import ShoalError

VIEWER, DEPLOYER, ADMIN = "viewer", "deployer", "admin"
_RANK = {VIEWER: 0, DEPLOYER: 1, ADMIN: 2}

METHOD_ROLES: dict[str, str] = {
    # reading
    "seeder.stats": VIEWER,
    "hosts.list": VIEWER,
    "release.list": VIEWER,
    "release.show": VIEWER,
    "release.history": VIEWER,
    "release.torrent": VIEWER,
    "release.fetch": VIEWER,
    "rollout.status": VIEWER,
    "rollout.show": VIEWER,
    "rollout.list": VIEWER,
    "rollout.plan": VIEWER,
    "rollout.subscribe": VIEWER,
    "rollout.history": VIEWER,
    "logs.get": VIEWER,
    "logs.subscribe": VIEWER,
    "app.list": VIEWER,
    "app.show": VIEWER,
    "env.list": VIEWER,
    # who holds which credential is the trust configuration, not fleet state: admins only
    "token.list": ADMIN,
    "admin.list": ADMIN,
    # building and rolling out
    "release.build": DEPLOYER,
    "release.build.follow": DEPLOYER,
    "app.refs": DEPLOYER,
    "rollout.preflight": DEPLOYER,
    "rollout.start": DEPLOYER,
    "rollout.pause": DEPLOYER,
    "rollout.resume": DEPLOYER,
    "rollout.abort": DEPLOYER,
    "rollback.start": DEPLOYER,
    "rollout.promote": DEPLOYER,
    # configuring and trusting
    "app.add": ADMIN,
    "app.update": ADMIN,
    "app.set": ADMIN,
    "app.remove": ADMIN,
    "env.set": ADMIN,
    "app.promotion.set": ADMIN,
    "hosts.enroll": ADMIN,
    "hosts.revoke": ADMIN,
    "admin.cert": ADMIN,
    "admin.revoke": ADMIN,
    "token.create": ADMIN,
    "token.revoke": ADMIN,
    "fleet.upgrade": ADMIN,
    # shoal upgrades ship code every host runs as root (seeder/upgrades.py)
    "upgrade.begin": ADMIN,
    "upgrade.put": ADMIN,
    "upgrade.build": ADMIN,
}


class NotPermitted(ShoalError):
    """The caller's role may not call that method."""


def unlisted(methods: Iterable[str], table: Mapping[str, str] = METHOD_ROLES) -> list[str]:
    """The methods that have no role in the table (each is a bug to fix in this module)."""
    return sorted(m for m in methods if m not in table)


def check(role: str, method: str, table: Mapping[str, str] = METHOD_ROLES) -> None:
    """Refuse (NotPermitted) unless ``role`` may call ``method``; unknown methods and roles
    are refused too (fail closed)."""
    needed = table.get(method)
    if needed is None or role not in _RANK:
        who = "a host certificate" if role == "host" else f"role {role!r}"
        raise NotPermitted(f"{who} may not call {method}")
    if _RANK[role] < _RANK[needed]:
        raise NotPermitted(f"{method} needs role {needed} or above; your certificate is {role}")
