"""Promotion rules between environments, and the verdict on one rollout. Pure logic, no IO.

An application's rule ``staging:prod`` says: a release of the app may roll out to hosts whose
``env`` label is ``prod`` only once it has *succeeded on staging*. That is, precisely:

    some earlier rollout that ended ``succeeded`` put this very release on at least one host
    labelled ``env=staging`` (its env when that rollout started), and every target of that
    rollout in ``staging`` that was to run this release ended ``succeeded``.

So a rollout that halted, failed, was aborted, or is still running never counts, and neither does
one that reached ``succeeded`` only because ``--max-failures`` tolerated a staging host failing
(a lifecycle in Octopus or a Kargo stage counts a deployment to an environment as successful only
when the whole deployment there succeeded; a tolerated failure on the environment whose whole job
is to catch failures is not evidence). One host is enough: staging is usually small, and "how
many hosts" is the staging rollout's own business (its targets, waves and budgets). A rollback
that went back *to* this release counts the same way (the same hooks ran). Later events do not
undo it: a release that succeeded on staging stays promotable after staging moved on.

Every rule into an environment must hold (``staging:prod`` and ``qa:prod`` both), and a rollout
whose targets span several environments must satisfy the rules of each. Chains
(``qa:staging``, ``staging:prod``) are checked one link at a time, when a rollout enters each
environment; a cycle would make its environments unreachable and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.errors import ShoalError
from seeder.states import RolloutState, TargetState

ENV_LABEL = "env"
_ENV = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RuleError(ShoalError):
    """A promotion rule is malformed or the rules together cannot be met."""


class PromotionRefused(ShoalError):
    """A rollout would take a release to an environment its rules do not let it reach yet."""


@dataclass(frozen=True, order=True)
class Rule:
    """``source:target``: a release must succeed on ``source`` before it rolls out to ``target``."""

    source: str
    target: str

    def __str__(self) -> str:
        return f"{self.source}:{self.target}"


def check_env(name: str, what: str = "environment") -> str:
    if not _ENV.match(name):
        raise RuleError(
            f"{what} {name!r} is not a valid name (letters, digits, '.', '_' and '-', at most 64)"
        )
    return name


def parse_rules(texts: Iterable[str]) -> tuple[Rule, ...]:
    """Rules from ``FROM:TO`` items, each text a comma-separated list (empty items ignored),
    checked together (see :func:`check_rules`); sorted, without duplicates."""
    rules: set[Rule] = set()
    for text in texts:
        for item in str(text).split(","):
            item = item.strip()
            if not item:
                continue
            source, sep, target = item.partition(":")
            if not sep or ":" in target:
                raise RuleError(f"promotion rule {item!r} is not FROM:TO (e.g. staging:prod)")
            rule = Rule(check_env(source.strip(), "rule"), check_env(target.strip(), "rule"))
            if rule.source == rule.target:
                raise RuleError(f"promotion rule {item!r} names one environment twice")
            rules.add(rule)
    return check_rules(rules)


def check_rules(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    """The rules, sorted; refused if they form a cycle (no release could enter its envs)."""
    ordered = tuple(sorted(set(rules)))
    after: dict[str, list[str]] = {}
    for rule in ordered:
        after.setdefault(rule.source, []).append(rule.target)
    done: set[str] = set()

    def visit(env: str, path: list[str]) -> None:
        if env in path:
            loop = [*path[path.index(env) :], env]
            raise RuleError(
                f"promotion rules form a cycle ({' -> '.join(loop)}): no release could ever"
                " roll out to those environments"
            )
        if env in done:
            return
        for nxt in after.get(env, []):
            visit(nxt, [*path, env])
        done.add(env)

    for env in sorted(after):
        visit(env, [])
    return ordered


def remove_rules(rules: Iterable[Rule], gone: Iterable[Rule]) -> tuple[Rule, ...]:
    """``rules`` without ``gone``; each of ``gone`` must be one of them."""
    current, unwanted = set(rules), set(gone)
    missing = sorted(unwanted - current)
    if missing:
        have = ", ".join(str(r) for r in sorted(current)) or "none"
        raise RuleError(
            f"no promotion rule {', '.join(str(r) for r in missing)} to remove (rules: {have})"
        )
    return check_rules(current - unwanted)


# --- history and the verdict -------------------------------------------------------------------


class ReleaseLike(Protocol):
    @property
    def release_id(self) -> str: ...

    @property
    def app(self) -> str: ...


@dataclass(frozen=True)
class TargetOutcome:
    """One target of a past rollout: its env when the rollout started, and how it ended."""

    host: str
    env: str  # "" if the host had no env label
    release_id: str  # what it was to run (a rollback's targets may differ)
    state: TargetState


@dataclass(frozen=True)
class RolloutOutcome:
    rollout_id: str
    state: RolloutState
    created_at: float
    targets: tuple[TargetOutcome, ...]


@dataclass(frozen=True)
class Check:
    """One rule applied to one rollout: met (with the rollout that proves it) or why not."""

    rule: Rule
    ok: bool
    evidence: str  # id of the rollout that proves the release succeeded on rule.source
    reason: str  # why it holds, or why not
    hosts: tuple[str, ...]  # the rollout's targets in rule.target

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": str(self.rule),
            "from": self.rule.source,
            "to": self.rule.target,
            "ok": self.ok,
            "evidence": self.evidence,
            "reason": self.reason,
            "hosts": list(self.hosts),
        }


@dataclass(frozen=True)
class Verdict:
    app: str
    release_id: str
    envs: Mapping[str, tuple[str, ...]]  # env -> the rollout's targets in it ("" : unlabelled)
    checks: tuple[Check, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def unmet(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def refusal(self) -> str:
        """The error an operator sees when the rollout is refused (one line per unmet rule)."""
        lines = [
            f"release {self.release_id} has not succeeded on {c.rule.source} (rule {c.rule} of "
            f"app {self.app}): {c.reason}; use --force to override"
            for c in self.unmet
        ]
        return "\n".join(lines)

    def summary(self) -> str:
        if not self.checks:
            return f"no promotion rule of app {self.app} applies to these hosts"
        return "; ".join(
            f"rule {c.rule}: {'ok' if c.ok else 'NOT MET'} ({c.reason})" for c in self.checks
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "release_id": self.release_id,
            "ok": self.ok,
            "envs": {env: list(hosts) for env, hosts in sorted(self.envs.items())},
            "checks": [c.to_dict() for c in self.checks],
        }


def promotion_check(
    rules: Iterable[Rule],
    release: ReleaseLike,
    target_envs: Mapping[str, str],
    history: Iterable[RolloutOutcome],
) -> Verdict:
    """May ``release`` roll out to the hosts ``target_envs`` (host -> env, "" for none)?

    ``rules`` are the release's app's; ``history`` holds past rollouts (any release, any order;
    only those that put this release on some host matter)."""
    envs: dict[str, list[str]] = {}
    for host, env in sorted(target_envs.items()):
        envs.setdefault(env, []).append(host)
    relevant = sorted(
        (r for r in history if any(t.release_id == release.release_id for t in r.targets)),
        key=lambda r: (r.created_at, r.rollout_id),
    )
    checks = tuple(
        _check(rule, release.release_id, tuple(envs[rule.target]), relevant)
        for rule in sorted(set(rules))
        if rule.target in envs and rule.target
    )
    return Verdict(release.app, release.release_id, {e: tuple(h) for e, h in envs.items()}, checks)


def _check(
    rule: Rule, release_id: str, hosts: tuple[str, ...], history: list[RolloutOutcome]
) -> Check:
    """``history``: this release's rollouts, oldest first."""
    latest: tuple[RolloutOutcome, list[TargetOutcome]] | None = None
    for r in reversed(history):
        there = [t for t in r.targets if t.release_id == release_id and t.env == rule.source]
        if not there:
            continue
        if r.state is RolloutState.SUCCEEDED and all(
            t.state is TargetState.SUCCEEDED for t in there
        ):
            reason = f"rollout {r.rollout_id} succeeded on {len(there)} {rule.source} host(s)"
            return Check(rule, True, r.rollout_id, reason, hosts)
        latest = latest or (r, there)
    if latest is None:
        return Check(rule, False, "", f"it was never rolled out on {rule.source}", hosts)
    r, there = latest
    bad = [t for t in there if t.state is not TargetState.SUCCEEDED]
    if r.state is RolloutState.SUCCEEDED:
        shown = ", ".join(f"{t.host}: {t.state.value}" for t in bad[:5])
        why = f"its {rule.source} host(s) did not all succeed ({shown})"
    elif r.state in (RolloutState.FAILED, RolloutState.HALTED, RolloutState.ABORTED):
        why = f"it ended {r.state.value}"
    else:
        why = f"it is still {r.state.value}"
    return Check(rule, False, "", f"its latest rollout there, {r.rollout_id}, {why}", hosts)
