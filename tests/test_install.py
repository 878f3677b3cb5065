"""peer.install: copying an appspec's files and applying its permissions, CodeDeploy-style."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from common.appspec import AppSpec, parse_appspec
from peer.install import InstallError, apply_files, apply_permissions

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")


def spec_of(body: str) -> AppSpec:
    return parse_appspec("version: 0.0\nos: linux\n" + body)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "release"
    (root / "app" / "lib").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "appspec.yml").write_text("version: 0.0\nos: linux\n")
    (root / "app" / "index.html").write_text("<h1>v2</h1>")
    (root / "app" / "run.sh").write_text("#!/bin/sh\n")
    (root / "app" / "run.sh").chmod(0o750)
    (root / "app" / "lib" / "x.py").write_text("x = 1\n")
    (root / "app" / "current.html").symlink_to("index.html")
    (root / "config" / "app.conf").write_text("port = 80\n")
    return root


def test_copies_trees_and_files_like_codedeploy(release: Path, tmp_path: Path) -> None:
    www, etc = tmp_path / "srv" / "www", tmp_path / "etc" / "app"
    spec = spec_of(
        f"files:\n  - {{source: app, destination: '{www}'}}\n"
        f"  - {{source: /config/app.conf, destination: '{etc}'}}\n"
    )
    done = apply_files(spec, release)
    # a directory source's contents go into the destination
    assert (www / "index.html").read_text() == "<h1>v2</h1>"
    assert (www / "lib" / "x.py").read_text() == "x = 1\n"
    assert mode_of(www / "run.sh") == 0o750
    assert os.readlink(www / "current.html") == "index.html"
    # a file source goes *into* the destination directory, missing parents created
    assert (etc / "app.conf").read_text() == "port = 80\n"
    assert done == [
        str(tmp_path / "srv"),
        str(www),
        str(www / "current.html"),
        str(www / "index.html"),
        str(www / "lib"),
        str(www / "lib" / "x.py"),
        str(www / "run.sh"),
        str(tmp_path / "etc"),
        str(etc),
        str(etc / "app.conf"),
    ]
    assert not list(www.glob(".*.tmp"))


def test_whole_release_and_overwrite(release: Path, tmp_path: Path) -> None:
    dest = tmp_path / "opt"
    dest.mkdir()
    (dest / "index.html").write_text("old")
    (dest / "keep.txt").write_text("not ours")
    spec = spec_of(f"files:\n  - {{source: /, destination: '{dest}'}}\n")
    done = apply_files(spec, release)
    assert (dest / "appspec.yml").exists()
    assert (dest / "app" / "index.html").read_text() == "<h1>v2</h1>"
    assert (dest / "keep.txt").read_text() == "not ours"
    assert str(dest) not in done  # it existed: not ours to re-permission
    # a second run (a redeploy) replaces the files and reports the same tree
    (release / "app" / "index.html").write_text("<h1>v3</h1>")
    assert apply_files(spec, release) == done
    assert (dest / "app" / "index.html").read_text() == "<h1>v3</h1>"


def test_retain_keeps_existing_files(release: Path, tmp_path: Path) -> None:
    dest = tmp_path / "etc"
    dest.mkdir()
    (dest / "app.conf").write_text("edited by hand")
    spec = spec_of(
        f"file_exists_behavior: RETAIN\nfiles:\n  - {{source: config, destination: '{dest}'}}\n"
    )
    assert apply_files(spec, release) == []
    assert (dest / "app.conf").read_text() == "edited by hand"


@pytest.mark.parametrize(
    ("prepare", "files", "message"),
    [
        (
            None,
            "{source: nope, destination: '%s'}",
            "files[0]: source 'nope' is not in the release",
        ),
        (
            "file:app.conf-is-dir",
            "{source: config, destination: '%s'}",
            "files[0]: cannot install app.conf: {dest}/app.conf is a directory",
        ),
        (
            "file-blocks-dir",
            "{source: app, destination: '%s'}",
            "files[0]: {dest}/lib exists and is not a directory",
        ),
        (
            None,
            "{source: config, destination: '%s'}\n  - {source: config, destination: '%s'}",
            "files[1]: {dest}/app.conf would be installed from both",
        ),
        (
            "escape",
            "{source: out/secret, destination: '%s'}",
            "files[0]: source 'out/secret' is not in the release",
        ),
    ],
)
def test_file_errors_name_the_mapping_and_path(
    release: Path, tmp_path: Path, prepare: str | None, files: str, message: str
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    if prepare == "file:app.conf-is-dir":
        (dest / "app.conf").mkdir()
    elif prepare == "file-blocks-dir":
        (dest / "lib").write_text("a file where a directory goes")
    elif prepare == "escape":
        (tmp_path / "outside").mkdir()
        (tmp_path / "outside" / "secret").write_text("s")
        (release / "out").symlink_to(tmp_path / "outside")
    spec = spec_of("files:\n  - " + files.replace("%s", str(dest)) + "\n")
    with pytest.raises(InstallError, match="^" + message.format(dest=dest).replace("[", r"\[")):
        apply_files(spec, release)


def _tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    for name in ("a.sh", "b.sh", "secret.sh", "notes.txt"):
        (root / name).write_text(name)
        (root / name).chmod(0o600)
    (root / "bin" / "deep.sh").write_text("deep")
    (root / "bin" / "deep.sh").chmod(0o600)
    return root


def test_permissions_pattern_except_and_type(tmp_path: Path) -> None:
    root = _tree(tmp_path / "app")
    root.chmod(0o700)
    (root / "bin").chmod(0o700)
    installed = [str(p) for p in root.rglob("*")]
    spec = spec_of(
        "permissions:\n"
        f"  - {{object: '{root}', pattern: '*.sh', except: [secret.sh], mode: 755, type: [file]}}\n"
        f"  - {{object: '{root}', mode: 711, type: [directory]}}\n"
    )
    apply_permissions(spec, installed)
    assert mode_of(root / "a.sh") == mode_of(root / "b.sh") == 0o755
    assert mode_of(root / "secret.sh") == 0o600  # except
    assert mode_of(root / "notes.txt") == 0o600  # not matched by the pattern
    assert mode_of(root / "bin" / "deep.sh") == 0o600  # patterns match direct children only
    assert mode_of(root / "bin") == 0o711  # '**' reaches directories below ...
    assert mode_of(root) == 0o700  # ... but never the object itself


def test_permissions_only_touch_installed_paths_unless_told_otherwise(tmp_path: Path) -> None:
    root = _tree(tmp_path / "app")
    spec = spec_of(f"permissions:\n  - {{object: '{root}', mode: 644, type: [file]}}\n")
    apply_permissions(spec, [str(root / "a.sh")])
    assert mode_of(root / "a.sh") == 0o644
    assert mode_of(root / "b.sh") == mode_of(root / "bin" / "deep.sh") == 0o600
    apply_permissions(spec)  # no list: everything below the object on disk
    assert mode_of(root / "b.sh") == mode_of(root / "bin" / "deep.sh") == 0o644


def test_file_object_and_later_entries_win(tmp_path: Path) -> None:
    root = _tree(tmp_path / "app")
    spec = spec_of(
        "permissions:\n"
        f"  - {{object: '{root}', mode: 640, type: [file]}}\n"
        f"  - {{object: '{root / 'a.sh'}', mode: 700}}\n"
        f"  - {{object: '{tmp_path / 'not-there'}', mode: 700}}\n"
    )
    apply_permissions(spec, [str(p) for p in root.rglob("*")])
    assert mode_of(root / "a.sh") == 0o700
    assert mode_of(root / "b.sh") == 0o640


def test_file_object_refuses_pattern(tmp_path: Path) -> None:
    root = _tree(tmp_path / "app")
    spec = spec_of(f"permissions:\n  - {{object: '{root / 'a.sh'}', pattern: '*.sh', mode: 7}}\n")
    with pytest.raises(InstallError, match=r"^permissions\[0\]: .*a.sh is a file"):
        apply_permissions(spec, [str(root / "a.sh")])


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "app")
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    outside.chmod(0o600)
    (root / "link").symlink_to(outside)
    spec = spec_of(f"permissions:\n  - {{object: '{root}', mode: 777}}\n")
    apply_permissions(spec, [str(root / "link")])
    assert mode_of(outside) == 0o600


def test_unknown_owner_or_group(tmp_path: Path) -> None:
    root = _tree(tmp_path / "app")
    for key in ("owner", "group"):
        spec = spec_of(f"permissions:\n  - {{object: '{root}', {key}: no-such-name-x}}\n")
        with pytest.raises(InstallError, match=rf"^permissions\[0\]: {key} 'no-such-name-x'"):
            apply_permissions(spec, [])


@as_root
def test_owner_group_and_setuid_mode(tmp_path: Path) -> None:
    root = _tree(tmp_path / "app")
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    spec = spec_of(
        f"permissions:\n  - {{object: '{root}', pattern: '*.sh', owner: nobody, group: {group},"
        " mode: 4755, type: [file]}\n"
    )
    apply_permissions(spec, [str(p) for p in root.rglob("*")])
    info = (root / "a.sh").stat()
    assert (info.st_uid, info.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert stat.S_IMODE(info.st_mode) == 0o4755  # chown first, so the setuid bit stays
    assert (root / "notes.txt").stat().st_uid == os.geteuid()
