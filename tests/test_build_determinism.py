"""Builds in-process against a real remote: same commit + same settings -> same bytes -> same
infohash, with build steps, on two seeders (two data dirs, two mirrors, two checkouts at
different times); a subdirectory of a monorepo as the release."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from common.archive import list_archive
from common.errors import BuildError
from seeder.app_service import Apps
from seeder.build import build_app_release
from seeder.store import Store
from tests.gitremote import Remote, make_remote

SHOAL_YML = """\
build: mkdir -p dist && date +%s%N > dist/stamp.txt && echo built > dist/app.txt
include: [appspec.yml, hooks/, dist/]
exclude: [dist/stamp.txt]
"""


async def build_on_new_seeder(root: Path, url: str, ref: str) -> tuple[str, str, bytes]:
    await trio.to_thread.run_sync(root.mkdir)
    store = Store(root / "seeder.db")
    try:
        apps = Apps(store, root)
        await apps.add({"name": "web", "repo": url})
        built = await build_app_release(
            apps, "web", ref, releases_dir=root / "releases", tracker_url="http://t/announce"
        )
        archive = (built.directory / built.manifest.archive).read_bytes()
        return built.manifest.release_id, built.manifest.infohash, archive
    finally:
        store.close()


@pytest.mark.parametrize("ref", ["main", "v2"])
async def test_two_seeders_build_the_same_bytes(tmp_path: Path, ref: str) -> None:
    remote = await trio.to_thread.run_sync(make_remote, tmp_path / "git")
    await trio.to_thread.run_sync(
        lambda: (remote.commit("shoal.yml", SHOAL_YML, "build steps", tag="v2"), remote.push())
    )
    first = await build_on_new_seeder(tmp_path / "one", remote.url, ref)
    await trio.sleep(1.1 - time.time() % 1)  # another second: file times differ
    second = await build_on_new_seeder(tmp_path / "two", remote.url, ref)
    assert first == second


async def test_a_subdir_of_a_monorepo_is_the_release(tmp_path: Path) -> None:
    def monorepo() -> Remote:
        remote = make_remote(tmp_path / "git")
        (remote.work / "services" / "web").mkdir(parents=True)
        for name in ("appspec.yml", "hooks", "VERSION"):
            (remote.work / name).rename(remote.work / "services" / "web" / name)
        (remote.work / "shared").mkdir()
        (remote.work / "shared" / "lib.txt").write_text("shared code\n")
        remote.commit(
            "services/web/shoal.yml", "build: cp ../../shared/lib.txt lib.txt\n", "monorepo"
        )
        remote.push()
        return remote

    remote = await trio.to_thread.run_sync(monorepo)
    store = Store(tmp_path / "seeder.db")
    try:
        apps = Apps(store, tmp_path / "data")
        await apps.add({"name": "web", "repo": remote.url, "subdir": "services/web"})
        built = await build_app_release(
            apps, "web", "main", releases_dir=tmp_path / "releases", tracker_url="http://t/a"
        )
        listing = list_archive(built.directory / built.manifest.archive)
        assert {"appspec.yml", "VERSION", "lib.txt", "hooks/ApplicationStart.sh"} <= set(
            listing.modes
        )
        assert not any(p.startswith(("services/", "shared/")) for p in listing.modes)
        await apps.set({"name": "web", "subdir": "services/api"})
        with pytest.raises(BuildError, match="has no directory 'services/api'"):
            await build_app_release(
                apps, "web", "main", releases_dir=tmp_path / "releases", tracker_url="http://t/a"
            )
    finally:
        store.close()
