"""The live control connections, by the certificate holder behind each, so that revoking a
certificate ends its connections at once (the CRL only refuses the handshakes after it)."""

from __future__ import annotations

from contextvars import ContextVar

import trio

from common.crypto.certs import Holder

# The cancel scope of the connection whose request is being handled (set per connection task).
_CONNECTION: ContextVar[trio.CancelScope | None] = ContextVar("shoal_connection", default=None)


class Connections:
    """The live control connections by certificate holder, so a revocation can end them.

    A connection that revokes its own certificate (an admin revoking a name it holds) gets its
    answer first and is closed right after it, so its operator learns that the revocation
    happened."""

    def __init__(self) -> None:
        self._scopes: dict[Holder, set[trio.CancelScope]] = {}
        self._after_answer: set[trio.CancelScope] = set()

    def add(self, who: Holder, scope: trio.CancelScope) -> None:
        self._scopes.setdefault(who, set()).add(scope)

    def discard(self, who: Holder, scope: trio.CancelScope) -> None:
        self._after_answer.discard(scope)
        scopes = self._scopes.get(who, set())
        scopes.discard(scope)
        if not scopes:
            self._scopes.pop(who, None)

    def disconnect(self, *holders: Holder) -> int:
        """End every live connection of ``holders`` now (the one asking: after its answer);
        how many there were."""
        current = _CONNECTION.get()
        count = 0
        for who in holders:
            for scope in self._scopes.get(who, set()):
                count += 1
                if scope is current:
                    self._after_answer.add(scope)
                else:
                    scope.cancel()
        return count

    @staticmethod
    def enter(scope: trio.CancelScope) -> None:
        """The calling task serves the connection of ``scope`` (its requests see it)."""
        _CONNECTION.set(scope)

    def answered(self) -> None:
        """The current connection sent an answer: end it if it revoked its own certificate."""
        scope = _CONNECTION.get()
        if scope is not None and scope in self._after_answer:
            scope.cancel()
