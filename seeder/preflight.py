"""``rollout preflight``: ask every target peer whether it could take a release, changing nothing.

The seeder reads what the checks need from the release archive once (:func:`release_facts`),
sends one :class:`~common.messages.Preflight` to each connected target and gathers the
:class:`~common.messages.PreflightResult`s until all have answered or the timeout passes. Every
target gets a row: ``ok`` or ``failed`` from its own checks, ``unreachable`` when it is not
connected, ``silent`` when it did not answer in time. Nothing is stored: a preflight is a
question, not part of any rollout.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from common import messages as m
from common.appspec import APPSPEC_NAMES, parse_appspec
from common.archive import list_archive
from common.errors import AppSpecError, ShoalError
from common.preflight import HookFacts, ReleaseFacts, interpreter_line
from common.release import Manifest

log = logging.getLogger("shoal.seeder.preflight")

DEFAULT_TIMEOUT = 10.0
Send = Callable[[str, m.Message], Awaitable[bool]]


class PreflightError(ShoalError):
    pass


def release_facts(manifest: Manifest, release_dir: Path) -> ReleaseFacts:
    """What the peers' checks need, read from the release's archive (blocking: use a thread)."""
    if manifest.kind != "app":
        raise AppSpecError(f"release {manifest.release_id} is a shoal upgrade: it has no hooks")
    listing = list_archive(release_dir / manifest.archive, read=APPSPEC_NAMES)
    name = next((n for n in APPSPEC_NAMES if n in listing.texts), None)
    if name is None:
        raise AppSpecError(f"release {manifest.release_id} has no appspec.yml")
    spec = parse_appspec(listing.texts[name].decode("utf-8", "replace"), source=name)
    hooks = tuple(
        HookFacts(
            event=event,
            location=hook.location,
            runas=hook.runas,
            present=hook.location in listing.modes,
            executable=bool(listing.modes.get(hook.location, 0) & 0o111),
            interpreter=interpreter_line(listing.heads.get(hook.location, b"")),
        )
        for event, entries in spec.hooks.items()
        for hook in entries
    )
    destinations = tuple(dict.fromkeys(f.destination for f in spec.files))
    return ReleaseFacts(manifest.to_dict(), listing.unpacked_size, hooks, destinations)


class Preflights:
    """Preflight checks in flight: who asked what, and the answers as they arrive."""

    def __init__(self) -> None:
        self._waiting: dict[str, trio.MemorySendChannel[m.PreflightResult]] = {}

    def on_result(self, host: str, msg: m.PreflightResult) -> None:
        """A peer's answer (from its connection task); late or unknown answers are dropped."""
        channel = self._waiting.get(msg.check_id)
        if channel is None:
            log.info("late preflight answer from %s dropped", host)
            return
        try:
            channel.send_nowait(m.PreflightResult(msg.check_id, host, msg.checks))
        except (trio.WouldBlock, trio.ClosedResourceError):
            log.warning("unexpected preflight answer from %s dropped", host)

    async def run(
        self,
        facts: ReleaseFacts,
        targets: list[str],
        connected: set[str],
        send: Send,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - how long peers get to answer
    ) -> list[dict[str, Any]]:
        """One row per target, in the targets' order."""
        if not 0 < timeout <= 600:
            raise PreflightError(
                f"timeout {timeout:g}s must be more than 0 and at most 600 seconds"
            )
        check_id = secrets.token_hex(8)
        asked = [h for h in targets if h in connected]
        answers: dict[str, list[dict[str, Any]]] = {}
        sent: set[str] = set()
        request = m.Preflight(check_id=check_id, release=facts.to_dict())
        send_channel, receive_channel = trio.open_memory_channel[m.PreflightResult](
            max(1, len(asked))
        )
        self._waiting[check_id] = send_channel
        try:
            with trio.move_on_after(timeout):
                async with trio.open_nursery() as nursery:
                    for host in asked:
                        nursery.start_soon(self._ask, send, host, request, sent)
                    if not asked:
                        nursery.cancel_scope.cancel()
                    async for answer in receive_channel:
                        if answer.host in asked:
                            answers[answer.host] = answer.checks
                        if len(answers) == len(asked):
                            nursery.cancel_scope.cancel()
                    # (the loop only ends by cancellation: the send side stays open)
        finally:
            del self._waiting[check_id]
            send_channel.close()
        return [_row(host, host in connected, host in sent, answers.get(host)) for host in targets]

    async def _ask(self, send: Send, host: str, request: m.Preflight, sent: set[str]) -> None:
        if await send(host, request):
            sent.add(host)


def _row(
    host: str, connected: bool, sent: bool, checks: list[dict[str, Any]] | None
) -> dict[str, Any]:
    if checks is None:
        status = "silent" if connected and sent else "unreachable"
        detail = (
            "connected, but did not answer in time"
            if status == "silent"
            else "not connected to the seeder"
        )
        return {"host": host, "status": status, "ok": False, "detail": detail, "checks": []}
    ok = bool(checks) and all(bool(c.get("ok")) for c in checks)
    problems = [str(c.get("detail", "")) for c in checks if not c.get("ok")]
    if not checks:
        problems = ["the host answered without any checks"]
    return {
        "host": host,
        "status": "ok" if ok else "failed",
        "ok": ok,
        "detail": "; ".join(problems),
        "checks": checks,
    }
