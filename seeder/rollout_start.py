"""What a new rollout or rollback is: its targets, the release each goes to, its plan, its record.

Split out of :mod:`seeder.engine` (one concept per file): choosing a new rollout's targets and
releases reads the store (hosts, releases) and asks the promotion rules (``admit``) but changes
nothing, so it is here; the engine then checks that no target is still in another rollout, gives
the rollout its id and fencing token, and owns it from then on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from seeder.environments import envs_of
from seeder.model import RolloutModel, TargetModel
from seeder.selector import select_hosts
from seeder.stageplan import UnknownRelease
from seeder.store import Store
from seeder.store_promotions import RolloutPromotion
from seeder.waves import Plan, PlanError, RolloutOptions, plan_waves

# Asked before a rollout is created, with its release and its targets' envs (host -> env, "" for
# none): raises to refuse it, else returns the promotion verdict to record with it (None: none).
Admit = Callable[[str, Mapping[str, str]], dict[str, Any] | None]
# The options of a new rollout from the operator's parameters (the engine adds its deadlines).
Options = Callable[[dict[str, Any]], RolloutOptions]


@dataclass(frozen=True)
class NewRollout:
    """A rollout about to start: everything but its id, token and time."""

    kind: str  # "rollout" or "rollback"
    release_id: str  # what the rollout names: a release, or a rollback's "previous"
    selector: str
    plan: Plan
    options: RolloutOptions
    releases: dict[str, str]  # target -> the release it goes to
    current: dict[str, str | None]  # host -> what it runs now
    promotion: RolloutPromotion

    def model(self, rollout_id: str, token: int, now: float) -> RolloutModel:
        """The rollout's in-memory model, every target pending in its wave."""
        model = RolloutModel(
            rollout_id=rollout_id,
            release_id=self.release_id,
            selector=self.selector,
            kind=self.kind,
            token=token,
            options=self.options,
            plan=self.plan,
            created_at=now,
            updated_at=now,
        )
        for index, wave in enumerate(self.plan.waves):
            for host in wave:
                model.targets[host] = TargetModel(
                    host, self.releases[host], self.current.get(host), index, updated_at=now
                )
        model.reindex()
        return model


def plan_rollout(
    store: Store, release_id: str, selector: str, params: dict[str, Any], options: Options
) -> tuple[Plan, RolloutOptions, list[str]]:
    """The waves a rollout of ``release_id`` to ``selector`` would go through, and its targets."""
    if store.release(release_id) is None:
        raise UnknownRelease(f"unknown release {release_id!r}")
    hosts = store.hosts()
    targets = select_hosts(selector, hosts)
    opts = options(params)
    labels = {h.name: h.labels for h in hosts}
    return plan_waves(targets, labels, opts), opts, targets


def new_rollout(
    store: Store,
    release_id: str,
    selector: str,
    params: dict[str, Any],
    options: Options,
    admit: Admit | None,
) -> NewRollout:
    """Every selected host to ``release_id``; ``admit`` may refuse it."""
    plan, opts, targets = plan_rollout(store, release_id, selector, params, options)
    hosts = store.hosts()
    current = {h.name: h.current for h in hosts}
    releases = {h: release_id for h in targets}
    envs = envs_of(hosts, releases)
    promotion = RolloutPromotion(envs, admit(release_id, envs) if admit else None)
    return NewRollout("rollout", release_id, selector, plan, opts, releases, current, promotion)


def new_rollback(
    store: Store,
    selector: str,
    to: str | None,
    params: dict[str, Any],
    options: Options,
    admit: Admit | None,
) -> NewRollout:
    """Back to each host's previous release (or ``to``). ``admit`` is asked only about a
    rollback ``to`` a named release."""
    hosts = store.hosts()
    records = {h.name: h for h in hosts}
    chosen = select_hosts(selector, hosts)
    if to is not None and store.release(to) is None:
        raise UnknownRelease(f"unknown release {to!r}")
    releases: dict[str, str] = {}
    unknown = []
    for name in chosen:
        goal = to or records[name].previous
        if goal is None:
            unknown.append(name)
        elif goal != records[name].current:
            releases[name] = goal
    if unknown:
        raise PlanError(
            f"no previous release is known for {', '.join(unknown)}; name one with --to"
        )
    if not releases:
        raise PlanError(f"every selected host already runs {to or 'its previous release'}")
    missing = sorted({r for r in releases.values() if store.release(r) is None})
    if missing:
        raise UnknownRelease(f"release(s) {', '.join(missing)} are no longer on the seeder")
    opts = options(params)
    plan = plan_waves(sorted(releases), {h.name: h.labels for h in hosts}, opts)
    current = {h.name: h.current for h in hosts}
    envs = envs_of(hosts, releases)
    verdict = admit(to, envs) if admit is not None and to is not None else None
    promotion = RolloutPromotion(envs, verdict)
    target = to or "previous"
    return NewRollout("rollback", target, selector, plan, opts, releases, current, promotion)
