"""The seeder's state store: hosts, releases, rollouts, targets, step events and timelines.

The one module that talks to the database (SQLite, embedded, WAL). Everything the seeder must not
forget across a restart lives here; the live rollout model is in memory (:mod:`seeder.model`) and
written through with :meth:`Store.commit`, which puts a group of events *and* the state changes
they caused into one transaction: a crash keeps both or neither. Heartbeats and connection state
are not stored (they are derived from live connections).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ShoalError
from common.release import Manifest
from seeder.appstore import APPS_SCHEMA, AppTables
from seeder.join_policy import TokenRecord
from seeder.model import RolloutModel, StepRecord, TargetModel
from seeder.states import TERMINAL, RolloutState, TargetState
from seeder.store_promotions import SCHEMA as PROMOTION_SCHEMA
from seeder.store_promotions import PromotionTables, RolloutPromotion
from seeder.waves import Plan, RolloutOptions

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
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id TEXT PRIMARY KEY, release_id TEXT NOT NULL, selector TEXT NOT NULL,
    kind TEXT NOT NULL, token INTEGER NOT NULL UNIQUE, options TEXT NOT NULL, plan TEXT NOT NULL,
    state TEXT NOT NULL, error TEXT NOT NULL, wave INTEGER NOT NULL, paused_from TEXT NOT NULL,
    bake_until REAL NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS targets (
    rollout_id TEXT NOT NULL REFERENCES rollouts, host TEXT NOT NULL, release_id TEXT NOT NULL,
    previous TEXT, wave INTEGER NOT NULL, state TEXT NOT NULL, step TEXT NOT NULL,
    error TEXT NOT NULL, activated INTEGER NOT NULL, deadline REAL NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (rollout_id, host));
CREATE TABLE IF NOT EXISTS events (
    rollout_id TEXT NOT NULL, host TEXT NOT NULL, step TEXT NOT NULL, attempt INTEGER NOT NULL,
    state TEXT NOT NULL, result TEXT NOT NULL, detail TEXT NOT NULL, exit_code INTEGER,
    output TEXT NOT NULL, at REAL NOT NULL, received_at REAL NOT NULL,
    PRIMARY KEY (rollout_id, host, step, attempt));
CREATE TABLE IF NOT EXISTS timeline (
    rollout_id TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (rollout_id, seq));
CREATE TABLE IF NOT EXISTS join_tokens (
    token_id TEXT PRIMARY KEY, digest TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, uses INTEGER NOT NULL, uses_left INTEGER NOT NULL,
    labels TEXT NOT NULL, name_pattern TEXT NOT NULL, created_by TEXT NOT NULL, revoked_at REAL);
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


@dataclass
class Commit:
    """One applied event: its step record (if a report) and everything it changed."""

    rollout: RolloutModel
    targets: Iterable[str] = ()
    rollout_changed: bool = False
    step: tuple[str, StepRecord] | None = None  # (host, record)
    timeline: list[tuple[int, float, str, dict[str, Any]]] = field(default_factory=list)
    currents: list[tuple[str, str]] = field(default_factory=list)  # (host, release now live)
    create: bool = False
    promotion: RolloutPromotion | None = None  # with create: the targets' envs and verdict


class Store(AppTables, PromotionTables):
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
        self._db.executescript(SCHEMA + APPS_SCHEMA + PROMOTION_SCHEMA)
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

    # --- rollouts: writing ---------------------------------------------------------------------

    def commit(self, batch: list[Commit]) -> None:
        """Write a group of applied events and their effects in one transaction."""
        with self._tx() as db:
            for c in batch:
                r = c.rollout
                if c.create:
                    db.execute(
                        "INSERT INTO rollouts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            r.rollout_id,
                            r.release_id,
                            r.selector,
                            r.kind,
                            r.token,
                            json.dumps(r.options.to_dict()),
                            json.dumps(r.plan.to_dict()),
                            r.state.value,
                            r.error,
                            r.wave,
                            r.paused_from,
                            r.bake_until,
                            r.created_at,
                            r.updated_at,
                        ),
                    )
                    if c.promotion is not None:
                        self._write_promotion(db, r.rollout_id, c.promotion)
                elif c.rollout_changed:  # options and plan never change after the start
                    db.execute(
                        """UPDATE rollouts SET state=?, error=?, wave=?, paused_from=?,
                           bake_until=?, updated_at=? WHERE rollout_id=?""",
                        (
                            r.state.value,
                            r.error,
                            r.wave,
                            r.paused_from,
                            r.bake_until,
                            r.updated_at,
                            r.rollout_id,
                        ),
                    )
                hosts = r.targets.keys() if c.create else c.targets
                db.executemany(
                    "INSERT OR REPLACE INTO targets VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [_target_row(r.rollout_id, r.targets[h]) for h in hosts],
                )
                if c.step is not None:
                    host, s = c.step
                    db.execute(
                        """INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)
                        ON CONFLICT(rollout_id, host, step, attempt) DO UPDATE SET
                          state=excluded.state, result=excluded.result, detail=excluded.detail,
                          exit_code=excluded.exit_code, output=excluded.output, at=excluded.at
                        WHERE events.state NOT IN ('succeeded', 'failed')""",
                        (
                            r.rollout_id,
                            host,
                            s.step,
                            s.attempt,
                            s.state,
                            s.result,
                            s.detail,
                            s.exit_code,
                            json.dumps(s.output),
                            s.at,
                            r.updated_at,
                        ),
                    )
                db.executemany(
                    "INSERT INTO timeline VALUES (?,?,?,?,?)",
                    [(r.rollout_id, seq, at, k, json.dumps(d)) for seq, at, k, d in c.timeline],
                )
                db.executemany(
                    """UPDATE hosts SET previous=CASE WHEN current IS NOT NULL AND current != ?
                       THEN current ELSE previous END, current=? WHERE name=?""",
                    [(rel, rel, host) for host, rel in c.currents],
                )

    # --- rollouts: reading ---------------------------------------------------------------------

    def max_token(self) -> int:
        return int(self._db.execute("SELECT coalesce(max(token), 0) FROM rollouts").fetchone()[0])

    def max_seq(self, rollout_id: str) -> int:
        row = self._db.execute(
            "SELECT coalesce(max(seq), 0) FROM timeline WHERE rollout_id=?", (rollout_id,)
        ).fetchone()
        return int(row[0])

    def rollout_ids(self, *, live_only: bool = False, limit: int = 50) -> list[str]:
        """Newest first. Live: not finished, or finished with hosts still at work."""
        done = ",".join(f"'{s.value}'" for s in TERMINAL)
        busy = ",".join(
            f"'{s.value}'"
            for s in (
                TargetState.PENDING,
                TargetState.STAGING,
                TargetState.ACTIVATING,
                TargetState.ROLLING_BACK,
            )
        )
        where = (
            f"WHERE state NOT IN ({done}) OR rollout_id IN "
            f"(SELECT rollout_id FROM targets WHERE state IN ({busy}))"
            if live_only
            else ""
        )
        query = f"SELECT rollout_id FROM rollouts {where} ORDER BY created_at DESC, token DESC"
        return [row[0] for row in self._db.execute(query + " LIMIT ?", (limit,))]

    def summaries(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._db.execute(
            """SELECT r.*, (SELECT count(*) FROM targets t WHERE t.rollout_id=r.rollout_id) AS n
               FROM rollouts r ORDER BY created_at DESC, token DESC LIMIT ?""",
            (limit,),
        ).fetchall()
        return [
            {
                "rollout_id": r["rollout_id"],
                "release_id": r["release_id"],
                "kind": r["kind"],
                "state": r["state"],
                "error": r["error"],
                "created_at": r["created_at"],
                "updated_at": r["updated_at"],
                "targets": r["n"],
                "waves": len(json.loads(r["plan"])["waves"]),
            }
            for r in rows
        ]

    def load_rollout(self, rollout_id: str) -> RolloutModel | None:
        row = self._db.execute(
            "SELECT * FROM rollouts WHERE rollout_id=?", (rollout_id,)
        ).fetchone()
        if row is None:
            return None
        plan = json.loads(row["plan"])
        model = RolloutModel(
            rollout_id=row["rollout_id"],
            release_id=row["release_id"],
            selector=row["selector"],
            kind=row["kind"],
            token=row["token"],
            options=RolloutOptions(**json.loads(row["options"])),
            plan=Plan(
                waves=[w["hosts"] for w in plan["waves"]],
                max_failures=plan["max_failures"],
                wave_max_failures=plan["wave_max_failures"],
                min_staged=plan["min_staged"],
            ),
            created_at=row["created_at"],
            state=RolloutState(row["state"]),
            error=row["error"],
            updated_at=row["updated_at"],
            wave=row["wave"],
            paused_from=row["paused_from"],
            bake_until=row["bake_until"],
        )
        for t in self._db.execute("SELECT * FROM targets WHERE rollout_id=?", (rollout_id,)):
            model.targets[t["host"]] = TargetModel(
                host=t["host"],
                release_id=t["release_id"],
                previous=t["previous"],
                wave=t["wave"],
                state=TargetState(t["state"]),
                step=t["step"],
                error=t["error"],
                updated_at=t["updated_at"],
                deadline=t["deadline"],
                activated=bool(t["activated"]),
            )
        for e in self._db.execute(
            "SELECT * FROM events WHERE rollout_id=? ORDER BY rowid", (rollout_id,)
        ):
            target = model.targets.get(e["host"])
            if target is not None:
                target.steps[(e["step"], e["attempt"])] = StepRecord(
                    e["step"],
                    e["attempt"],
                    e["state"],
                    e["result"],
                    e["detail"],
                    e["exit_code"],
                    e["at"],
                    json.loads(e["output"]),
                )
        model.reindex()
        return model

    def timeline(self, rollout_id: str, limit: int = 0) -> list[dict[str, Any]]:
        """The rollout's timeline, oldest first; with ``limit``, only its last entries."""
        query = "SELECT seq, at, kind, data FROM timeline WHERE rollout_id=? ORDER BY seq DESC"
        args: tuple[Any, ...] = (rollout_id,)
        if limit:
            query += " LIMIT ?"
            args += (limit,)
        rows = self._db.execute(query, args).fetchall()
        return [
            {"seq": r["seq"], "at": r["at"], "kind": r["kind"], **json.loads(r["data"])}
            for r in reversed(rows)
        ]

    def timeline_length(self, rollout_id: str) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM timeline WHERE rollout_id=?", (rollout_id,)
        ).fetchone()
        return int(row[0])

    # --- join tokens (seeder.join_policy) ------------------------------------------------------

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


def _target_row(rollout_id: str, t: TargetModel) -> tuple[Any, ...]:
    return (
        rollout_id,
        t.host,
        t.release_id,
        t.previous,
        t.wave,
        t.state.value,
        t.step,
        t.error,
        int(t.activated),
        t.deadline,
        t.updated_at,
    )
