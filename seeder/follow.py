"""Following a rollout or a host's hook output from the CLI: subscribe, fold events, print.

Three outputs for one stream of events: a live terminal view that redraws in place (``rich``;
when stdout is a terminal), plain appended lines (pipes, CI logs, tests), or JSON lines
(``--json``). A stream that ends because this client lagged is resubscribed at once, with a fresh
snapshot (plain output then says so and prints what changed meanwhile).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TextIO

import trio
from rich.console import Console
from rich.live import Live

from common import messages as m
from common.errors import ConnectionClosed, ShoalError
from seeder import render
from seeder.client import SeederClient
from seeder.events import FINAL, LAGGED
from seeder.liveview import view
from seeder.watch import WatchModel

Mode = Literal["live", "plain", "json"]
Connect = Callable[[], Awaitable[SeederClient]]
RECONNECT_FIRST = 0.2  # seconds before the first redial after losing the seeder
RECONNECT_MAX = 5.0
REDRAW = 0.25  # seconds between redraws of the live view


def choose_mode(as_json: bool, out: TextIO = sys.stdout) -> Mode:
    if as_json:
        return "json"
    return "live" if out.isatty() else "plain"


def event_json(event: m.RolloutEvent) -> str:
    return json.dumps(
        {
            "rollout_id": event.rollout_id,
            "seq": event.seq,
            "at": event.at,
            "kind": event.kind,
            "data": event.data,
        },
        sort_keys=True,
    )


async def watch_rollout(
    client: SeederClient,
    rollout_id: str | None,
    *,
    mode: Mode,
    wait_for: float,
    reconnect: Connect | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Follow a rollout to its end; 0 only if it succeeded (1 otherwise, or on timeout).

    If the connection to the seeder is lost (it restarted, say) and ``reconnect`` is given,
    dial again with backoff and resubscribe: the new snapshot brings the view up to date."""
    model: WatchModel | None = None
    started = trio.current_time()
    console = Console(file=out)
    first = client
    with trio.move_on_after(wait_for) as scope:
        live = (
            Live(console=console, auto_refresh=False, transient=False) if mode == "live" else None
        )
        with live if live is not None else _nothing():
            delay = RECONNECT_FIRST
            while model is None or model.ended != FINAL:
                try:
                    snapshot, events = await client.subscribe(
                        "rollout.subscribe", rollout_id=rollout_id
                    )
                    model = _resync(model, snapshot, mode, out)
                    if live is not None:
                        await _live(model, events, live)
                    else:
                        await _appended(model, events, mode, out)
                except ConnectionClosed as exc:
                    if reconnect is None or model is None:
                        raise
                    print(f"(lost the seeder: {exc}; reconnecting)", file=sys.stderr, flush=True)
                    if client is not first:
                        await client.channel.aclose()
                    client = await _redial(reconnect, delay)
                    delay = min(delay * 2, RECONNECT_MAX)
                    model.ended = LAGGED  # what the new snapshot brings is a resync
                else:
                    delay = RECONNECT_FIRST
                rollout_id = model.rollout_id
    if client is not first:
        await client.channel.aclose()
    if model is None:
        print("shoal: error: gave up before the seeder answered", file=sys.stderr)
        return 1
    if mode != "json":
        print(model.report(), file=out, flush=True)
    if scope.cancelled_caught:
        print(f"gave up waiting after {wait_for:.0f}s; the rollout goes on", file=sys.stderr)
        return 1
    if mode != "json":
        print(model.summary(model.elapsed() or trio.current_time() - started), file=out, flush=True)
    return 0 if model.succeeded else 1


async def _redial(reconnect: Connect, delay: float) -> SeederClient:
    while True:
        await trio.sleep(delay)
        try:
            return await reconnect()
        except ConnectionClosed:
            delay = min(delay * 2, RECONNECT_MAX)


def _resync(
    old: WatchModel | None, snapshot: dict[str, Any], mode: Mode, out: TextIO
) -> WatchModel:
    new = WatchModel(snapshot)
    if mode == "json":
        print(json.dumps({"kind": "snapshot", **snapshot}, sort_keys=True), file=out, flush=True)
    elif mode == "plain":
        if old is not None:
            print("(resubscribed: what changed meanwhile follows)", file=out)
        lines = _changes(old, new)
        if lines:
            print("\n".join(lines), file=out, flush=True)
    return new


