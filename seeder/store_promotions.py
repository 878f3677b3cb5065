"""The store's promotion tables: each application's rules, and each rollout's envs and verdict.

Part of :class:`seeder.store.Store` (split out to keep one concept per file; the store is still
the one module that talks to the database). ``promotion_rules`` has one writer, ``app set
--promote``. ``rollout_promotions`` is written once per rollout, in the transaction that creates
the rollout: the env of every target when it started (so that a host relabelled later does not
rewrite history) and, where rules were checked, the verdict, and who forced it past them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from seeder.promotion import RolloutOutcome, TargetOutcome
from seeder.states import RolloutState, TargetState

SCHEMA = """
CREATE TABLE IF NOT EXISTS promotion_rules (
    app TEXT PRIMARY KEY, rules TEXT NOT NULL, updated_at REAL NOT NULL,
    updated_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_promotions (
    rollout_id TEXT PRIMARY KEY REFERENCES rollouts, envs TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS targets_by_release ON targets (release_id);
"""


@dataclass(frozen=True)
class RulesRecord:
    app: str
    rules: list[str]
    updated_at: float = 0.0
    updated_by: str = ""


@dataclass(frozen=True)
class RolloutPromotion:
    """What a new rollout records about environments (see the module's docstring)."""

    envs: dict[str, str]  # target -> its env label when the rollout started ("" : none)
    record: dict[str, Any] | None = field(default=None)  # the checked verdict; None: unchecked

    def timeline_note(self) -> dict[str, Any] | None:
        """The verdict's entry in the rollout's timeline: only where some rule applied."""
        if self.record is None or not self.record.get("checks"):
            return None
        keys = ("app", "release_id", "ok", "forced", "overridden", "by", "role", "detail")
        return {k: self.record[k] for k in keys if k in self.record}


class PromotionTables:
    """The store's promotion methods (mixed into :class:`seeder.store.Store`)."""

    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def promotion_rules(self, app: str) -> RulesRecord:
        row = self._db.execute("SELECT * FROM promotion_rules WHERE app=?", (app,)).fetchone()
        if row is None:
            return RulesRecord(app, [])
        return RulesRecord(app, json.loads(row["rules"]), row["updated_at"], row["updated_by"])

    def all_promotion_rules(self) -> dict[str, list[str]]:
        rows = self._db.execute("SELECT app, rules FROM promotion_rules ORDER BY app")
        return {row["app"]: json.loads(row["rules"]) for row in rows}

    def set_promotion_rules(self, app: str, rules: list[str], now: float, by: str) -> None:
        """Replace ``app``'s rules (none: forget them)."""
        with self._tx() as db:
            if rules:
                db.execute(
                    "INSERT OR REPLACE INTO promotion_rules VALUES (?,?,?,?)",
                    (app, json.dumps(rules), now, by),
                )
            else:
                db.execute("DELETE FROM promotion_rules WHERE app=?", (app,))

    def _write_promotion(
        self, db: sqlite3.Connection, rollout_id: str, p: RolloutPromotion
    ) -> None:
        """Called by :meth:`Store.commit` inside the transaction that creates the rollout."""
        db.execute(
            "INSERT INTO rollout_promotions VALUES (?,?,?)",
            (rollout_id, json.dumps(p.envs), json.dumps(p.record)),
        )

    def rollout_promotion(self, rollout_id: str) -> dict[str, Any] | None:
        """The verdict a rollout was started with (None: no rule was checked)."""
        row = self._db.execute(
            "SELECT record FROM rollout_promotions WHERE rollout_id=?", (rollout_id,)
        ).fetchone()
        return None if row is None else json.loads(row["record"])

    def forced_by(self, rollout_ids: list[str]) -> dict[str, str]:
        """Of these rollouts, those forced past a promotion rule, with who forced them."""
        marks = ",".join("?" * len(rollout_ids))
        rows = self._db.execute(
            f"SELECT rollout_id, record FROM rollout_promotions WHERE rollout_id IN ({marks})",
            rollout_ids,
        )
        records = {row["rollout_id"]: json.loads(row["record"]) for row in rows}
        return {rid: str(r["by"]) for rid, r in records.items() if r and r.get("forced")}

    def promotion_history(self, release_id: str) -> list[RolloutOutcome]:
        """Every rollout that put ``release_id`` on some host, with each target's env then."""
        rows = self._db.execute(
            """SELECT r.rollout_id, r.state AS rstate, r.created_at, t.host, t.release_id,
                      t.state AS tstate, p.envs
               FROM targets t JOIN rollouts r ON r.rollout_id = t.rollout_id
               LEFT JOIN rollout_promotions p ON p.rollout_id = t.rollout_id
               WHERE t.rollout_id IN (SELECT rollout_id FROM targets WHERE release_id=?)
               ORDER BY r.created_at, r.rollout_id, t.host""",
            (release_id,),
        ).fetchall()
        rollouts: dict[str, tuple[sqlite3.Row, dict[str, str], list[TargetOutcome]]] = {}
        for row in rows:
            rid = row["rollout_id"]
            if rid not in rollouts:
                rollouts[rid] = (row, json.loads(row["envs"]) if row["envs"] else {}, [])
            _, envs, targets = rollouts[rid]
            targets.append(
                TargetOutcome(
                    row["host"],
                    envs.get(row["host"], ""),
                    row["release_id"],
                    TargetState(row["tstate"]),
                )
            )
        return [
            RolloutOutcome(rid, RolloutState(r["rstate"]), r["created_at"], tuple(targets))
            for rid, (r, _, targets) in rollouts.items()
        ]
