"""The rollout commands' text output, from real views of a machine-driven rollout."""

from __future__ import annotations

import argparse
from pathlib import Path

from seeder import rollout_cli, views
from seeder.store import Store
from seeder.store_rollouts import Commit
from tests.test_machine import Run


async def test_show_plan_and_list_texts(tmp_path: Path) -> None:
    store = Store(tmp_path / "seeder.db")
    run = Run(gate="true")
    run.stage_all()
    run.report("a", "ValidateService", "failed", result="failed", exit_code=3, output=("boom",))
    run.activate("a", ok=False)
    timeline = [
        (seq, run.now, kind, data)
        for seq, (kind, data) in enumerate((e for fx in run.log for e in fx.timeline), 1)
    ]
    store.commit([Commit(run.r, create=True, timeline=timeline)])
    view = await views.rollout(store, run.r)
    assert [w["state"] for w in view["waves"]] == ["halted", "skipped"]
    shown = rollout_cli.show_text(view)
    assert "state halted" in shown and "ValidateService failed (exit 3)" in shown
    assert "wave 1: 1 host(s): a" in shown and "wave 2: 2 host(s): b, c" in shown
    assert "--- last output of a ---\nboom" in shown
    assert " target   host=a state=failed" in shown
    listed = rollout_cli.list_text(store.summaries())
    assert "r1" in listed.splitlines()[1] and "halted" in listed
    planned = rollout_cli.plan_text(run.r.plan.to_dict())
    assert planned.endswith(
        "failure budget: 0 host(s) in all; wave 1 starts once 3 host(s) are staged"
    )


def test_wave_options_pass_through_only_what_was_given() -> None:
    parser = argparse.ArgumentParser()
    rollout_cli.add_wave_options(parser)
    args = parser.parse_args(["--waves", "2,100%", "--auto-rollback", "--bake", "5"])
    assert rollout_cli.wave_params(args) == {"waves": "2,100%", "auto_rollback": True, "bake": 5.0}
