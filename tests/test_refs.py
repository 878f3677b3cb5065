"""Pure logic of applications: resolving refs, checking operator input, choosing build settings."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from seeder.applications import (
    App,
    BuildSettings,
    changed_app,
    check_repo_url,
    check_subdir,
    new_app,
    redact_url,
)
from seeder.buildsteps import choose_settings, parse_shoal_yml
from seeder.refs import Ref, RefError, RefTable, resolve_ref, split_ancestry

A = "a" * 40
B = "abcd" + "1" * 36
C = "abcd" + "2" * 36
D = "abdc" + "3" * 36
TABLE = RefTable(
    (
        Ref("refs/heads/main", A),
        Ref("refs/heads/dev", B),
        Ref("refs/heads/same", C),
        Ref("refs/tags/v1", A, created=3.0),  # git lists tags newest first
        Ref("refs/tags/same", A, created=2.0),
        Ref("refs/tags/v0", B, created=1.0),
        Ref("refs/heads/abdc", B),  # a branch named like a sha prefix
    )
)


def test_branches_tags_and_shas_resolve_to_one_commit() -> None:
    main = resolve_ref("web", "main", TABLE, [])
    assert (main.commit, main.kind, main.version) == (A, "branch", "v1")  # a tag at the commit
    tag = resolve_ref("web", "v0", TABLE, [])
    assert (tag.commit, tag.kind, tag.version) == (B, "tag", "v0")
    full = resolve_ref("web", "refs/tags/v1", TABLE, [])
    assert (full.commit, full.kind, full.version) == (A, "tag", "v1")
    short = resolve_ref("web", "ABCD2", TABLE, [C])
    assert (short.commit, short.kind, short.version) == (C, "commit", C[:12])


def test_ambiguous_and_unknown_refs_are_refused_naming_the_candidates() -> None:
    with pytest.raises(RefError) as err:
        resolve_ref("web", "same", TABLE, [])
    assert "ambiguous" in str(err.value)
    assert f"branch same ({C[:12]})" in str(err.value) and f"tag same ({A[:12]})" in str(err.value)
    with pytest.raises(RefError, match=f"commit {B[:12]}, commit {C[:12]}"):
        resolve_ref("web", "abcd", TABLE, [B, C])
    with pytest.raises(RefError, match=f"branch abdc \\({B[:12]}\\), commit {D[:12]}"):
        resolve_ref("web", "abdc", TABLE, [D])
    with pytest.raises(RefError, match="app 'web' has no branch, tag or commit 'nope'"):
        resolve_ref("web", "nope", TABLE, [])
    with pytest.raises(RefError, match="at least 4 hex digits"):
        resolve_ref("web", "abc", TABLE, [B])
    for bad in ("", "-x", "a b", "main:x", "a\nb"):
        with pytest.raises(RefError):
            resolve_ref("web", bad, TABLE, [])


def test_ancestry_suffixes_split_off() -> None:
    assert split_ancestry("main~3") == ("main", "~3")
    assert split_ancestry("v1.2^^") == ("v1.2", "^^")
    assert split_ancestry("main") == ("main", "")


def test_repo_urls_with_passwords_are_refused_without_repeating_the_password() -> None:
    for ok in (
        "https://git.example.com/team/app.git",
        "https://deploy@git.example.com/team/app.git",
        "ssh://git@10.0.0.5:2222/srv/app.git",
        "git@github.com:team/app.git",
        "file:///srv/git/app.git",
        "/srv/git/app.git",
    ):
        assert check_repo_url(ok) == ok
    with pytest.raises(ConfigError) as err:
        check_repo_url("https://deploy:hunter2@git.example.com/app.git")
    assert "hunter2" not in str(err.value) and "deploy:***@" in str(err.value)
    for bad in (
        "",
        "relative/path",
        "-oProxyCommand=x",
        "https:///nohost",
        "ext::sh -c touch% /tmp/pwned",
        "fd::17",
        "gopher://host/x",
    ):
        with pytest.raises(ConfigError):
            check_repo_url(bad)
    assert redact_url("fatal: https://u:pw@h/x and ssh://v:q@h") == (
        "fatal: https://u:***@h/x and ssh://v:***@h"
    )


def test_subdir_and_build_settings_are_checked() -> None:
    assert check_subdir("services/web/") == "services/web"
    assert check_subdir("./") == ""
    for bad in ("/abs", "../up", "a/../../b"):
        with pytest.raises(ConfigError):
            check_subdir(bad)
    with pytest.raises(ConfigError, match="unknown build setting"):
        BuildSettings.from_dict({"biuld": "make"}, source="x")
    with pytest.raises(ConfigError, match="timeout"):
        BuildSettings.from_dict({"timeout": -1}, source="x")
    with pytest.raises(ConfigError, match="include must be a list"):
        BuildSettings.from_dict({"include": "dist/**"}, source="x")


def test_app_set_changes_only_what_is_given() -> None:
    app = new_app({"name": "web", "repo": "/srv/web.git"}, now=1.0, by="alice")
    assert app.settings()["build"] == BuildSettings().to_dict()
    built = changed_app(app, {"build": {"build": "make dist", "include": ["dist/"]}}, now=2.0)
    assert (built.repo, built.branch, built.build.build, built.build.include) == (
        "/srv/web.git",
        "main",
        "make dist",
        ("dist/",),
    )
    moved = changed_app(built, {"branch": "release", "subdir": "web"}, now=3.0)
    assert (moved.branch, moved.subdir, moved.build.build) == ("release", "web", "make dist")
    cleared = changed_app(moved, {"clear_build": True}, now=4.0)
    assert not cleared.build.declared() and cleared.updated_at == 4.0
    assert App.from_dict(cleared.to_dict()) == cleared


def test_seeder_settings_win_over_shoal_yml_as_a_whole() -> None:
    repo = b"build: npm run build\ninclude: [dist/, appspec.yml]\ntimeout: 30\n"
    parsed = parse_shoal_yml(repo, source="shoal.yml")
    assert (parsed.build, parsed.include, parsed.timeout) == (
        "npm run build",
        ("dist/", "appspec.yml"),
        30.0,
    )
    assert choose_settings(BuildSettings(), repo, source="shoal.yml") == (parsed, "shoal.yml")
    mine = BuildSettings(build="make")
    assert choose_settings(mine, repo, source="shoal.yml") == (mine, "seeder")
    assert choose_settings(BuildSettings(), None, source="shoal.yml") == (BuildSettings(), "none")
    with pytest.raises(ConfigError, match=r"shoal\.yml is not valid YAML"):
        parse_shoal_yml(b"build: [", source="shoal.yml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_shoal_yml(b"- make", source="shoal.yml")
