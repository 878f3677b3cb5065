"""seeder.git against real git: a bare repository over file:// as the remote, pushed to while the
seeder's mirror follows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from seeder.git import GitError, Mirror
from seeder.refs import RefError
from seeder.samplerepo import commit_all, git
from tests.gitremote import Remote, make_remote


def mirror_of(remote: Remote, tmp_path: Path, app: str = "web") -> Mirror:
    mirror = Mirror(app, remote.url, tmp_path / "mirrors" / f"{app}.git")
    mirror.sync()
    return mirror


def test_refs_follow_pushes_tags_newest_first_and_deleted_branches_go(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "r")
    mirror = mirror_of(remote, tmp_path)
    assert [b.short for b in mirror.refs().branches()] == ["main"]
    assert mirror.refs().tags() == []

    git(remote.work, "tag", "light-1")  # a lightweight tag, dated by its commit
    v2 = remote.commit("VERSION", "2\n", "version 2", tag="v2")
    git(remote.work, "checkout", "-q", "-b", "feature")
    feature = remote.commit("feature.txt", "f\n", "feature work")
    git(remote.work, "checkout", "-q", "main")
    remote.push()
    assert [b.short for b in mirror.refs().branches()] == ["main"], "no fetch, no change"

    mirror.sync()
    table = mirror.refs()
    assert {b.short: b.commit for b in table.branches()} == {"main": v2, "feature": feature}
    assert table.tags()[0].short == "v2"
    assert {t.short for t in table.tags()} == {"v2", "light-1"}
    v2_ref = table.get("refs/tags/v2")
    assert v2_ref is not None and v2_ref.info is not None
    assert (v2_ref.commit, v2_ref.info.subject, v2_ref.info.author) == (
        v2,
        "version 2",
        "shoal sample",
    )
    commits = mirror.commits("refs/heads/main", 5)
    assert [c.subject for c in commits] == ["version 2", "version 1"]
    assert commits[0].sha == v2 and commits[0].email == "sample@shoal.invalid"

    git(remote.bare, "branch", "-D", "feature")
    mirror.sync()
    assert [b.short for b in mirror.refs().branches()] == ["main"], "--prune drops it"


def test_resolve_by_branch_tag_short_sha_and_ancestry(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "r")
    first = git(remote.work, "rev-parse", "HEAD")
    second = remote.commit("VERSION", "2\n", "version 2", tag="v2")
    remote.push()
    mirror = mirror_of(remote, tmp_path)
    assert mirror.resolve("main").commit == second
    assert mirror.resolve("v2").kind == "tag"
    assert mirror.resolve(first[:7]).commit == first
    back = mirror.resolve("main~1")
    assert (back.commit, back.kind) == (first, "commit")
    with pytest.raises(RefError, match="not that deep"):
        mirror.resolve("main~5")
    with pytest.raises(RefError, match="no branch, tag or commit 'nope'"):
        mirror.resolve("nope")


def test_an_ambiguous_short_sha_is_refused_naming_both_commits(tmp_path: Path) -> None:
    remote = make_remote(tmp_path / "r")
    seen: dict[str, str] = {}
    clash: tuple[str, str] | None = None
    for i in range(3000):  # 4 hex digits: a shared prefix is expected after ~300 commits
        (remote.work / "n").write_text(f"{i}\n")
        sha = commit_all(remote.work, f"commit {i}")
        if sha[:4] in seen:
            clash = (seen[sha[:4]], sha)
            break
        seen[sha[:4]] = sha
    assert clash is not None, "no two of 3000 commits share 4 hex digits"
    remote.push()
    mirror = mirror_of(remote, tmp_path)
    with pytest.raises(RefError) as err:
        mirror.resolve(clash[0][:4])
    assert "ambiguous" in str(err.value)
    assert clash[0][:12] in str(err.value) and clash[1][:12] in str(err.value)
    assert mirror.resolve(clash[1][:12]).commit == clash[1]


def test_git_failures_name_the_app_and_never_the_password(tmp_path: Path) -> None:
    mirror = Mirror("web", "http://deploy:s3cr3t@127.0.0.1:9/x.git", tmp_path / "m" / "web.git")
    with pytest.raises(GitError) as err:
        mirror.sync(timeout=30)
    assert "app 'web'" in str(err.value) and "s3cr3t" not in str(err.value)
    assert not (tmp_path / "m" / "web.git").exists(), "a failed clone leaves no mirror"
    missing = Mirror("web", str(tmp_path / "nowhere"), tmp_path / "m" / "web.git")
    with pytest.raises(GitError, match="no git repository the seeder can read"):
        missing.sync()
