"""The control methods of join tokens: ``token.create``, ``token.list``, ``token.revoke``.

Admin only (the role table is :mod:`seeder.roles`). ``token.create`` answers with the token
string, the one time its secret is ever shown; the store keeps its SHA-256. Who made or revoked
a token is the caller of the request (:func:`seeder.caller.current_caller`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from common.crypto.tokens import new_token, secret_digest
from common.errors import ConfigError, ShoalError
from common.join import JoinError
from seeder.caller import current_caller
from seeder.control import Handler
from seeder.join_policy import MAX_TTL, MAX_USES, TokenRecord, check_labels
from seeder.store import Store

DEFAULT_TTL = 3600.0
MAX_PATTERN = 253


class UnknownToken(ShoalError):
    """No join token has that id."""


def token_methods(
    store: Store, ca_pin: str, clock: Callable[[], float] = time.time
) -> dict[str, Handler]:
    async def create(params: dict[str, Any]) -> dict[str, Any]:
        ttl = float(params.get("ttl", DEFAULT_TTL))
        if not 0 < ttl <= MAX_TTL or math.isnan(ttl):
            raise ConfigError(f"--ttl must be more than 0 and at most {MAX_TTL:.0f}s (a week)")
        uses = params.get("uses", 1)
        if not isinstance(uses, int) or isinstance(uses, bool) or not 1 <= uses <= MAX_USES:
            raise ConfigError(f"--uses must be a whole number from 1 to {MAX_USES}")
        labels = params.get("labels") or {}
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise ConfigError("--labels must be KEY=VALUE pairs")
        try:
            check_labels(labels, whose="the token")
        except JoinError as exc:
            raise ConfigError(str(exc)) from None
        pattern = str(params.get("name_pattern") or "")
        if len(pattern) > MAX_PATTERN or not pattern.isprintable():
            raise ConfigError("--name-pattern must be a printable glob of at most 253 characters")
        now = clock()
        token = new_token(ca_pin)
        record = TokenRecord(
            token_id=token.token_id,
            digest=secret_digest(token.secret),
            created_at=now,
            expires_at=now + ttl,
            uses=uses,
            uses_left=uses,
            labels=dict(labels),
            name_pattern=pattern,
            created_by=current_caller().name,
        )
        store.add_token(record)
        return {"token": str(token), **record.view(now)}

    async def list_tokens(params: dict[str, Any]) -> dict[str, Any]:
        now = clock()
        return {"tokens": [t.view(now) for t in store.tokens()]}

    async def revoke(params: dict[str, Any]) -> dict[str, Any]:
        token_id = str(params["token_id"]).strip().lower()
        if not store.revoke_token(token_id, clock()):
            raise UnknownToken(f"no join token {token_id!r} (`shoal token list` shows them)")
        found = store.token(token_id)
        assert found is not None
        return {"token": found.view(clock())}

    return {"token.create": create, "token.list": list_tokens, "token.revoke": revoke}
