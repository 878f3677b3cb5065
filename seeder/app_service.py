"""The control methods of applications: ``app.add``, ``app.set``, ``app.list``, ``app.show``,
``app.remove`` and ``app.refs``.

Each app's mirror lives in ``<data-dir>/mirrors/<app>.git``; git runs in worker threads, one
operation per app at a time (a lock per app), so a listing and a build never fetch into the same
mirror at once. Nothing here answers with a path on the seeder's disk.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import trio

from common.errors import ConfigError
from seeder.applications import App, changed_app, new_app, unknown_app
from seeder.caller import current_caller
from seeder.git import Mirror
from seeder.refs import Ref
from seeder.store import Store

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
T = TypeVar("T")
MAX_COMMITS = 1000
MAX_LISTED = 500  # branches and tags listed at most (the newest tags), so an answer stays small


class AppExists(ConfigError):
    pass


class Apps:
    """The registry of applications and their mirrors."""

    def __init__(self, store: Store, data_dir: Path) -> None:
        self.store = store
        self.mirrors = data_dir / "mirrors"
        self._locks: dict[str, trio.Lock] = {}

    def get(self, name: str) -> App:
        app = self.store.app(str(name))
        if app is None:
            raise unknown_app(str(name))
        return app

    def mirror(self, app: App) -> Mirror:
        return Mirror(app.name, app.repo, self.mirrors / f"{app.name}.git")

    async def with_mirror(self, app: App, work: Callable[[Mirror], T], *, fetch: bool = True) -> T:
        """Run ``work`` on the app's fetched mirror in a worker thread, one at a time per app."""
        lock = self._locks.setdefault(app.name, trio.Lock())
        mirror = self.mirror(app)

        def run() -> T:
            if fetch:
                mirror.sync()
            return work(mirror)

        async with lock:
            return await trio.to_thread.run_sync(run)

    # --- methods -------------------------------------------------------------------------------

    def methods(self) -> dict[str, Handler]:
        return {
            "app.add": self.add,
            "app.set": self.set,
            "app.list": self.list,
            "app.show": self.show,
            "app.remove": self.remove,
            "app.refs": self.refs,
        }

    async def add(self, params: dict[str, Any]) -> dict[str, Any]:
        """Register an app and clone its mirror (a remote that can't be fetched is refused and
        nothing is registered). Without a branch, the remote's default branch is the app's.
        Adding it again with the same settings changes nothing."""
        app = new_app(params, now=time.time(), by=current_caller().name)
        existing = self.store.app(app.name)
        if existing is not None:
            if not params.get("branch"):
                app = replace(app, branch=existing.branch)
            if existing.settings() != app.settings():
                raise AppExists(
                    f"application {app.name!r} exists with other settings; change them with "
                    f"`shoal app set {app.name} ...` or remove it first"
                )
            return {"app": existing.to_dict(), "created": False}
        try:
            branch = await self.with_mirror(app, lambda m: _branch(m, params.get("branch")))
        except BaseException:
            with trio.CancelScope(shield=True):  # an app refused leaves no mirror behind
                await trio.to_thread.run_sync(self.mirror(app).remove)
            raise
        app = replace(app, branch=branch)
        if not self.store.add_app(app):  # a concurrent add of the same name won
            return await self.add(params)
        return {"app": app.to_dict(), "created": True}

    async def set(self, params: dict[str, Any]) -> dict[str, Any]:
        app = self.get(params.get("name", ""))
        updated = changed_app(app, params, now=time.time())
        if updated.repo != app.repo or updated.branch != app.branch:
            # the new remote must work, and have the branch, before anything changes
            await self.with_mirror(updated, lambda m: _branch(m, updated.branch))
        self.store.update_app(updated)
        return {"app": updated.to_dict(), "changed": updated.settings() != app.settings()}

    async def list(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"apps": [app.to_dict() for app in self.store.apps()]}

    async def show(self, params: dict[str, Any]) -> dict[str, Any]:
        app = self.get(params.get("name", ""))
        releases = [
            s.release_id for s in self.store.release_sources().values() if s.app == app.name
        ]
        rules = self.store.promotion_rules(app.name).rules  # seeder.promotion_gate sets them
        return {"app": app.to_dict(), "releases": sorted(releases), "promote": rules}

    async def remove(self, params: dict[str, Any]) -> dict[str, Any]:
        """Forget an app and delete its mirror; its releases stay (rollouts and rollbacks may
        still use them)."""
        app = self.get(params.get("name", ""))
        lock = self._locks.setdefault(app.name, trio.Lock())
        async with lock:
            self.store.remove_app(app.name)
            await trio.to_thread.run_sync(self.mirror(app).remove)
        return {"removed": app.name}

    async def refs(self, params: dict[str, Any]) -> dict[str, Any]:
        """After a fetch: branches with their heads, tags newest first, and the latest
        ``commits`` commits of ``branch`` (default: the app's branch); each with the releases
        already built from its commit."""
        app = self.get(params.get("name", ""))
        count = int(params.get("commits", 10))
        if not 0 <= count <= MAX_COMMITS:
            raise ConfigError(f"--commits {count} is not in 0..{MAX_COMMITS}")
        branch = str(params.get("branch") or app.branch)

        built: dict[str, list[str]] = {}  # commit -> releases of this app built from it
        for source in self.store.release_sources().values():
            if source.app == app.name:
                built.setdefault(source.commit, []).append(source.release_id)

        def read(mirror: Mirror) -> dict[str, Any]:
            table = mirror.refs()

            def info(ref: Ref) -> dict[str, Any]:
                found = ref.info.to_dict() if ref.info else {"sha": ref.commit}
                return {**found, "releases": sorted(built.get(ref.commit, []))}

            branches, tags = table.branches(), table.tags()
            out: dict[str, Any] = {
                "app": app.name,
                "branches": [{"name": r.short, **info(r)} for r in branches[:MAX_LISTED]],
                "tags": [
                    {"name": r.short, "tagged_at": r.created, **info(r)} for r in tags[:MAX_LISTED]
                ],
                "branches_total": len(branches),
                "tags_total": len(tags),
                "branch": branch,
                "commits": [],
            }
            if count:
                if table.get(f"refs/heads/{branch}") is None:
                    raise ConfigError(f"app {app.name!r} has no branch {branch!r}")
                out["commits"] = [
                    {**c.to_dict(), "releases": sorted(built.get(c.sha, []))}
                    for c in mirror.commits(f"refs/heads/{branch}", count)
                ]
            return out

        return await self.with_mirror(app, read)


def _branch(mirror: Mirror, wanted: object) -> str:
    """The branch an app follows: ``wanted`` if the remote has it, else (not given) the
    remote's default branch."""
    branches = [r.short for r in mirror.refs().branches()]
    if wanted:
        if wanted not in branches:
            have = ", ".join(sorted(branches)[:20]) or "no branches"
            raise ConfigError(f"app {mirror.app!r}: the remote has no branch {wanted!r} ({have})")
        return str(wanted)
    return mirror.head_branch() or "main"
