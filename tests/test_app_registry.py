"""The application registry in-process against real git: default branch, refused settings
registering nothing, idempotent add, set and remove."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ConfigError
from seeder.app_service import Apps
from seeder.applications import UnknownApp
from seeder.samplerepo import git
from seeder.store import Store
from tests.gitremote import make_remote


async def test_add_set_remove(tmp_path: Path, store: Store) -> None:
    remote = make_remote(tmp_path / "git")
    git(remote.bare, "branch", "-m", "main", "trunk")  # a remote whose default is not main
    apps = Apps(store, tmp_path / "data")
    added = await apps.add({"name": "web", "repo": remote.url})
    assert added["created"] and added["app"]["branch"] == "trunk"
    assert (await apps.add({"name": "web", "repo": remote.url}))["created"] is False
    with pytest.raises(ConfigError, match="exists with other settings"):
        await apps.add({"name": "web", "repo": remote.url, "subdir": "x"})

    with pytest.raises(ConfigError, match=r"the remote has no branch 'main' \(trunk\)"):
        await apps.add({"name": "api", "repo": remote.url, "branch": "main"})
    assert store.app("api") is None and not (tmp_path / "data" / "mirrors" / "api.git").exists()
    with pytest.raises(ConfigError, match="no branch 'nope'"):
        await apps.set({"name": "web", "branch": "nope"})
    assert store.app("web").branch == "trunk"  # type: ignore[union-attr]
    changed = await apps.set({"name": "web", "build": {"build": "make"}})
    assert changed["changed"] and store.app("web").build.build == "make"  # type: ignore[union-attr]

    git(remote.bare, "branch", "other", "trunk")
    git(remote.bare, "symbolic-ref", "HEAD", "refs/heads/other")
    git(remote.bare, "branch", "-D", "trunk")  # the app's branch goes away upstream
    refs = await apps.refs({"name": "web"})
    assert refs["branch_missing"] is True and refs["commits"] == []
    assert [b["name"] for b in refs["branches"]] == ["other"]
    with pytest.raises(ConfigError, match="has no branch 'trunk'"):
        await apps.refs({"name": "web", "commits": 3})

    listed = await apps.list({})
    assert [a["name"] for a in listed["apps"]] == ["web"]
    assert (tmp_path / "data" / "mirrors" / "web.git" / "HEAD").is_file()
    await apps.remove({"name": "web"})
    assert not (tmp_path / "data" / "mirrors" / "web.git").exists()
    with pytest.raises(UnknownApp, match="no application named 'web'"):
        await apps.show({"name": "web"})
