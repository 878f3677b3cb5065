"""The peer's local journal (``<data-dir>/state.db``): step results, unsent reports, releases.

Every step result is written here before it is sent, and stays until the seeder acknowledges it,
so a report survives a lost connection or a restart of either side. The steps table also lets a
restarted peer answer a repeated command from what it already did instead of doing it again: no
hook ever runs twice for the same (rollout, step, attempt).
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import msgpack

from common import messages as m
from common.errors import ShoalError

log = logging.getLogger("shoal.peer.journal")

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("shoal.peer.journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    rollout_id TEXT NOT NULL, step TEXT NOT NULL, attempt INTEGER NOT NULL,
    state TEXT NOT NULL, result TEXT NOT NULL, detail TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (rollout_id, step, attempt));
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    release_id TEXT PRIMARY KEY, manifest TEXT NOT NULL, torrent BLOB NOT NULL,
    staged_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS fencing (
    rollout_id TEXT PRIMARY KEY, token INTEGER NOT NULL, aborted INTEGER NOT NULL);
"""


class JournalError(ShoalError):
    """The journal could not be read or written (our own storage: disk full, I/O error, ...)."""


def _storage(fn: Callable[P, T]) -> Callable[P, T]:
    """Translate sqlite3's errors into JournalError: the one place the database's errors leak."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as exc:
            raise JournalError(f"the peer's journal failed ({fn.__name__}): {exc}") from exc

    return wrapper


@dataclass(frozen=True)
class StepRecord:
    rollout_id: str
    step: str
    attempt: int
    state: str
    result: str
    detail: str


class Journal:
    """The journal. A peer whose disk is full cannot even open it for writing (SQLite must
    create its WAL files): :meth:`open` then falls back to reading it as it is on disk, and
    :meth:`reopen` tries again later; meanwhile every write raises JournalError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = self._connect(path)
        self.writable = True

    @staticmethod
    @_storage
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    @classmethod
    def open(cls, path: Path) -> Journal:
        """Open for writing if the disk allows, else read-only (see :meth:`reopen`)."""
        try:
            return cls(path)
        except JournalError as exc:
            log.error("journal %s opened read-only until the disk recovers: %s", path, exc)
        journal = cls.__new__(cls)
        journal.path, journal.writable = path, False
        journal._db = cls._read_only(path)
        return journal

    @staticmethod
    @_storage
    def _read_only(path: Path) -> sqlite3.Connection:
        if not path.exists():  # nothing to read: an empty journal in memory
            db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            db.executescript(SCHEMA)
            db.execute("PRAGMA query_only=ON")
            return db
        # immutable: no locks, no WAL files to create (changes not checkpointed are not seen)
        uri = f"file:{path}?mode=ro&immutable=1"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)

    def reopen(self) -> bool:
        """Try to get a read-only journal writable again; True once it is."""
        if self.writable:
            return True
        try:
            db = self._connect(self.path)
        except JournalError:
            return False
        self._db.close()
        self._db, self.writable = db, True
        log.info("journal %s is writable again", self.path)
        return True

    def close(self) -> None:
        self._db.close()

    # --- steps and the outbox ------------------------------------------------------------------

    @_storage
    def record(self, report: m.StepReport) -> m.StepReport:
        """Persist a step result and queue it for the seeder; returns it with its ``seq``."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?)",
                (
                    report.rollout_id,
                    report.step,
                    report.attempt,
                    report.state,
                    report.result,
                    report.detail,
                    report.at,
                ),
            )
            cur = self._db.execute("INSERT INTO outbox (payload) VALUES (x'')")
            seq = cur.lastrowid
            assert seq is not None
            stamped = replace(report, seq=seq)
            self._db.execute(
                "UPDATE outbox SET payload=? WHERE seq=?",
                (msgpack.packb(m.to_wire(stamped), use_bin_type=True), seq),
            )
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return stamped

    @_storage
    def unsent(self, after: int = 0, limit: int = 100) -> list[m.StepReport]:
        rows = self._db.execute(
            "SELECT payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()
        out = []
        for (payload,) in rows:
            msg = m.from_wire(msgpack.unpackb(payload, raw=False))
            assert isinstance(msg, m.StepReport)
            out.append(msg)
        return out

    @_storage
    def ack(self, seq: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE seq=?", (seq,))

    @_storage
    def step(self, rollout_id: str, step: str, attempt: int) -> StepRecord | None:
        row = self._db.execute(
            "SELECT * FROM steps WHERE rollout_id=? AND step=? AND attempt=?",
            (rollout_id, step, attempt),
        ).fetchone()
        return StepRecord(*row[:6]) if row else None

    @_storage
    def running_steps(self) -> list[StepRecord]:
        """Steps that were running when the peer stopped: they were interrupted."""
        rows = self._db.execute("SELECT * FROM steps WHERE state='running'").fetchall()
        return [StepRecord(*r[:6]) for r in rows]

    # --- staged releases -----------------------------------------------------------------------

    @_storage
    def add_release(self, manifest: dict[str, Any], torrent: bytes, now: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO releases VALUES (?,?,?,?)",
            (manifest["release_id"], json.dumps(manifest), torrent, now),
        )

    @_storage
    def release(self, release_id: str) -> tuple[dict[str, Any], bytes] | None:
        row = self._db.execute(
            "SELECT manifest, torrent FROM releases WHERE release_id=?", (release_id,)
        ).fetchone()
        return (json.loads(row[0]), bytes(row[1])) if row else None

    @_storage
    def releases(self) -> list[tuple[dict[str, Any], bytes, float]]:
        rows = self._db.execute(
            "SELECT manifest, torrent, staged_at FROM releases ORDER BY staged_at"
        ).fetchall()
        return [(json.loads(r[0]), bytes(r[1]), r[2]) for r in rows]

    @_storage
    def remove_release(self, release_id: str) -> None:
        self._db.execute("DELETE FROM releases WHERE release_id=?", (release_id,))

    # --- fencing tokens and aborts (see peer.fencing) ------------------------------------------

    def newest_token(self) -> int:
        row = self._db.execute("SELECT MAX(token) FROM fencing").fetchone()
        return int(row[0] or 0)

    def see_token(self, rollout_id: str, token: int) -> bool:
        """Remember a rollout's token; False if it could not be written (e.g. a full disk)."""
        return self._write(
            "INSERT INTO fencing VALUES (?,?,0) ON CONFLICT (rollout_id) "
            "DO UPDATE SET token=MAX(token, excluded.token)",
            (rollout_id, token),
        )

    def mark_aborted(self, rollout_id: str) -> bool:
        """Remember that a rollout was aborted; False if it could not be written."""
        return self._write(
            "INSERT INTO fencing VALUES (?,0,1) ON CONFLICT (rollout_id) DO UPDATE SET aborted=1",
            (rollout_id,),
        )

    def _write(self, sql: str, args: tuple[object, ...]) -> bool:
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            log.error("journal: cannot write fencing state: %s", exc)
            return False
        return True

    def aborted_rollouts(self) -> set[str]:
        rows = self._db.execute("SELECT rollout_id FROM fencing WHERE aborted=1").fetchall()
        return {r[0] for r in rows}
