"""The control methods of releases by application: ``release.build`` (and its streaming twin
``release.build.follow``), ``release.list`` and ``release.show``.

``release.build`` takes ``{app, ref}`` and nothing else: the seeder only builds from the mirror
of a registered application (never from a path a client names). ``release.build.follow``
answers with the resolved commit, then pushes the build steps' output lines as they come
(``kind: "output"``, ``data: {step, line, at}``), then one ``end`` event whose data is the
build's result (``ok: true`` and what ``release.build`` returns) or its error (``ok: false``).
A release's build log is kept with it in the store.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from common import messages as m
from common.errors import ConfigError, ShoalError
from seeder.app_service import Apps
from seeder.applications import unknown_app
from seeder.appstore import ReleaseSource
from seeder.build import BuiltRelease, build_app_release
from seeder.caller import current_caller
from seeder.control import Handler, Reply, StreamHandler
from seeder.store import Store

log = logging.getLogger("shoal.seeder.release")

LOG_LINES = 5000  # lines of build output kept with a release (the newest) ...
LOG_BYTES = 512 * 1024  # ... and at most this much text, so a log always fits in one message
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000  # releases listed (newest first)
RESULT_LINES = 200  # the log lines a build's answer carries (release show has the kept log)
FOLLOW_BUFFER = 1000  # lines queued for a streaming client before new ones are dropped
Publish = Callable[[BuiltRelease], Awaitable[bool]]  # register + seed; whether it was new


class UnknownReleaseId(ShoalError):
    pass


class Releases:
    def __init__(
        self,
        store: Store,
        apps: Apps,
        *,
        releases_dir: Path,
        tracker_url: str,
        piece_size: int,
        publish: Publish,
    ) -> None:
        self.store = store
        self.apps = apps
        self.releases_dir = releases_dir
        self.tracker_url = tracker_url
        self.piece_size = piece_size
        self.publish = publish

    def methods(self) -> dict[str, Handler]:
        return {"release.build": self.build, "release.list": self.list, "release.show": self.show}

    def streams(self) -> dict[str, StreamHandler]:
        return {"release.build.follow": self.build_follow}

    # --- building ------------------------------------------------------------------------------

    async def build(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._build(params, lambda step, line, at: None)

    async def build_follow(self, params: dict[str, Any], reply: Reply) -> None:
        app = self.apps.get(str(params.get("app", "")))
        given = params.get("ref")
        await reply.respond({"app": app.name, "ref": app.branch if given is None else str(given)})
        send, receive = trio.open_memory_channel[m.RolloutEvent](FOLLOW_BUFFER)

        def on_line(step: str, line: str, at: float) -> None:
            event = m.RolloutEvent(
                rollout_id="", seq=0, at=at, kind="output", data={"step": step, "line": line}
            )
            with contextlib.suppress(trio.WouldBlock):  # a slow client misses lines, not the log
                send.send_nowait(event)

        async def forward() -> None:
            async for event in receive:
                await reply.push(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            try:
                result = {"ok": True, **await self._build(params, on_line)}
            except ShoalError as exc:
                result = {"ok": False, "error_code": type(exc).__name__, "error": str(exc)}
            await send.aclose()
        await reply.push(
            m.RolloutEvent(rollout_id="", seq=0, at=time.time(), kind="end", data=result)
        )

    async def _build(
        self, params: dict[str, Any], on_line: Callable[[str, str, float], None]
    ) -> dict[str, Any]:
        if "repo" in params or "path" in params:
            raise ShoalError("release.build takes an application name and a ref, not a path")
        name = str(params.get("app", ""))
        given = params.get("ref")
        ref = self.apps.get(name).branch if given is None else str(given)  # default: its branch
        lines: collections.deque[dict[str, Any]] = collections.deque()
        size = [0]

        def collect(step: str, line: str) -> None:
            at = time.time()
            lines.append({"step": step, "line": line, "at": at})
            size[0] += len(line) + len(step)
            while len(lines) > LOG_LINES or size[0] > LOG_BYTES:
                old = lines.popleft()
                size[0] -= len(old["line"]) + len(old["step"])
            on_line(step, line, at)

        built = await build_app_release(
            self.apps,
            name,
            ref,
            releases_dir=self.releases_dir,
            tracker_url=self.tracker_url,
            piece_size=self.piece_size,
            on_line=collect,
        )
        with trio.CancelScope(shield=True):  # built and in place: register it, come what may
            result = await self._register(built, list(lines))
        return result

    async def _register(self, built: BuiltRelease, lines: list[dict[str, Any]]) -> dict[str, Any]:
        mf, src = built.manifest, built.source
        assert src is not None, "an application build always has its git source"
        self.store.add_release_source(
            ReleaseSource(
                release_id=mf.release_id,
                app=mf.app,
                ref=src.resolved.ref,
                commit=mf.commit,
                subject=src.commit.subject,
                author=f"{src.commit.author} <{src.commit.email}>",
                committed_at=src.commit.committed_at,
                built_by=current_caller().name,
                built_at=time.time(),
                build=src.build_record(),
                log=lines,
            )
        )
        created = await self.publish(built)
        log.info("release %s %s", mf.release_id, "built" if created else "exists")
        for warning in built.warnings:
            log.warning("release %s: %s", mf.release_id, warning)
        return {
            "release": mf.to_dict(),
            "created": created,
            "warnings": list(built.warnings),
            "resolved": src.resolved.to_dict(),
            "build": src.build_record(),
            "log": lines[-RESULT_LINES:],
        }

    # --- history -------------------------------------------------------------------------------

    def _live(self) -> dict[str, dict[str, int]]:
        """release id -> {env label value: hosts it is live (current) on}."""
        live: dict[str, dict[str, int]] = {}
        for host in self.store.hosts():
            if host.current:
                envs = live.setdefault(host.current, {})
                env = host.labels.get("env", "")
                envs[env] = envs.get(env, 0) + 1
        return live

    async def list(self, params: dict[str, Any]) -> dict[str, Any]:
        """Newest first, each with where it came from and where it is live."""
        app = params.get("app")
        limit = int(params.get("limit", DEFAULT_LIMIT))
        if not 1 <= limit <= MAX_LIMIT:
            raise ConfigError(f"--limit {limit} is not in 1..{MAX_LIMIT}")
        sources = self.store.release_sources()
        live = self._live()
        rows = []
        for manifest, _, created_at in reversed(self.store.releases()):
            if app and manifest.app != app:
                continue
            rows.append(
                _row(
                    manifest.to_dict(),
                    created_at,
                    sources.get(manifest.release_id),
                    live.get(manifest.release_id, {}),
                )
            )
        if app and not rows and self.store.app(str(app)) is None:
            raise unknown_app(str(app))
        return {"releases": rows[:limit], "total": len(rows)}

    async def show(self, params: dict[str, Any]) -> dict[str, Any]:
        """A release's manifest, where it came from, its build log, its rollouts."""
        release_id = str(params.get("release_id", ""))
        found = self.store.release(release_id)
        if found is None:
            raise UnknownReleaseId(
                f"no release {release_id!r} on this seeder (`shoal release list` shows them)"
            )
        manifest = found[0]
        created_at = next(at for mf, _, at in self.store.releases() if mf.release_id == release_id)
        source = self.store.release_source(release_id)
        row = _row(manifest.to_dict(), created_at, source, self._live().get(release_id, {}))
        return {
            "release": row,
            "manifest": manifest.to_dict(),
            "build": source.build if source else {},
            "log": source.log if source else [],
            "rollouts": self.store.rollouts_of_release(release_id),
        }


def _row(
    manifest: dict[str, Any], created_at: float, source: ReleaseSource | None, live: dict[str, int]
) -> dict[str, Any]:
    return {
        **manifest,  # every manifest field (release_id, app, version, commit, size, digest, ...)
        "created_at": created_at,
        "ref": source.ref if source else manifest.get("ref", ""),
        "subject": source.subject if source else "",
        "author": source.author if source else "",
        "committed_at": source.committed_at if source else 0.0,
        "built_at": source.built_at if source else created_at,
        "built_by": source.built_by if source else "",
        "size": manifest["size"],
        "live": live,
        "live_hosts": sum(live.values()),
    }
