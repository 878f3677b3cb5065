"""The wave planner: rollout options parsed and checked, targets cut into waves. Pure logic.

``rollout plan`` prints exactly what :func:`plan_waves` returns, and the engine activates exactly
that, so what an operator reviewed is what runs. Waves are *cumulative* shares of the targets:
``1,10%,50%,100%`` is one canary host, then up to 10 % of all targets, then up to half, then the
rest. Shares that round to the same host count collapse into one wave.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from common.errors import ShoalError

DEFAULT_WAVES = "1,10%,50%,100%"


class PlanError(ShoalError):
    """A rollout option is malformed or cannot be met by these targets."""


@dataclass(frozen=True)
class Share:
    """A host count (``5``) or a percentage of some whole (``10%``)."""

    value: float
    percent: bool

    @classmethod
    def parse(cls, text: str, what: str) -> Share:
        raw = str(text).strip()
        number = raw[:-1] if raw.endswith("%") else raw
        try:
            value = float(number) if raw.endswith("%") else int(number)
        except ValueError:
            raise PlanError(f"{what}: {raw!r} is not a number or a percentage (N or P%)") from None
        if value < 0 or (raw.endswith("%") and value > 100) or not math.isfinite(value):
            raise PlanError(f"{what}: {raw!r} is out of range")
        return cls(float(value), raw.endswith("%"))

    def of(self, whole: int, *, round_up: bool) -> int:
        if not self.percent:
            return int(self.value)
        exact = self.value * whole / 100
        return min(whole, math.ceil(exact - 1e-9) if round_up else math.floor(exact + 1e-9))

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else str(int(self.value))


@dataclass(frozen=True)
class RolloutOptions:
    """Everything an operator can say about how a rollout proceeds, as given (and persisted)."""

    waves: str = DEFAULT_WAVES
    max_failures: str = "0"
    wave_max_failures: str = ""  # empty: only the whole rollout's budget applies
    concurrency: int = 0  # 0: a whole wave at once
    bake: float = 0.0
    gate: str = ""
    gate_timeout: float = 600.0
    spread: str = ""
    auto_rollback: bool = False
    min_staged: str = "100%"
    stage_timeout: float = 1800.0  # seconds from the start for every target to stage
    activate_timeout: float = 3600.0  # seconds for one host's activation, from its Activate

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RolloutOptions:
        """Options from a request's parameters (missing or None: the default), checked."""
        known = {f for f in cls.__dataclass_fields__}
        given = {k: v for k, v in params.items() if k in known and v is not None}
        try:
            opts = cls(
                waves=str(given.get("waves", DEFAULT_WAVES)),
                max_failures=str(given.get("max_failures", "0")),
                wave_max_failures=str(given.get("wave_max_failures", "")),
                concurrency=int(given.get("concurrency", 0)),
                bake=float(given.get("bake", 0.0)),
                gate=str(given.get("gate", "")),
                gate_timeout=float(given.get("gate_timeout", 600.0)),
                spread=str(given.get("spread", "")),
                auto_rollback=bool(given.get("auto_rollback", False)),
                min_staged=str(given.get("min_staged", "100%")),
                stage_timeout=float(given.get("stage_timeout", 1800.0)),
                activate_timeout=float(given.get("activate_timeout", 3600.0)),
            )
        except (TypeError, ValueError) as exc:
            raise PlanError(f"bad rollout option: {exc}") from None
        opts.check()
        return opts

    def check(self) -> None:
        wave_shares(self.waves)
        Share.parse(self.max_failures, "--max-failures")
        if self.wave_max_failures:
            Share.parse(self.wave_max_failures, "--wave-max-failures")
        if self.concurrency < 0:
            raise PlanError(f"--concurrency must be 0 (no limit) or more, not {self.concurrency}")
        if not (0 <= self.bake < 10**7):
            raise PlanError(f"--bake must be 0 or more seconds, not {self.bake}")
        for name, value in [
            ("--gate-timeout", self.gate_timeout),
            ("--stage-timeout", self.stage_timeout),
            ("--activate-timeout", self.activate_timeout),
        ]:
            if not (0 < value < 10**7):
                raise PlanError(f"{name} must be a positive number of seconds, not {value}")
        staged = self.min_staged if self.min_staged.endswith("%") else self.min_staged + "%"
        Share.parse(staged, "--min-staged")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wave_shares(spec: str) -> list[Share]:
    parts = [p.strip() for p in str(spec).split(",")]
    if not spec.strip() or any(not p for p in parts):
        raise PlanError(f"--waves {spec!r}: give comma-separated host counts or percentages")
    shares = [Share.parse(p, "--waves") for p in parts]
    if any(s.value == 0 for s in shares):
        raise PlanError(f"--waves {spec!r}: a wave of 0 hosts")
    return shares


@dataclass(frozen=True)
class Plan:
    """The waves (host names, in activation order) and the budgets resolved to host counts."""

    waves: list[list[str]]
    max_failures: int
    wave_max_failures: list[int | None]
    min_staged: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "waves": [{"index": i + 1, "hosts": hosts} for i, hosts in enumerate(self.waves)],
            "max_failures": self.max_failures,
            "wave_max_failures": self.wave_max_failures,
            "min_staged": self.min_staged,
        }


def spread_order(
    hosts: list[str], labels: Mapping[str, Mapping[str, str]], label: str
) -> list[str]:
    """Hosts ordered so that every prefix takes each value of ``label`` in proportion to its size.

    The i-th host (0-based) of a group of n gets the key (i + 0.5) / n; sorting by it interleaves
    the groups evenly (a rack of 10 and one of 2 give 5 of the first to each of the second).
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sorted(hosts):
        groups[labels.get(name, {}).get(label, "")].append(name)
    keyed = [
        ((i + 0.5) / len(members), value, name)
        for value, members in groups.items()
        for i, name in enumerate(members)
    ]
    return [name for _, _, name in sorted(keyed)]


def plan_waves(
    hosts: list[str], labels: Mapping[str, Mapping[str, str]], opts: RolloutOptions
) -> Plan:
    """Cut the targets into waves as ``opts`` say; PlanError if they cannot be met."""
    if not hosts:
        raise PlanError("a rollout needs at least one target")
    total = len(hosts)
    if opts.spread:
        if not any(opts.spread in labels.get(h, {}) for h in hosts):
            raise PlanError(f"--spread {opts.spread}: no target has the label {opts.spread!r}")
        order = spread_order(hosts, labels, opts.spread)
    else:
        order = sorted(hosts)
    waves: list[list[str]] = []
    done = 0
    for share in wave_shares(opts.waves):
        upto = min(total, share.of(total, round_up=True))
        if upto < done:
            raise PlanError(
                f"--waves {opts.waves}: shares are cumulative and must grow; "
                f"{share} is {upto} of {total} target(s), after {done}"
            )
        if upto > done:
            waves.append(order[done:upto])
            done = upto
    if done < total:
        raise PlanError(
            f"--waves {opts.waves} covers {done} of {total} target(s); end it with 100%"
        )
    wave_budget = Share.parse(opts.wave_max_failures, "x") if opts.wave_max_failures else None
    staged = opts.min_staged if opts.min_staged.endswith("%") else opts.min_staged + "%"
    return Plan(
        waves=waves,
        max_failures=Share.parse(opts.max_failures, "x").of(total, round_up=False),
        wave_max_failures=[
            None if wave_budget is None else wave_budget.of(len(w), round_up=False) for w in waves
        ],
        min_staged=Share.parse(staged, "x").of(total, round_up=True),
    )
