"""The live terminal view of a rollout, drawn with ``rich`` from a :class:`WatchModel`.

A pure function of the model (no IO): :mod:`seeder.follow` redraws it in place on a terminal.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from seeder.watch import WatchModel, transfer_text

PANELS = 4  # failed hosts whose last output the live view shows

STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "halted": "red",
    "aborted": "yellow",
    "paused": "yellow",
    "staged": "cyan",
}


def view(model: WatchModel) -> RenderableType:
    """The live terminal view of a rollout: state, transfer bar, counts per wave, failures."""
    style = STATE_STYLE.get(model.state, "bold")
    head = Text.assemble(
        ("rollout ", "bold"),
        model.rollout_id,
        "  release ",
        model.release_id,
        "  ",
        (model.state, style),
    )
    parts: list[RenderableType] = [head]
    if model.error:
        parts.append(Text(model.error, style="red"))
    tr = model.transfer()
    if model.staging() and tr.total:
        parts.append(ProgressBar(total=tr.total, completed=tr.done, width=50))
        parts.append(Text(f"transfer {transfer_text(tr)} ({tr.hosts} host(s) reporting)"))
    parts.append(_counts_table(model))
    failures = model.failures()
    for t, tail in failures[:PANELS]:
        title = f"{t.host} failed" + (f" in {t.failed_step}" if t.failed_step else "")
        body = "\n".join(tail) if tail else (t.error or "(no output)")
        parts.append(Panel(body, title=title, border_style="red", expand=False))
    if len(failures) > PANELS:
        parts.append(Text(f"... and {len(failures) - PANELS} more failed host(s)", style="red"))
    return Group(*parts)


def _counts_table(model: WatchModel) -> Table:
    states = sorted({s for _, _, counts in model.wave_counts() for s in counts})
    table = Table(box=None, pad_edge=False)
    table.add_column("WAVE")
    table.add_column("STATE")
    for s in states:
        table.add_column(s.upper(), justify="right", style=STATE_STYLE.get(s, ""))
    for label, state, counts in model.wave_counts():
        table.add_row(label, state or "-", *(str(counts.get(s, 0)) for s in states))
    return table
