"""seeder.preflight: the facts read from a real release archive, and gathering answers with a
timeout (trio's autojump clock: no real waiting)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from common import messages as m
from common.preflight import HookFacts, ReleaseFacts
from seeder.app_service import Apps
from seeder.build import build_app_release
from seeder.preflight import PreflightError, Preflights, release_facts
from seeder.samplerepo import commit_all
from seeder.store import Store
from tests.conftest import make_app_repo

FACTS = ReleaseFacts({"release_id": "web-v1-00000000", "size": 10}, 20)


async def test_release_facts_come_from_the_archive(tmp_path: Path, store: Store) -> None:
    repo = make_app_repo(tmp_path / "app")
    (repo / "hooks" / "ValidateService.sh").chmod(0o644)  # git keeps the x bit or not
    (repo / "appspec.yml").write_text(
        (repo / "appspec.yml").read_text()
        + "files:\n  - source: VERSION\n    destination: /srv/web\n"
        + "  - source: hooks\n    destination: /srv/web\n"
    )
    commit_all(repo, "one hook not executable")
    apps = Apps(store, tmp_path / "data")
    await apps.add({"name": "web", "repo": str(repo)})
    built = await build_app_release(
        apps, "web", "main", releases_dir=tmp_path / "releases", tracker_url="http://x/a"
    )
    facts = release_facts(built.manifest, built.directory)
    assert facts.release_id == built.manifest.release_id
    assert facts.download_size == built.manifest.size
    expected = sum(
        p.stat().st_size for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts
    )
    assert facts.unpacked_size == expected
    assert facts.destinations == ("/srv/web",)
    by_event = {h.event: h for h in facts.hooks}
    assert by_event["ApplicationStart"] == HookFacts(
        "ApplicationStart", "hooks/ApplicationStart.sh", None, True, True, "/bin/sh"
    )
    assert by_event["ValidateService"].executable is False
    assert ReleaseFacts.from_dict(facts.to_dict()) == facts


async def test_rows_for_answers_failures_silence_and_absence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Preflights()
    asked: list[str] = []
    good = [{"check": "disk", "ok": True, "detail": "enough"}]
    bad = [*good, {"check": "runas", "ok": False, "detail": "no user 'x'"}]

    async def send(host: str, msg: m.Message) -> bool:
        assert isinstance(msg, m.Preflight) and msg.release == FACTS.to_dict()
        asked.append(host)
        if host == "lost":
            return False  # the connection died while sending
        if host in ("a", "b"):
            # answers arrive from the host's connection; the claimed host is not trusted
            hub.on_result(
                host, m.PreflightResult(msg.check_id, "forged", good if host == "a" else bad)
            )
        return True

    start = trio.current_time()
    rows = await hub.run(
        FACTS, ["a", "b", "mute", "lost", "gone"], {"a", "b", "mute", "lost"}, send, 5
    )
    assert trio.current_time() - start == 5  # waited the whole timeout for "mute", no more
    assert sorted(asked) == ["a", "b", "lost", "mute"]
    assert [(r["host"], r["status"], r["ok"]) for r in rows] == [
        ("a", "ok", True),
        ("b", "failed", False),
        ("mute", "silent", False),
        ("lost", "unreachable", False),
        ("gone", "unreachable", False),
    ]
    assert rows[1]["detail"] == "no user 'x'" and rows[1]["checks"] == bad
    # a late answer is dropped, not kept for the next check
    hub.on_result("mute", m.PreflightResult("old", "mute", good))


async def test_all_answered_returns_at_once(autojump_clock: trio.testing.MockClock) -> None:
    hub = Preflights()

    async def send(host: str, msg: m.Message) -> bool:
        assert isinstance(msg, m.Preflight)
        hub.on_result(host, m.PreflightResult(msg.check_id, host, [{"check": "disk", "ok": True}]))
        return True

    start = trio.current_time()
    rows = await hub.run(FACTS, ["a", "b"], {"a", "b"}, send, 60)
    assert trio.current_time() == start and all(r["ok"] for r in rows)
    assert await hub.run(FACTS, ["z"], set(), send, 60) == [
        {
            "host": "z",
            "status": "unreachable",
            "ok": False,
            "detail": "not connected to the seeder",
            "checks": [],
        }
    ]
    assert trio.current_time() == start


async def test_an_empty_answer_is_not_ok(autojump_clock: trio.testing.MockClock) -> None:
    hub = Preflights()

    async def send(host: str, msg: m.Message) -> bool:
        assert isinstance(msg, m.Preflight)
        hub.on_result(host, m.PreflightResult(msg.check_id, host, []))
        return True

    (row,) = await hub.run(FACTS, ["a"], {"a"}, send, 1)
    assert row["status"] == "failed" and row["detail"] == "the host answered without any checks"


async def test_a_bad_timeout_is_refused() -> None:
    async def send(host: str, msg: m.Message) -> bool:
        raise AssertionError("nothing may be sent")

    for timeout in (0, -1, 601):
        with pytest.raises(PreflightError, match="must be more than 0 and at most 600 seconds"):
            await Preflights().run(FACTS, ["a"], {"a"}, send, timeout)
