"""When a seed re-hashes its files, so that corrupt data is not served on. Pure: `now` is passed.

libtorrent hashes a piece when it arrives, and (in seed mode) before its first upload, but never
again: a file changed on disk afterwards (an operator's edit, a bad disk, a restore from backup)
would be served as is, and only the downloaders' hash checks would catch it, over and over. A
sender learns little from the receivers (they just drop it), so the seed watches for itself:

- its files changed (size, mtime, ctime or inode) while it was only reading them: re-check now;
- every `interval`: a full re-check anyway (catches changes that keep the metadata);
- `limit` signs of trouble (e.g. downloaders dropping it mid-transfer) within `window`.

A re-check hashes every piece; those that fail are no longer offered (and fetched again from the
swarm where there is one). Never more often than `min_gap` per torrent, so a hostile peer cannot
make a seed spin on its disk.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecheckPolicy:
    interval: float = 6 * 3600.0  # seconds between routine full re-checks of a seed
    min_gap: float = 30.0  # seconds between two re-checks of one torrent, whatever the reason
    tick: float = 10.0  # seconds between looks at the files (a stat() per file)

    def __post_init__(self) -> None:
        if min(self.interval, self.min_gap, self.tick) <= 0:
            raise ValueError(f"recheck policy values must be positive: {self}")


@dataclass(frozen=True)
class RecheckState:
    """What the policy remembers about one seed."""

    last_check: float  # when it was last known good (added or re-checked)
    changed: bool = False  # its files changed since: a re-check is pending


def look(
    state: RecheckState, now: float, policy: RecheckPolicy, *, files_changed: bool
) -> tuple[RecheckState, str | None]:
    """One look at a seed: its next state, and why it must be re-checked now (None: not yet).

    A change seen within `min_gap` of the last re-check stays pending until the gap is over."""
    changed = state.changed or files_changed
    if now - state.last_check < policy.min_gap:
        return RecheckState(state.last_check, changed), None
    if changed:
        return checked(now), "its files changed on disk"
    if now - state.last_check >= policy.interval:
        return checked(now), f"routine re-check (every {policy.interval:.0f}s)"
    return state, None


def checked(now: float) -> RecheckState:
    """The state of a seed just added, or whose re-check was just started."""
    return RecheckState(last_check=now)