def _changes(old: WatchModel | None, new: WatchModel) -> list[str]:
    """Plain lines for what a (re)subscription shows that ``old`` had not."""
    lines = []
    if old is None or old.state != new.state:
        lines.append(
            f"rollout {new.rollout_id} {new.state}" + (f": {new.error}" if new.error else "")
        )
    for host, t in sorted(new.targets.items()):
        before = old.targets.get(host) if old else None
        if before is None or (before.state, before.step) != (t.state, t.step):
            lines.append(render.progress_line(host, t.state, t.step))
    return lines


async def _appended(model: WatchModel, events: Any, mode: Mode, out: TextIO) -> None:
    async for event in events:
        if mode == "json":
            print(event_json(event), file=out, flush=True)
            model.apply(event)
            continue
        lines = model.apply(event)
        if lines:
            print("\n".join(lines), file=out, flush=True)


async def _live(model: WatchModel, events: Any, live: Live) -> None:
    dirty = trio.Event()
    failed: list[ShoalError] = []
    async with trio.open_nursery() as nursery:

        async def draw() -> None:
            while True:
                live.update(view(model), refresh=True)
                with trio.move_on_after(REDRAW * 4):
                    await dirty.wait()
                await trio.sleep(REDRAW)

        nursery.start_soon(draw)
        try:
            async for event in events:
                model.apply(event)
                dirty.set()
                dirty = trio.Event()
        except ShoalError as exc:  # raised as itself, not wrapped in the nursery's group
            failed.append(exc)
        nursery.cancel_scope.cancel()
    live.update(view(model), refresh=True)
    if failed:
        raise failed[0]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- hook output ------------------------------------------------------------------------------


def line_text(line: dict[str, Any]) -> str:
    return f"[{line.get('step', '')}] {line.get('line', '')}"


async def show_logs(
    client: SeederClient,
    host: str,
    rollout_id: str | None,
    *,
    follow: bool,
    as_json: bool,
    reconnect: Connect | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print a host's hook output; with ``follow``, then its new lines as they come.

    A resubscription (this client lagged, or the seeder restarted and ``reconnect`` redialled)
    starts from a fresh snapshot, of which only the lines not printed yet are printed."""
    emit: Callable[[dict[str, Any]], str] = (
        (lambda d: json.dumps(d, sort_keys=True)) if as_json else line_text
    )
    if not follow:
        result = await client.call("logs.get", host=host, rollout_id=rollout_id)
        if not result.get("rollout_id") and not as_json:
            print(f"no rollout has targeted {host} yet", file=sys.stderr)
        _print_new(result.get("lines", []), emit, out, Counter())
        return 0
    printed: Counter[tuple[str, str, str]] = Counter()
    first, delay = client, RECONNECT_FIRST
    try:
        while True:
            try:
                snapshot, events = await client.subscribe(
                    "logs.subscribe", host=host, rollout_id=rollout_id
                )
                _print_new(snapshot.get("lines", []), emit, out, printed)
                ended = ""
                async for event in events:
                    if event.kind == "output":
                        line = {"rollout_id": event.rollout_id, "at": event.at, **event.data}
                        print(emit(line), file=out, flush=True)
                        printed[_line_key(line)] += 1
                    elif event.kind == "end":
                        ended = str(event.data.get("reason", ""))
                if ended != LAGGED:
                    return 0
                print("(fell behind the seeder's output; resubscribing)", file=sys.stderr)
            except ConnectionClosed as exc:
                if reconnect is None:
                    raise
                print(f"(lost the seeder: {exc}; reconnecting)", file=sys.stderr, flush=True)
                if client is not first:
                    await client.channel.aclose()
                client = await _redial(reconnect, delay)
                delay = min(delay * 2, RECONNECT_MAX)
    finally:
        if client is not first:
            await client.channel.aclose()


def _line_key(line: dict[str, Any]) -> tuple[str, str, str]:
    return (str(line.get("rollout_id")), str(line.get("step")), str(line.get("line")))


def _print_new(
    lines: list[dict[str, Any]],
    emit: Callable[[dict[str, Any]], str],
    out: TextIO,
    printed: Counter[tuple[str, str, str]],
) -> None:
    """Print the lines of a snapshot beyond those already printed (the n-th equal line is new
    if fewer than n were printed), and count them."""
    occurrences: Counter[tuple[str, str, str]] = Counter()
    for line in lines:
        key = _line_key(line)
        occurrences[key] += 1
        if occurrences[key] > printed[key]:
            print(emit(line), file=out)
            printed[key] += 1
    out.flush()
