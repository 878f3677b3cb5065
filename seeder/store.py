"""The seeder's state store: the database, its schema version, hosts and releases.

The one module that talks to the database (SQLite, embedded, WAL); its other tables have their
own modules, mixed into :class:`Store` on its one connection: rollouts, targets, step events and
timelines (:mod:`seeder.store_rollouts`), join tokens (:mod:`seeder.store_tokens`), applications
(:mod:`seeder.appstore`) and promotions (:mod:`seeder.store_promotions`). Everything the seeder
must not forget across a restart lives here; heartbeats and connection state are not stored
(they are derived from live connections).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.errors import ShoalError
from common.release import Manifest
from seeder.appstore import APPS_SCHEMA, AppTables
from seeder.store_promotions import SCHEMA as PROMOTION_SCHEMA
from seeder.store_promotions import PromotionTables
from seeder.store_rollouts import SCHEMA as ROLLOUT_SCHEMA
from seeder.store_rollouts import RolloutTables
from seeder.store_tokens import SCHEMA as TOKEN_SCHEMA
from seeder.store_tokens import TokenTables

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY, address TEXT NOT NULL, bt_port INTEGER NOT NULL,
    labels TEXT NOT NULL, current TEXT, previous TEXT, staged TEXT NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL);
CREATE INDEX IF NOT EXISTS hosts_by_address ON hosts (address);
CREATE TABLE IF NOT EXISTS releases (
    release_id TEXT PRIMARY KEY, manifest TEXT NOT NULL, torrent BLOB NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS signatures (
    release_id TEXT PRIMARY KEY REFERENCES releases, signature BLOB NOT NULL);
"""


class StoreError(ShoalError):
    """The data directory holds a database this seeder cannot use."""


@dataclass
class HostRecord:
    name: str
    address: str
    bt_port: int
    labels: dict[str, str]
    current: str | None
    staged: list[str]
    connected: bool
    last_seen: float
    previous: str | None = None


class Store(RolloutTables, TokenTables, AppTables, PromotionTables):
    """SQLite-backed state. Calls are short and synchronous; the seeder is the only writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables and version != SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by another version of shoal (schema {version}, "
                f"this one needs {SCHEMA_VERSION}); use a new --data-dir"
            )
        schemas = (SCHEMA, ROLLOUT_SCHEMA, TOKEN_SCHEMA, APPS_SCHEMA, PROMOTION_SCHEMA)
        self._db.executescript("".join(schemas))
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- hosts ---------------------------------------------------------------------------------

    def upsert_host(self, host: HostRecord, now: float) -> None:
        """A peer said hello: record what it says it runs (the old current becomes previous)."""
        with self._tx() as db:
            db.execute(
                """INSERT INTO hosts VALUES (?,?,?,?,?,?,?,?,?)
                ON CONFLICT(name) DO UPDATE SET address=excluded.address,
                  bt_port=excluded.bt_port, labels=excluded.labels,
                  previous=CASE WHEN hosts.current IS NOT NULL
                    AND hosts.current IS NOT excluded.current THEN hosts.current
                    ELSE hosts.previous END,
                  current=excluded.current, staged=excluded.staged,
                  last_seen=excluded.last_seen""",
                (
                    host.name,
                    host.address,
                    host.bt_port,
                    json.dumps(host.labels),
                    host.current,
                    host.previous,
                    json.dumps(host.staged),
                    now,
                    now,
                ),
            )

    def is_host(self, name: str) -> bool:
        """Whether a host of this name has registered (one indexed lookup)."""
        row = self._db.execute("SELECT 1 FROM hosts WHERE name=? LIMIT 1", (name,))
        return row.fetchone() is not None

    def is_host_address(self, address: str) -> bool:
        """Whether a fleet host registered from ``address`` (one indexed lookup)."""
        row = self._db.execute("SELECT 1 FROM hosts WHERE address=? LIMIT 1", (address,))
        return row.fetchone() is not None

    def hosts(self) -> list[HostRecord]:
        rows = self._db.execute("SELECT * FROM hosts ORDER BY name").fetchall()
        return [
            HostRecord(
                name=r["name"],
                address=r["address"],
                bt_port=r["bt_port"],
                labels=json.loads(r["labels"]),
                current=r["current"],
                staged=json.loads(r["staged"]),
                connected=False,
                last_seen=r["last_seen"],
                previous=r["previous"],
            )
            for r in rows
        ]

    # --- releases ------------------------------------------------------------------------------

    def add_release(self, manifest: Manifest, torrent: bytes, now: float) -> bool:
        """Register a release; False if it was already known (same id = same bytes)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO releases VALUES (?,?,?,?)",
                (manifest.release_id, json.dumps(manifest.to_dict()), torrent, now),
            )
            return cur.rowcount == 1

    def set_signature(self, release_id: str, signature: bytes) -> None:
        """Store the signature of a release's manifest (seeder.signatures is its one writer)."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO signatures VALUES (?,?)", (release_id, signature))

    def signature(self, release_id: str) -> bytes | None:
        """The stored signature of a release's manifest (seeder.signatures), if any."""
        row = self._db.execute(
            "SELECT signature FROM signatures WHERE release_id=?", (release_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def release(self, release_id: str) -> tuple[Manifest, bytes] | None:
        row = self._db.execute(
            "SELECT manifest, torrent FROM releases WHERE release_id=?", (release_id,)
        ).fetchone()
        if row is None:
            return None
        return Manifest.from_dict(json.loads(row["manifest"])), bytes(row["torrent"])

    def releases(self) -> list[tuple[Manifest, bytes, float]]:
        rows = self._db.execute("SELECT * FROM releases ORDER BY created_at").fetchall()
        return [
            (Manifest.from_dict(json.loads(r["manifest"])), bytes(r["torrent"]), r["created_at"])
            for r in rows
        ]
