"""The store's tables for applications and for where each release came from.

Part of :class:`seeder.store.Store` (a mixin on its one connection, so one module still owns the
database and one transaction can span every table): ``apps`` holds each application's settings
as JSON (new settings are new keys, not new columns); ``release_sources`` holds, per release,
the app, ref, commit, its subject and author, who built it, its build settings and its build log.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

from seeder.applications import App

APPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY, settings TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS release_sources (
    release_id TEXT PRIMARY KEY, app TEXT NOT NULL, ref TEXT NOT NULL, commit_sha TEXT NOT NULL,
    subject TEXT NOT NULL, author TEXT NOT NULL, committed_at REAL NOT NULL,
    built_by TEXT NOT NULL, built_at REAL NOT NULL, build TEXT NOT NULL, log TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS release_sources_by_app ON release_sources (app, built_at);
"""


@dataclass(frozen=True)
class ReleaseSource:
    """Where a release came from and how it was built (its first build: the same id means the
    same bytes, so a rebuild changes nothing here)."""

    release_id: str
    app: str
    ref: str
    commit: str
    subject: str
    author: str
    committed_at: float
    built_by: str
    built_at: float
    build: dict[str, Any] = field(default_factory=dict)  # settings used and where from
    log: list[dict[str, Any]] = field(default_factory=list)  # {step, line, at}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AppTables:
    """Methods of :class:`seeder.store.Store` on the ``apps`` and ``release_sources`` tables."""

    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    # --- apps ----------------------------------------------------------------------------------

    def add_app(self, app: App) -> bool:
        """Register ``app``; False (and nothing changes) if the name is taken."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO apps VALUES (?,?,?,?)",
                (app.name, json.dumps(app.to_dict()), app.created_at, app.updated_at),
            )
            return cur.rowcount == 1

    def update_app(self, app: App) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE apps SET settings=?, updated_at=? WHERE name=?",
                (json.dumps(app.to_dict()), app.updated_at, app.name),
            )

    def remove_app(self, name: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM apps WHERE name=?", (name,)).rowcount == 1

    def app(self, name: str) -> App | None:
        row = self._db.execute("SELECT settings FROM apps WHERE name=?", (name,)).fetchone()
        return None if row is None else App.from_dict(json.loads(row[0]))

    def apps(self) -> list[App]:
        rows = self._db.execute("SELECT settings FROM apps ORDER BY name").fetchall()
        return [App.from_dict(json.loads(r[0])) for r in rows]

    # --- release sources -----------------------------------------------------------------------

    def add_release_source(self, source: ReleaseSource) -> None:
        """Record where a release came from (kept from its first build)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO release_sources VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    source.release_id,
                    source.app,
                    source.ref,
                    source.commit,
                    source.subject,
                    source.author,
                    source.committed_at,
                    source.built_by,
                    source.built_at,
                    json.dumps(source.build),
                    json.dumps(source.log),
                ),
            )

    def release_source(self, release_id: str) -> ReleaseSource | None:
        row = self._db.execute(
            "SELECT * FROM release_sources WHERE release_id=?", (release_id,)
        ).fetchone()
        return None if row is None else _source(row)

    def release_sources(self) -> dict[str, ReleaseSource]:
        """Every release's source (without its build log), by release id."""
        rows = self._db.execute(
            "SELECT release_id, app, ref, commit_sha, subject, author, committed_at, built_by,"
            " built_at, build, '[]' AS log FROM release_sources"
        ).fetchall()
        return {r["release_id"]: _source(r) for r in rows}

    def rollouts_of_release(self, release_id: str) -> list[dict[str, Any]]:
        """The rollouts of one release, newest first: id, kind, state, targets, times."""
        rows = self._db.execute(
            """SELECT r.rollout_id, r.kind, r.state, r.error, r.created_at, r.updated_at,
                 (SELECT count(*) FROM targets t WHERE t.rollout_id=r.rollout_id) AS targets
               FROM rollouts r WHERE r.release_id=? ORDER BY r.created_at DESC""",
            (release_id,),
        ).fetchall()
        return [dict(r) for r in rows]


def _source(row: sqlite3.Row) -> ReleaseSource:
    return ReleaseSource(
        release_id=row["release_id"],
        app=row["app"],
        ref=row["ref"],
        commit=row["commit_sha"],
        subject=row["subject"],
        author=row["author"],
        committed_at=row["committed_at"],
        built_by=row["built_by"],
        built_at=row["built_at"],
        build=json.loads(row["build"]),
        log=json.loads(row["log"]),
    )
