"""``shoal demo``: a whole rollout on this machine, with nothing set up beforehand.

Starts a seeder and N peer daemons as separate processes on loopback (127.0.0.2, .3, ...), makes
a git repository of the example app (``seeder/example_app/``, shipped in the wheel as package
data), builds a release of it, rolls it out, prints what every host reports, and stops everything
it started.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

import trio

from common.errors import ShoalError
from seeder import follow
from seeder.client import SeederClient
from seeder.localfleet import LocalFleet
from seeder.samplerepo import commit_all

# Package data of ``seeder`` (pyproject.toml [tool.setuptools.package-data]), so it is found both
# in the source tree and in an installed wheel.
EXAMPLE_APP = resources.files("seeder") / "example_app"


def make_example_repo(dest: Path) -> Path:
    # An installed wheel (or the source tree) is a plain directory: copytree keeps the hooks'
    # executable bits, which the peer checks before it runs them.
    with resources.as_file(EXAMPLE_APP) as app:
        if not app.is_dir():
            raise ShoalError(f"the example app is missing at {app}")
        shutil.copytree(app, dest)
    commit_all(dest, "example app 1.0.0", tag="v1.0.0")
    return dest


def _commit_version(repo: Path, tag: str) -> None:
    (repo / "VERSION").write_text(tag.lstrip("v") + "\n")
    commit_all(repo, f"example app {tag}", tag=tag)


async def run_demo(*, peers: int = 3) -> int:
    if not 1 <= peers <= 200:
        raise ShoalError("--peers must be between 1 and 200")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shoal-demo-") as tmp:
        root = Path(tmp)
        fleet = LocalFleet(root)
        try:
            print(f"demo: working in {root}", flush=True)
            control = await fleet.start_seeder()
            print(f"demo: seeder up at {control}", flush=True)
            names = [f"host-{i + 1}" for i in range(peers)]
            for i, name in enumerate(names):
                await fleet.start_peer(name, f"127.0.0.{i + 2}", labels=f"zone={'ab'[i % 2]}")
            async with fleet.client() as client:
                await fleet.wait_connected(client, names)
                print(f"demo: {peers} peer daemon(s) connected", flush=True)
                repo = await trio.to_thread.run_sync(make_example_repo, root / "example-app")
                return await _rollout(client, fleet, repo, names, started)
        finally:
            await fleet.stop_all()


async def _rollout(
    client: SeederClient, fleet: LocalFleet, repo: Path, names: list[str], started: float
) -> int:
    """Roll out v1.0.0, then v1.1.0 over it (so the old release's ApplicationStop runs)."""
    for tag in ("v1.0.0", "v1.1.0"):
        if tag != "v1.0.0":
            await trio.to_thread.run_sync(_commit_version, repo, tag)
        built = await client.call("release.build", repo=str(repo), ref=tag, app="example")
        release_id = built["release"]["release_id"]
        print(f"\ndemo: built release {release_id} ({built['release']['size']} bytes)")
        r = (await client.call("rollout.start", release_id=release_id, hosts="all"))["rollout"]
        print(f"demo: rollout {r['rollout_id']} started", flush=True)
        mode = follow.choose_mode(as_json=False)
        await follow.watch_rollout(client, r["rollout_id"], mode=mode, wait_for=120)
        r = (await client.call("rollout.status", rollout_id=r["rollout_id"]))["rollout"]
        if r["state"] != "succeeded":
            break
    for name in names:
        home = fleet.peer_dir(name)
        log = home / "deploy.log"
        ran: dict[str, list[str]] = {}
        for line in log.read_text().splitlines() if log.exists() else []:
            event, release = line.split()[:2]
            ran.setdefault(release, []).append(event)
        current = os.readlink(home / "current") if (home / "current").is_symlink() else "-"
        print(f"  {name}: current -> {current}")
        for release, events in ran.items():
            print(f"    hooks of {release}: {' '.join(events)}")
    ok = sum(t["state"] == "succeeded" for t in r["targets"])
    print(
        f"demo: {ok}/{len(names)} hosts live on {release_id}, rollout {r['state']}, "
        f"whole demo {time.monotonic() - started:.1f}s"
    )
    return 0 if r["state"] == "succeeded" else 1
