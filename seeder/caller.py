"""Who sent the control request being handled: the operator (or host) behind the connection.

The control server sets :data:`CALLER` for the duration of each request, from the connection's
authenticated identity; method handlers read it with :func:`current_caller` to enforce roles and to
record who did what (a forced promotion, an abort). Outside a request, the caller is the local
operator, so pure code and tests that call handlers directly need no set-up.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    name: str  # the certificate's common name: an operator ("alice") or a host ("web-23")
    role: str  # "admin", "deployer", "viewer" for operators; "host" for peer daemons


LOCAL_OPERATOR = Caller(name="operator", role="admin")
CALLER: ContextVar[Caller] = ContextVar("shoal_caller", default=LOCAL_OPERATOR)


def current_caller() -> Caller:
    """The caller of the request being handled now."""
    return CALLER.get()
