"""What an operator watching a rollout sees, as a pure model: a snapshot plus events in, lines out.

:class:`WatchModel` starts from the snapshot that ``rollout.subscribe`` answers with and folds in
each pushed event. :meth:`WatchModel.apply` returns the plain lines that one event is worth (what
a non-terminal output appends); the terminal view (:mod:`seeder.follow`) draws the same model's
counts, transfer and failures in place. No IO, no clock: time comes in with the events.

Rollout views and events are read with defaults, so a seeder without waves (or a newer one with
more fields) is shown as well as it can be.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from common import messages as m
from seeder import render

OUTPUT_LINES = 10  # last output lines shown per failed host
FAILED_SHOWN = 20  # failed hosts whose output the final report shows (the rest: shoal logs)
MILESTONE = 10  # percent: a plain transfer line each time the total crosses a multiple of it
OUTER_STEPS = frozenset({"stage", "activate"})  # steps that enclose the others


@dataclass
class TargetView:
    host: str
    state: str
    step: str = ""
    wave: int | None = None
    error: str = ""
    output: list[str] = field(default_factory=list)  # the last lines of its failed step
    failed_step: str = ""


@dataclass(frozen=True)
class Transfer:
    """Download progress summed over the targets that reported any."""

    done: int
    total: int
    rate: float  # bytes per second, summed over the hosts still downloading
    hosts: int  # hosts that reported progress

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None when nothing moves)."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        return left / self.rate if self.rate > 0 else None


class WatchModel:
    def __init__(self, snapshot: dict[str, Any]) -> None:
        view: dict[str, Any] = snapshot.get("rollout", snapshot)
        self.rollout_id = str(view.get("rollout_id", ""))
        self.release_id = str(view.get("release_id", ""))
        self.state = str(view.get("state", ""))
        self.error = str(view.get("error") or "")
        self.started_at = float(view.get("created_at") or 0.0)
        self.last_at = float(view.get("updated_at") or self.started_at)
        self.waves: dict[int, dict[str, Any]] = {
            int(w["index"]): dict(w) for w in view.get("waves", []) if "index" in w
        }
        self.targets: dict[str, TargetView] = {}
        for t in view.get("targets", []):
            tv = TargetView(
                host=str(t["host"]),
                state=str(t.get("state", "")),
                step=str(t.get("step") or ""),
                wave=t.get("wave"),
                error=str(t.get("error") or ""),
                output=list(t.get("output") or []),
                failed_step=_failed_step(t.get("steps", [])),
            )
            self.targets[tv.host] = tv
        for w in self.waves.values():
            for host in w.get("hosts", []):
                if host in self.targets and self.targets[host].wave is None:
                    self.targets[host].wave = int(w["index"])
        self.progress: dict[str, dict[str, Any]] = {
            h: dict(p) for h, p in snapshot.get("progress", {}).items()
        }
        self.release_size = int(snapshot.get("release", {}).get("size") or 0)
        self.gates: list[dict[str, Any]] = []
        self.last_seq = max((int(e.get("seq", 0)) for e in view.get("timeline", [])), default=0)
        self.ended: str | None = None  # the reason of the stream's end event, once it came
        self._milestone = int(self.transfer().fraction * 100) // MILESTONE

    # --- folding events ----------------------------------------------------------------------

    def apply(self, event: m.RolloutEvent) -> list[str]:
        """Fold one event in; return the plain lines it is worth (often none)."""
        if event.seq and event.seq <= self.last_seq:
            return []  # already in the snapshot (subscribed before it was read)
        if event.seq:
            self.last_seq = event.seq
        self.last_at = max(self.last_at, event.at)
        handler = getattr(self, f"_on_{event.kind}", None)
        return list(handler(event.data)) if handler is not None else []

    def _on_rollout(self, d: dict[str, Any]) -> list[str]:
        state, error = str(d.get("state", self.state)), str(d.get("error") or "")
        if state == self.state and error == self.error:
            return []
        self.state, self.error = state, error
        return [f"rollout {self.rollout_id} {state}" + (f": {error}" if error else "")]

    def _on_wave(self, d: dict[str, Any]) -> list[str]:
        index = int(d.get("wave", 0))
        hosts = list(d.get("hosts", self.waves.get(index, {}).get("hosts", [])))
        self.waves[index] = {"index": index, "hosts": hosts, "state": str(d.get("state", ""))}
        for host in hosts:
            if host in self.targets:
                self.targets[host].wave = index
        return [f"wave {index} {d.get('state', '')}: {len(hosts)} host(s)"]

    def _on_target(self, d: dict[str, Any]) -> list[str]:
        host = str(d.get("host", ""))
        t = self.targets.setdefault(host, TargetView(host, ""))
        if d.get("wave") is not None:
            t.wave = int(d["wave"])
        if d.get("error"):
            t.error = str(d["error"])
        return self._move(t, str(d.get("state", t.state)), str(d.get("step") or t.step))

    def _on_step(self, d: dict[str, Any]) -> list[str]:
        host, step, state = str(d.get("host", "")), str(d.get("step", "")), str(d.get("state"))
        t = self.targets.setdefault(host, TargetView(host, ""))
        lines = self._move(t, t.state, step)
        if state == "failed":
            output = [str(x) for x in d.get("output") or []]
            if output or not t.output:
                t.output, t.failed_step = output, step
            code = d.get("exit_code")
            why = str(d.get("detail") or d.get("result") or "failed")
            lines.append(
                f"  {host} {step} failed"
                + (f" (exit {code})" if code is not None else "")
                + f": {why}"
            )
        return lines

    def _on_gate(self, d: dict[str, Any]) -> list[str]:
        self.gates.append(dict(d))
        code = d.get("exit_code")
        verdict = "passed" if code == 0 else f"failed (exit {code})"
        lines = [f"gate after wave {d.get('wave', '?')} {verdict}"]
        if code != 0:
            lines += [f"    {x}" for x in list(d.get("output") or [])[-OUTPUT_LINES:]]
        return lines

    def _on_progress(self, d: dict[str, Any]) -> list[str]:
        host = str(d.get("host", ""))
        self.progress[host] = {
            "done": int(d.get("done", 0)),
            "total": int(d.get("total", 0)),
            "rate": float(d.get("rate", 0.0)),
        }
        tr = self.transfer()
        step = int(tr.fraction * 100) // MILESTONE
        if step <= self._milestone:
            return []
        self._milestone = step
        return [f"  transfer {transfer_text(tr)}"]

    def _on_end(self, d: dict[str, Any]) -> list[str]:
        self.ended = str(d.get("reason", ""))
        return []

    def _move(self, t: TargetView, state: str, step: str) -> list[str]:
        if (t.state, t.step) == (state, step):
            return []
        t.state, t.step = state, step
        return [render.progress_line(t.host, state, step)]

    # --- what the views show -----------------------------------------------------------------

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"

    def counts(self) -> dict[str, int]:
        """Targets per state."""
        return dict(sorted(Counter(t.state for t in self.targets.values()).items()))

    def wave_counts(self) -> list[tuple[str, str, dict[str, int]]]:
        """(wave label, wave state, targets per state) for each wave; one row if no waves."""
        if not self.waves:
            return [("all", self.state, self.counts())]
        rows = []
        for index in sorted(self.waves):
            w = self.waves[index]
            hosts = [self.targets[h] for h in w.get("hosts", []) if h in self.targets]
            counts = dict(sorted(Counter(t.state for t in hosts).items()))
            rows.append((str(index), str(w.get("state", "")), counts))
        unplanned = [t for t in self.targets.values() if t.wave is None]
        if unplanned:
            rows.append(("-", "", dict(sorted(Counter(t.state for t in unplanned).items()))))
        return rows

    def transfer(self) -> Transfer:
        """Bytes done of the total: the totals reported, plus the release's size for each
        target still to stage that has not reported yet (when the snapshot gave the size)."""
        done = sum(int(p["done"]) for p in self.progress.values())
        total = sum(int(p["total"]) for p in self.progress.values())
        total += self.release_size * sum(
            t.state in ("pending", "staging") and h not in self.progress
            for h, t in self.targets.items()
        )
        rate = sum(
            float(p["rate"]) for p in self.progress.values() if int(p["done"]) < int(p["total"])
        )
        return Transfer(done, total, rate, len(self.progress))

    def staging(self) -> bool:
        return self.state == "staging" or any(
            t.state in ("pending", "staging") for t in self.targets.values()
        )

    def failures(self, lines: int = OUTPUT_LINES) -> list[tuple[TargetView, list[str]]]:
        """Failed targets with the last lines of their failed step's output."""
        return [
            (t, t.output[-lines:])
            for t in sorted(self.targets.values(), key=lambda t: t.host)
            if t.state == "failed"
        ]

    def elapsed(self) -> float:
        return max(0.0, self.last_at - self.started_at) if self.started_at else 0.0

    def report(self) -> str:
        """The final table: every target, the rollout's error, failed hosts' last output."""
        head = f"rollout {self.rollout_id}  release {self.release_id}  state {self.state}"
        if self.error:
            head += f"\n  {self.error}"
        rows = [
            [t.host, "-" if t.wave is None else str(t.wave), t.state, t.step or "-", t.error]
            for t in sorted(self.targets.values(), key=lambda t: t.host)
        ]
        out = head + "\n" + render.table(["HOST", "WAVE", "STATE", "STEP", "ERROR"], rows)
        failures = [(t, tail) for t, tail in self.failures() if tail]
        for t, tail in failures[:FAILED_SHOWN]:
            step = f" ({t.failed_step})" if t.failed_step else ""
            out += f"\n--- last output of {t.host}{step} ---\n" + "\n".join(tail)
        if len(failures) > FAILED_SHOWN:
            more = len(failures) - FAILED_SHOWN
            out += f"\n... and {more} more failed host(s) with output: shoal logs HOST"
        return out

    def summary(self, elapsed: float) -> str:
        parts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        return f"rollout {self.rollout_id} {self.state}: {parts} in {elapsed:.1f}s"


def _failed_step(steps: list[dict[str, Any]]) -> str:
    """The step whose failure a snapshot's target output shows: the last failed hook (or
    download, verify, unpack) step. ``stage`` and ``activate`` enclose those steps and fail
    because one of them did (a target's ``activate`` record comes first, from its ``running``
    report), so they are named only when no step inside them failed."""
    failed = [x for x in steps if x.get("state") == "failed"]
    inner = [x for x in failed if x.get("step") not in OUTER_STEPS]
    chosen = inner or failed
    if not chosen:
        return ""
    return str(max(chosen, key=lambda x: float(x.get("at") or 0.0))["step"])


def transfer_text(tr: Transfer) -> str:
    eta = tr.eta
    eta_text = "-" if eta is None else f"{eta:.0f}s"
    return (
        f"{tr.fraction * 100:.0f}% ({human_bytes(tr.done)} of {human_bytes(tr.total)}) "
        f"at {human_bytes(tr.rate)}/s, ETA {eta_text}"
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
