"""Promotion rules on the seeder: the control methods that set and show them, and the gate that
checks every rollout (and ``rollback --to``) against them before the engine creates it.

The verdict itself is :func:`seeder.promotion.promotion_check` (pure); this module reads its
inputs from the store (the release's app, the app's rules, the release's rollout history) and
decides what a refused verdict means: an error naming the rule, unless the operator forced it,
in which case who forced which rule is returned for the engine to record with the rollout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from common.release import check_app_name
from seeder.applications import unknown_app
from seeder.caller import Caller, current_caller
from seeder.environments import environments
from seeder.promotion import (
    ENV_LABEL,
    PromotionRefused,
    Rule,
    RuleError,
    Verdict,
    parse_rules,
    promotion_check,
    remove_rules,
)
from seeder.rollout_start import Admit
from seeder.stageplan import UnknownRelease
from seeder.store import Store

log = logging.getLogger("shoal.seeder.promotion")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class PromotionGate:
    def __init__(self, store: Store) -> None:
        self.store = store

    def rules(self, app: str) -> tuple[Rule, ...]:
        return parse_rules(self.store.promotion_rules(app).rules)

    def verdict(self, release_id: str, envs: Mapping[str, str]) -> Verdict:
        """The verdict on rolling ``release_id`` out to the hosts ``envs`` (host -> env)."""
        found = self.store.release(release_id)
        if found is None:
            raise UnknownRelease(f"unknown release {release_id!r}")
        manifest = found[0]
        return promotion_check(
            self.rules(manifest.app),
            manifest,
            envs,
            self.store.promotion_history(release_id),
        )

    def preview(
        self, release_id: str, targets: list[str], *, force: bool, caller: Caller
    ) -> dict[str, Any]:
        """What a rollout of ``release_id`` to ``targets`` would record (``rollout plan``)."""
        labels = {h.name: h.labels for h in self.store.hosts()}
        envs = {h: labels.get(h, {}).get(ENV_LABEL, "") for h in targets}
        verdict = self.verdict(release_id, envs)
        return record(verdict, forced=force and not verdict.ok, caller=caller)

    def admit(self, *, force: bool, caller: Caller) -> Admit:
        """The engine's check for one request: refuse an unmet rule unless ``force``."""

        def check(release_id: str, envs: Mapping[str, str]) -> dict[str, Any]:
            verdict = self.verdict(release_id, envs)
            if not verdict.ok and not force:
                raise PromotionRefused(verdict.refusal())
            forced = not verdict.ok
            if forced:
                log.warning(
                    "%s (%s) forced release %s past promotion rule(s) %s",
                    caller.name,
                    caller.role,
                    release_id,
                    ", ".join(str(c.rule) for c in verdict.unmet),
                )
            return record(verdict, forced=forced, caller=caller)

        return check


def record(verdict: Verdict, *, forced: bool, caller: Caller) -> dict[str, Any]:
    """What a rollout keeps of the verdict it was started under (``rollout show``)."""
    return {
        **verdict.to_dict(),
        "forced": forced,
        "overridden": [str(c.rule) for c in verdict.unmet] if forced else [],
        "by": caller.name,
        "role": caller.role,
        "detail": verdict.summary(),
        "at": time.time(),
    }


def promotion_methods(gate: PromotionGate, connected: Callable[[], set[str]]) -> dict[str, Handler]:
    """``app.promotion.set`` {app, promote | remove}: replace the rules of a registered app, or
    remove some; answers with the rules now in force (``app.show`` lists them too).
    ``env.list``: every environment with its hosts, live releases and rules."""

    def view(app: str) -> dict[str, Any]:
        rec = gate.store.promotion_rules(app)
        return {
            "app": app,
            "promote": rec.rules,
            "updated_at": rec.updated_at or None,
            "updated_by": rec.updated_by or None,
        }

    def registered(params: dict[str, Any]) -> str:
        app = check_app_name(str(params["app"]))
        if gate.store.app(app) is None:
            raise unknown_app(app)
        return app

    async def set_rules(params: dict[str, Any]) -> dict[str, Any]:
        app = registered(params)
        promote, remove = params.get("promote"), params.get("remove")
        if (promote is None) == (remove is None):
            raise RuleError("give the rules to set (promote) or the rules to remove, not both")
        if promote is not None:
            rules = parse_rules(_texts(promote, "promote"))
        else:
            rules = remove_rules(gate.rules(app), parse_rules(_texts(remove, "remove")))
        caller = current_caller()
        gate.store.set_promotion_rules(app, [str(r) for r in rules], time.time(), caller.name)
        log.info("app %s: promotion rules %s (by %s)", app, [str(r) for r in rules], caller.name)
        return view(app)

    async def env_list(params: dict[str, Any]) -> dict[str, Any]:
        hosts = gate.store.hosts()
        return {"envs": environments(hosts, connected(), gate.store.all_promotion_rules())}

    return {"app.promotion.set": set_rules, "env.list": env_list}


def _texts(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise RuleError(f"{what} must be a list of FROM:TO rules")
