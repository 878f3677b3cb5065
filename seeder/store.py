"""The seeder's state store: hosts, releases, rollouts, targets and per-host step events.

The one module that talks to the database (SQLite, embedded, WAL). Everything the seeder must not
forget across a restart lives here; the rest of the seeder keeps only caches. Step events are
applied idempotently, keyed by (rollout, host, step, attempt): a report re-sent after a reconnect
changes nothing, and a final state is never overwritten by a late "running".
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.release import Manifest

SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY, address TEXT NOT NULL, bt_port INTEGER NOT NULL,
    labels TEXT NOT NULL, current TEXT, staged TEXT NOT NULL,
    connected INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    release_id TEXT PRIMARY KEY, manifest TEXT NOT NULL, torrent BLOB NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id TEXT PRIMARY KEY, release_id TEXT NOT NULL REFERENCES releases,
    selector TEXT NOT NULL, state TEXT NOT NULL, error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS targets (
    rollout_id TEXT NOT NULL REFERENCES rollouts, host TEXT NOT NULL,
    state TEXT NOT NULL, step TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL, PRIMARY KEY (rollout_id, host));
CREATE TABLE IF NOT EXISTS events (
    rollout_id TEXT NOT NULL, host TEXT NOT NULL, step TEXT NOT NULL, attempt INTEGER NOT NULL,
    state TEXT NOT NULL, result TEXT NOT NULL, detail TEXT NOT NULL, exit_code INTEGER,
    output TEXT NOT NULL, at REAL NOT NULL, received_at REAL NOT NULL,
    PRIMARY KEY (rollout_id, host, step, attempt));
"""

FINAL_STATES = ("succeeded", "failed")


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


@dataclass
class Target:
    rollout_id: str
    host: str
    state: str
    step: str = ""
    error: str = ""
    updated_at: float = 0.0


@dataclass
class Rollout:
    rollout_id: str
    release_id: str
    selector: str
    state: str
    error: str
    created_at: float
    updated_at: float
    targets: list[Target] = field(default_factory=list)


@dataclass
class StepEvent:
    rollout_id: str
    host: str
    step: str
    attempt: int
    state: str
    result: str
    detail: str
    exit_code: int | None
    output: list[str]
    at: float


class Store:
    """SQLite-backed state. Calls are short and synchronous; the seeder is the only writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

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
        with self._tx() as db:
            db.execute(
                """INSERT INTO hosts VALUES (?,?,?,?,?,?,?,?,?)
                ON CONFLICT(name) DO UPDATE SET address=excluded.address,
                  bt_port=excluded.bt_port, labels=excluded.labels, current=excluded.current,
                  staged=excluded.staged, connected=excluded.connected,
                  last_seen=excluded.last_seen""",
                (
                    host.name,
                    host.address,
                    host.bt_port,
                    json.dumps(host.labels),
                    host.current,
                    json.dumps(host.staged),
                    int(host.connected),
                    now,
                    now,
                ),
            )

    def touch_host(self, name: str, now: float) -> None:
        self._db.execute("UPDATE hosts SET last_seen=? WHERE name=?", (now, name))

    def set_host_connected(self, name: str, connected: bool, now: float) -> None:
        self._db.execute(
            "UPDATE hosts SET connected=?, last_seen=? WHERE name=?", (int(connected), now, name)
        )

    def set_host_current(self, name: str, current: str | None) -> None:
        self._db.execute("UPDATE hosts SET current=? WHERE name=?", (current, name))

    def mark_all_disconnected(self) -> None:
        """At start-up nobody is connected yet, whatever the last run recorded."""
        self._db.execute("UPDATE hosts SET connected=0")

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
                connected=bool(r["connected"]),
                last_seen=r["last_seen"],
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

    # --- rollouts ------------------------------------------------------------------------------

    def create_rollout(
        self, rollout_id: str, release_id: str, selector: str, hosts: list[str], now: float
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO rollouts VALUES (?,?,?,?,?,?,?)",
                (rollout_id, release_id, selector, "staging", "", now, now),
            )
            db.executemany(
                "INSERT INTO targets VALUES (?,?,?,?,?,?)",
                [(rollout_id, h, "pending", "", "", now) for h in hosts],
            )

    def set_rollout_state(self, rollout_id: str, state: str, now: float, error: str = "") -> None:
        self._db.execute(
            "UPDATE rollouts SET state=?, error=?, updated_at=? WHERE rollout_id=?",
            (state, error, now, rollout_id),
        )

    def set_target(
        self,
        rollout_id: str,
        host: str,
        now: float,
        *,
        state: str | None = None,
        step: str | None = None,
        error: str | None = None,
    ) -> None:
        self._db.execute(
            """UPDATE targets SET state=coalesce(?, state), step=coalesce(?, step),
               error=coalesce(?, error), updated_at=? WHERE rollout_id=? AND host=?""",
            (state, step, error, now, rollout_id, host),
        )

    def rollout(self, rollout_id: str) -> Rollout | None:
        row = self._db.execute(
            "SELECT * FROM rollouts WHERE rollout_id=?", (rollout_id,)
        ).fetchone()
        if row is None:
            return None
        rollout = Rollout(**{k: row[k] for k in row.keys()})  # noqa: SIM118 (sqlite3.Row)
        rollout.targets = [
            Target(**{k: t[k] for k in t.keys()})  # noqa: SIM118
            for t in self._db.execute(
                "SELECT * FROM targets WHERE rollout_id=? ORDER BY host", (rollout_id,)
            )
        ]
        return rollout

    def rollouts(self, *, active_only: bool = False, limit: int = 50) -> list[Rollout]:
        where = "WHERE state NOT IN ('succeeded','failed')" if active_only else ""
        ids = [
            r[0]
            for r in self._db.execute(
                f"SELECT rollout_id FROM rollouts {where} ORDER BY created_at DESC LIMIT ?",
                (limit,),
            )
        ]
        return [r for r in map(self.rollout, ids) if r is not None]

    # --- step events ---------------------------------------------------------------------------

    def record_event(self, ev: StepEvent, now: float) -> bool:
        """Apply one step report idempotently; True if it changed anything."""
        cur = self._db.execute(
            """INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)
            ON CONFLICT(rollout_id, host, step, attempt) DO UPDATE SET
              state=excluded.state, result=excluded.result, detail=excluded.detail,
              exit_code=excluded.exit_code, output=excluded.output, at=excluded.at,
              received_at=excluded.received_at
            WHERE events.state NOT IN ('succeeded', 'failed') AND events.state != excluded.state""",
            (
                ev.rollout_id,
                ev.host,
                ev.step,
                ev.attempt,
                ev.state,
                ev.result,
                ev.detail,
                ev.exit_code,
                json.dumps(ev.output),
                ev.at,
                now,
            ),
        )
        return cur.rowcount == 1

    def events(self, rollout_id: str, host: str | None = None) -> list[StepEvent]:
        query = "SELECT * FROM events WHERE rollout_id=?"
        args: tuple[Any, ...] = (rollout_id,)
        if host is not None:
            query += " AND host=?"
            args += (host,)
        rows = self._db.execute(query + " ORDER BY host, at, rowid", args).fetchall()
        return [
            StepEvent(
                rollout_id=r["rollout_id"],
                host=r["host"],
                step=r["step"],
                attempt=r["attempt"],
                state=r["state"],
                result=r["result"],
                detail=r["detail"],
                exit_code=r["exit_code"],
                output=json.loads(r["output"]),
                at=r["at"],
            )
            for r in rows
        ]
