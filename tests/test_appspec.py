"""common.appspec: the CodeDeploy appspec format, parsed and validated with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.appspec import (
    LIFECYCLE_EVENTS,
    PREVIOUS_RELEASE_EVENTS,
    AppSpec,
    FileMapping,
    Hook,
    Permission,
    load_appspec,
    parse_appspec,
)
from common.appspec_checks import check_file_sources, check_hook_locations
from common.errors import AppSpecError

FULL = """\
version: 0.0
os: linux
files:
  - source: /
    destination: /var/www/app
  - source: config/app.conf
    destination: /etc/app
permissions:
  - object: /var/www/app
    pattern: "*.sh"
    except: [secret.sh]
    owner: www-data
    group: www-data
    mode: 755
    type:
      - file
  - object: /etc/app/app.conf
    mode: "0640"
  - object: /var/www/app/bin
    mode: 4755
hooks:
  ApplicationStop:
    - location: scripts/stop.sh
      timeout: 60
  BeforeInstall:
    - location: /scripts/install_deps.sh
      timeout: 300
      runas: root
    - location: ./scripts/./backup.sh
  ValidateService:
    - location: scripts/check.sh
      runas: www-data
"""


def test_full_spec_parses() -> None:
    spec = parse_appspec(FULL)
    assert spec.version == "0.0" and spec.os == "linux"
    assert spec.file_exists_behavior == "OVERWRITE"
    assert spec.files == (
        FileMapping(source=".", destination="/var/www/app"),
        FileMapping(source="config/app.conf", destination="/etc/app"),
    )
    assert spec.permissions == (
        Permission(
            object="/var/www/app",
            pattern="*.sh",
            except_=("secret.sh",),
            owner="www-data",
            group="www-data",
            mode="755",
            type=("file",),
        ),
        Permission(object="/etc/app/app.conf", mode="0640"),
        Permission(object="/var/www/app/bin", mode="4755", type=("file", "directory")),
    )
    assert dict(spec.hooks) == {
        "ApplicationStop": (Hook("scripts/stop.sh", 60, None),),
        "BeforeInstall": (
            Hook("scripts/install_deps.sh", 300, "root"),  # leading '/' = release root
            Hook("scripts/backup.sh", 3600, None),  # CodeDeploy's default timeout
        ),
        "ValidateService": (Hook("scripts/check.sh", 3600, "www-data"),),
    }
    assert type(spec.hooks["BeforeInstall"][0].timeout) is int
    hash(spec)  # usable as a dict key / in sets despite the hooks mapping


def test_minimal_spec_and_empty_sections() -> None:
    assert parse_appspec("version: 0.0\nos: linux\n") == AppSpec(version="0.0", os="linux")
    spec = parse_appspec("version: 0.0\nos: linux\nfiles:\npermissions:\nhooks:\n")
    assert spec.files == () and spec.permissions == () and dict(spec.hooks) == {}
    assert parse_appspec('version: "0.0"\nos: linux\n').version == "0.0"


def test_lifecycle_events_are_codedeploys_scriptable_events() -> None:
    assert LIFECYCLE_EVENTS == (
        "BeforeBlockTraffic",
        "AfterBlockTraffic",
        "ApplicationStop",
        "BeforeInstall",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
        "BeforeAllowTraffic",
        "AfterAllowTraffic",
    )
    assert LIFECYCLE_EVENTS[:3] == PREVIOUS_RELEASE_EVENTS
    events = "".join(f"  {e}:\n    - location: s/{e}\n" for e in reversed(LIFECYCLE_EVENTS))
    spec = parse_appspec(f"version: 0.0\nos: linux\nhooks:\n{events}")
    assert set(spec.hooks) == set(LIFECYCLE_EVENTS)
    assert spec.warnings == ()


def test_octal_mode_means_what_was_written() -> None:
    # YAML 1.1 would read 0644 as the number 420; the spec keeps the digits as written.
    spec = parse_appspec("version: 0.0\nos: linux\npermissions:\n  - object: /x\n    mode: 0644\n")
    assert spec.permissions[0].mode == "0644"
    spec = parse_appspec("version: 0.0\nos: linux\npermissions:\n  - object: /x\n    mode: 44\n")
    assert spec.permissions[0].mode == "044"


def test_file_exists_behavior() -> None:
    spec = parse_appspec("version: 0.0\nos: linux\nfile_exists_behavior: RETAIN\n")
    assert spec.file_exists_behavior == "RETAIN"


HEAD = "version: 0.0\nos: linux\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # the document itself
        ("", "appspec.yml: the document is empty"),
        ("- a\n- b\n", "appspec.yml: the document must be a mapping, not a list"),
        ("version: 0.0\nos: [linux\n", "appspec.yml: line 3, column 1: invalid YAML"),
        (
            "version: 0.0\nos: linux\nos: linux\n",
            "line 3, column 1: invalid YAML: duplicate key 'os'",
        ),
        (HEAD + "---\nx: 1\n", "invalid YAML: expected a single document"),
        ("os: linux\n", "appspec.yml: version: missing"),
        ("version: 0.0\n", "appspec.yml: os: missing"),
        ("version: 1.0\nos: linux\n", "appspec.yml: version: 1.0 is not supported (must be 0.0)"),
        ("version: false\nos: linux\n", "version: False is not supported"),
        ("version: 0.0\nos: windows\n", "os: 'windows' is not supported"),
        ('version: "0.0"\nos: windows\nhooks:\n', "shoal deploys to linux hosts only"),
        ("version: 0.1\nos: linux\n", "version: 0.1 is not supported (must be 0.0)"),
        ('version: "1"\nos: linux\n', "version: '1' is not supported"),
        (
            "version: 0.0\nos: linux\nhooks:\n  A: [\n",
            "appspec.yml: line 5, column 1: invalid YAML",
        ),
        ("version: 0.0\nos: linux\n\tfiles: []\n", "invalid YAML"),
        (HEAD + "Resources: []\n", "Resources: this is an ECS or Lambda appspec"),
        (
            HEAD + "hooks:\n  BeforeELBRemove: []\n",
            "hooks.BeforeELBRemove: 'BeforeELBRemove' is an old name: use 'BeforeBlockTraffic'",
        ),
        (HEAD + "hooks:\n  AfterInstal: []\n", "unknown lifecycle event 'AfterInstal'"),
        (HEAD + "hooks:\n  Install: {location: a}\n", "hooks.Install: must be a list"),
        (HEAD + "file_exists_behavior: DISALLOW\n", "file_exists_behavior: 'DISALLOW' is not"),
        # files
        (HEAD + "files: {source: a}\n", "appspec.yml: files: must be a list, not a dict"),
        (HEAD + "files:\n  - source: a\n", "files[0]: 'destination' is required"),
        (HEAD + "files:\n  - destination: /a\n", "files[0]: 'source' is required"),
        (
            HEAD + "files:\n  - {source: a, destination: a}\n",
            "files[0]: 'destination' 'a' must be an absolute path",
        ),
        (
            HEAD + "files:\n  - {source: ../up, destination: /a}\n",
            "files[0]: 'source' '../up' points outside the release",
        ),
        (HEAD + "files:\n  - a\n", "files[0]: must be a mapping, not a str"),
        (HEAD + "files: 5\n", "files: must be a list, not an int"),
        # hooks
        (HEAD + "hooks: [a]\n", "hooks: must be a mapping of lifecycle events"),
        (
            HEAD + "hooks:\n  BeforeInstall:\n    location: a\n",
            "hooks.BeforeInstall: must be a list of scripts, not a dict",
        ),
        (
            HEAD + "hooks:\n  BeforeInstall:\n    - timeout: 5\n",
            "hooks.BeforeInstall[0]: 'location' is required",
        ),
        (
            HEAD + "hooks:\n  BeforeInstall:\n    - a.sh\n",
            "hooks.BeforeInstall[0]: must be a mapping, not a str",
        ),
        (
            HEAD + "hooks:\n  AfterInstall:\n    - {location: a, timeout: soon}\n",
            "hooks.AfterInstall[0]: 'timeout' must be an integer number of seconds",
        ),
        (
            HEAD + "hooks:\n  AfterInstall:\n    - {location: a, timeout: 1.5}\n",
            "'timeout' must be an integer number of seconds",
        ),
        (
            HEAD + "hooks:\n  AfterInstall:\n    - {location: a, timeout: 0}\n",
            "'timeout' 0 must be between 1 and 3600 seconds",
        ),
        (
            HEAD + "hooks:\n  AfterInstall:\n    - {location: a, timeout: 3601}\n",
            "'timeout' 3601 must be between 1 and 3600 seconds",
        ),
        (
            HEAD + "hooks:\n  AfterInstall:\n    - {location: a, runas: 7}\n",
            "hooks.AfterInstall[0]: 'runas' must be a non-empty string",
        ),
        (
            HEAD + "hooks:\n  AfterInstall:\n    - {location: ''}\n",
            "'location' must be a non-empty string",
        ),
        (
            HEAD + "hooks:\n  AfterInstall:\n    - {location: /}\n",
            "'location' '/' must name a file",
        ),
        (
            HEAD + "hooks:\n  AfterInstall:\n    - {location: a/../../x.sh}\n",
            "hooks.AfterInstall[0]: 'location' 'a/../../x.sh' points outside the release",
        ),
        # permissions
        (HEAD + "permissions:\n  - mode: 644\n", "permissions[0]: 'object' is required"),
        (
            HEAD + "permissions:\n  - {object: /a, mode: 0o9}\n",
            "permissions[0]: 'mode' '0o9' must be 1 to 4 octal digits",
        ),
        (HEAD + "permissions:\n  - {object: /a, mode: 79}\n", "'mode' '79' must be 1 to 4 octal"),
        (HEAD + "permissions:\n  - {object: /a, mode: 12345}\n", "'mode' '12345' must be"),
        (HEAD + "permissions:\n  - {object: /a, mode: true}\n", "'mode' must be octal digits"),
        (
            HEAD + "permissions:\n  - {object: /a, type: [socket]}\n",
            "permissions[0]: 'type' 'socket' is not one of: file, directory",
        ),
        (HEAD + "permissions:\n  - {object: /a, type: []}\n", "'type' must be a non-empty list"),
        (
            HEAD + "permissions:\n  - {object: /a, except: b}\n",
            "permissions[0].except: must be a list, not a str",
        ),
        (
            HEAD + "permissions:\n  - {object: /a, pattern: a/b}\n",
            "'pattern' 'a/b' must match names, not paths",
        ),
        (HEAD + "permissions:\n  - {object: /a, owner: 1000}\n", "'owner' must be a non-empty"),
        (
            HEAD + "permissions:\n  - {object: /a, acls: [u:bob:rw]}\n",
            "permissions[0]: 'acls' is not supported by shoal",
        ),
        (HEAD + "permissions:\n  - {object: /a, context: {type: t}}\n", "'context' is not supp"),
    ],
)
def test_invalid_specs_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(AppSpecError) as caught:
        parse_appspec(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_errors_name_the_source() -> None:
    with pytest.raises(AppSpecError, match=r"^releases/r1/appspec.yml: os: "):
        parse_appspec("version: 0.0\nos: aix\n", source="releases/r1/appspec.yml")


def test_load_appspec(tmp_path: Path) -> None:
    with pytest.raises(AppSpecError, match=r"no appspec\.yml or appspec\.yaml"):
        load_appspec(tmp_path)
    (tmp_path / "appspec.yaml").write_text(HEAD)
    assert load_appspec(tmp_path).os == "linux"
    (tmp_path / "appspec.yml").write_text("version: 0.0\nos: windows\n")
    with pytest.raises(AppSpecError, match=r"^appspec\.yml: os: "):
        load_appspec(tmp_path)  # appspec.yml wins over appspec.yaml
    (tmp_path / "appspec.yml").write_bytes(b"version: 0.0\nos: \xff\n")
    with pytest.raises(AppSpecError, match=r"^appspec\.yml: cannot be read"):
        load_appspec(tmp_path)


def test_check_hook_locations() -> None:
    spec = parse_appspec(FULL)
    present = {
        "scripts/stop.sh",
        "scripts/install_deps.sh",
        "scripts/backup.sh",
        "scripts/check.sh",
    }
    asked: list[str] = []

    def exists(location: str) -> bool:
        asked.append(location)
        return location in present

    check_hook_locations(spec, exists)
    assert sorted(asked) == sorted(present)

    present.discard("scripts/backup.sh")
    present.discard("scripts/check.sh")
    with pytest.raises(AppSpecError) as caught:
        check_hook_locations(spec, exists)
    assert str(caught.value) == (
        "appspec.yml: hooks.BeforeInstall[1]: 'scripts/backup.sh' is not a file in the release; "
        "hooks.ValidateService[0]: 'scripts/check.sh' is not a file in the release"
    )


@pytest.mark.parametrize("location", ["/etc/passwd", "../x.sh", "a/../../x.sh", ""])
def test_check_hook_locations_refuses_escapes_in_hand_built_specs(location: str) -> None:
    spec = AppSpec(version="0.0", os="linux", hooks={"BeforeInstall": (Hook(location),)})
    with pytest.raises(AppSpecError, match=r"hooks.BeforeInstall\[0\]: .* points outside"):
        check_hook_locations(spec, lambda _: True)


# --- accepted, with a warning: what the CodeDeploy agent silently ignores -----------------------


def test_events_without_scripts_are_accepted() -> None:
    spec = parse_appspec(HEAD + "hooks:\n  ApplicationStop:\n  BeforeInstall: []\n")
    assert dict(spec.hooks) == {"ApplicationStop": (), "BeforeInstall": ()}
    assert spec.warnings == ()


def test_traffic_hooks_parse() -> None:
    spec = parse_appspec(
        HEAD + "hooks:\n"
        "  AfterAllowTraffic:\n    - location: lb/join.sh\n"
        "  BeforeBlockTraffic:\n    - location: lb/leave.sh\n      runas: app\n"
    )
    assert spec.hooks["BeforeBlockTraffic"] == (Hook("lb/leave.sh", 3600, "app"),)
    assert spec.hooks["AfterAllowTraffic"] == (Hook("lb/join.sh"),)


@pytest.mark.parametrize("event", ["DownloadBundle", "Install", "BlockTraffic", "AllowTraffic"])
def test_scripts_on_the_agents_own_events_are_ignored_with_a_warning(event: str) -> None:
    spec = parse_appspec(HEAD + f"hooks:\n  {event}:\n    - location: x.sh\n    - location: y.sh\n")
    assert dict(spec.hooks) == {}
    assert spec.warnings == (
        f"appspec.yml: hooks.{event}: {event!r} is the agent's own step: its 2 script(s) never "
        "run and are ignored",
    )
    # ... and an agent event with no scripts is no mistake at all
    assert parse_appspec(HEAD + f"hooks:\n  {event}:\n").warnings == ()


def test_unknown_keys_in_files_entries_are_ignored_with_a_warning() -> None:
    spec = parse_appspec(
        HEAD + "files:\n  - {source: a, destination: /a, owner: root, mode: 644}\n"
    )
    assert spec.files == (FileMapping("a", "/a"),)
    assert spec.warnings == (
        "appspec.yml: files[0]: unknown key 'owner' is ignored "
        "(expected one of: source, destination)",
        "appspec.yml: files[0]: unknown key 'mode' is ignored "
        "(expected one of: source, destination)",
    )


def test_unknown_keys_in_hooks_and_permissions_are_ignored_with_a_warning() -> None:
    spec = parse_appspec(
        HEAD + "hooks:\n  AfterInstall:\n    - {location: a, sudo: true, timout: 5}\n"
        "permissions:\n  - {object: /a, colour: red}\n"
    )
    assert spec.hooks["AfterInstall"] == (Hook("a"),)  # 'timout' is not 'timeout'
    assert spec.permissions == (Permission("/a"),)
    assert sorted(w.split(" is ignored")[0] for w in spec.warnings) == [
        "appspec.yml: hooks.AfterInstall[0]: unknown key 'sudo'",
        "appspec.yml: hooks.AfterInstall[0]: unknown key 'timout'",
        "appspec.yml: permissions[0]: unknown key 'colour'",
    ]


def test_relative_permission_objects_are_ignored_with_a_warning() -> None:
    spec = parse_appspec(
        HEAD + "permissions:\n  - {object: app/bin, mode: 755}\n  - {object: /srv/app, mode: 750}\n"
    )
    assert spec.permissions == (Permission("/srv/app", mode="750"),)
    (warning,) = spec.warnings
    assert warning.startswith("appspec.yml: permissions[0]: 'object' 'app/bin' is a relative")
    assert "matches nothing and is ignored" in warning
    # an ignored entry is still checked: a broken one is refused, not ignored
    with pytest.raises(AppSpecError, match=r"permissions\[0\]: 'mode' '9' must be"):
        parse_appspec(HEAD + "permissions:\n  - {object: app/bin, mode: 9}\n")


def test_warnings_do_not_change_equality() -> None:
    quiet = parse_appspec(HEAD + "files:\n  - {source: a, destination: /a}\n")
    noisy = parse_appspec(HEAD + "files:\n  - {source: a, destination: /a, x: 1}\n")
    assert quiet == noisy and noisy.warnings and not quiet.warnings


# --- hook locations name one file -----------------------------------------------------------


def test_a_location_with_arguments_is_refused_with_a_hint() -> None:
    spec = parse_appspec(HEAD + "hooks:\n  ApplicationStart:\n    - location: s/start.sh --fast\n")
    with pytest.raises(AppSpecError) as caught:
        check_hook_locations(spec, lambda path: path == "s/start.sh")
    assert str(caught.value) == (
        "appspec.yml: hooks.ApplicationStart[0]: 's/start.sh --fast' is not a file in the "
        "release: a location names one script, without arguments ('s/start.sh' is); put the "
        "arguments inside the script"
    )
    with pytest.raises(AppSpecError, match=r"without arguments; put"):
        check_hook_locations(spec, lambda path: False)


def test_file_sources_must_be_in_the_release() -> None:
    spec = parse_appspec(
        HEAD + "files:\n  - {source: /, destination: /a}\n  - {source: conf, destination: /b}\n"
        "  - {source: bin/x, destination: /c}\n  - {source: gone, destination: /d}\n"
    )
    check_file_sources(spec, lambda p: p == "bin/x", lambda p: p in ("conf", "gone"), source="s")
    with pytest.raises(AppSpecError) as caught:
        check_file_sources(spec, lambda p: False, lambda p: p == "conf", source="appspec.yml")
    assert str(caught.value) == (
        "appspec.yml: files[2]: source 'bin/x' is not in the release; "
        "files[3]: source 'gone' is not in the release"
    )
