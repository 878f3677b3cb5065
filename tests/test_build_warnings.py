"""``shoal release build`` against a real seeder: appspec warnings reach the operator; refusals
happen before any release exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from seeder.localfleet import LocalFleet
from tests.conftest import commit_version, make_app_repo, shoal

pytestmark = pytest.mark.integration

NOISY = """\
version: 0.0
os: linux
files:
  - source: VERSION
    destination: /srv/web
    owner: web
permissions:
  - object: srv/web
    mode: 640
hooks:
  ApplicationStop:
  Install:
    - location: hooks/BeforeInstall.sh
  BeforeInstall:
    - location: hooks/BeforeInstall.sh
  AfterInstall:
    - location: hooks/AfterInstall.sh
"""


async def test_warnings_reach_the_cli_and_refusals_build_nothing(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    repo = await trio.to_thread.run_sync(make_app_repo, tmp_path / "app")
    with trio.fail_after(120):
        await fleet.start_seeder()
        await trio.to_thread.run_sync(fleet.add_app, repo)

        def build(*extra: str) -> tuple[int, str, str]:
            out = shoal(fleet.control, "release", "build", "web", "--ref", "main", *extra)
            return out.returncode, out.stdout, out.stderr

        (repo / "appspec.yml").write_text(NOISY)
        (repo / "hooks" / "AfterInstall.sh").chmod(0o644)
        await trio.to_thread.run_sync(commit_version, repo, "noisy")
        code, stdout, stderr = await trio.to_thread.run_sync(build)
        assert code == 0, stderr
        warnings = stderr.strip().splitlines()
        assert warnings == [
            "shoal: warning: appspec.yml: files[0]: unknown key 'owner' is ignored "
            "(expected one of: source, destination)",
            "shoal: warning: appspec.yml: permissions[0]: 'object' 'srv/web' is a relative path; "
            "permissions apply to installed paths (absolute, like files[].destination), so this "
            "entry matches nothing and is ignored",
            "shoal: warning: appspec.yml: hooks.Install: 'Install' is the agent's own step: its "
            "1 script(s) never run and are ignored",
            "shoal: warning: appspec.yml: hooks.AfterInstall[0]: 'hooks/AfterInstall.sh' is not "
            "executable in the commit (mode 644): the hook will fail as not_executable; chmod +x "
            "it and commit",
        ]
        rid = stdout.strip().splitlines()[-1]
        code, stdout, stderr = await trio.to_thread.run_sync(build, "--json")
        assert code == 0 and stderr == ""
        result = json.loads(stdout)
        assert result["release"]["release_id"] == rid and result["created"] is False
        assert [f"shoal: warning: {w}" for w in result["warnings"]] == warnings

        releases = fleet.root / "seeder" / "releases"
        built = sorted(p.name for p in releases.iterdir())
        refusals = {
            "version: 0.0\nos: windows\n": "os: 'windows' is not supported",
            "version: 1.0\nos: linux\n": "version: 1.0 is not supported (must be 0.0)",
            "version: 0.0\nos: linux\nhooks: {\n": "invalid YAML",
            (
                "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n"
                "    - location: hooks/ApplicationStart.sh --fast\n"
            ): "'hooks/ApplicationStart.sh --fast' is not a file in the release: a location "
            "names one script, without arguments ('hooks/ApplicationStart.sh' is)",
            (
                "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: hooks\n"
            ): "hooks.ApplicationStart[0]: 'hooks' is not a file in the release",
            (
                "version: 0.0\nos: linux\nfiles:\n  - {source: hooks, destination: /srv/a}\n"
                "  - {source: config/app.conf, destination: /etc/app}\n"
            ): "files[1]: source 'config/app.conf' is not in the release",
        }
        for i, (text, message) in enumerate(refusals.items()):
            (repo / "appspec.yml").write_text(text)
            await trio.to_thread.run_sync(commit_version, repo, f"bad-{i}")
            code, stdout, stderr = await trio.to_thread.run_sync(build)
            assert code == 1 and stdout == ""
            lines = stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("shoal: error: "), stderr
            assert message in lines[0], stderr
        assert sorted(p.name for p in releases.iterdir()) == built
        listing = json.loads(shoal(fleet.control, "release", "list", "--json").stdout)
        assert [r["release_id"] for r in listing] == [rid]
