"""The store's join-token table: the tokens ``shoal token create`` issues and joins consume.

Part of :class:`seeder.store.Store` (a mixin on its one connection, so the store is still the
one module that talks to the database; split out to keep one concept per file). Its one writer
is :mod:`seeder.tokens` (create, revoke) with :mod:`seeder.join` (taking a use); what a token
allows is :mod:`seeder.join_policy`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

from seeder.join_policy import TokenRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS join_tokens (
    token_id TEXT PRIMARY KEY, digest TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, uses INTEGER NOT NULL, uses_left INTEGER NOT NULL,
    labels TEXT NOT NULL, name_pattern TEXT NOT NULL, created_by TEXT NOT NULL, revoked_at REAL);
"""


class TokenTables:
    """Methods of :class:`seeder.store.Store` on the ``join_tokens`` table."""

    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def add_token(self, t: TokenRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO join_tokens VALUES (?,?,?,?,?,?,?,?,?,?)",
                (t.token_id, t.digest, t.created_at, t.expires_at, t.uses, t.uses_left,
                 json.dumps(t.labels), t.name_pattern, t.created_by, t.revoked_at),
            )  # fmt: skip

    def token(self, token_id: str) -> TokenRecord | None:
        row = self._db.execute("SELECT * FROM join_tokens WHERE token_id=?", (token_id,))
        found = row.fetchone()
        return None if found is None else _token(found)

    def tokens(self) -> list[TokenRecord]:
        rows = self._db.execute("SELECT * FROM join_tokens ORDER BY created_at").fetchall()
        return [_token(r) for r in rows]

    def revoke_token(self, token_id: str, now: float) -> bool:
        """Revoke a token (False if there is none by that id); revoking twice keeps the first."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE join_tokens SET revoked_at=coalesce(revoked_at, ?) WHERE token_id=?",
                (now, token_id),
            )
            return cur.rowcount == 1

    def take_token_use(self, token_id: str, now: float) -> bool:
        """Consume one use of a live token: one conditional UPDATE, so of two joins racing for
        the last use (even from two seeder processes on one database) exactly one wins."""
        with self._tx() as db:
            cur = db.execute(
                """UPDATE join_tokens SET uses_left=uses_left-1 WHERE token_id=? AND uses_left>0
                AND expires_at>? AND revoked_at IS NULL""",
                (token_id, now),
            )
            return cur.rowcount == 1

    def give_token_use_back(self, token_id: str) -> None:
        """Undo :meth:`take_token_use` when the certificate could not be issued after all."""
        with self._tx() as db:
            db.execute(
                "UPDATE join_tokens SET uses_left=min(uses, uses_left+1) WHERE token_id=?",
                (token_id,),
            )


def _token(r: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        token_id=r["token_id"],
        digest=r["digest"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        uses=r["uses"],
        uses_left=r["uses_left"],
        labels=json.loads(r["labels"]),
        name_pattern=r["name_pattern"],
        created_by=r["created_by"],
        revoked_at=r["revoked_at"],
    )
