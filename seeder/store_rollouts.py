"""The store's rollout tables: rollouts, their targets, step events and timelines.

Part of :class:`seeder.store.Store` (a mixin on its one connection, so the store is still the
one module that talks to the database; split out to keep one concept per file). The live
rollout model is in memory (:mod:`seeder.model`) and written through with
:meth:`RolloutTables.commit`, which puts a group of events *and* the state changes they caused
into one transaction: a crash keeps both or neither. The engine (:mod:`seeder.engine`) is its
one writer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from seeder.model import RolloutModel, StepRecord, TargetModel
from seeder.states import TERMINAL, RolloutState, TargetState
from seeder.store_promotions import RolloutPromotion
from seeder.waves import Plan, RolloutOptions

SCHEMA = """
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
"""


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


class RolloutTables:
    """Methods of :class:`seeder.store.Store` on the rollout tables."""

    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _write_promotion: Callable[[sqlite3.Connection, str, RolloutPromotion], None]

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
