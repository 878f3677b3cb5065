"""Environments as an operator sees them: each ``env`` label value with its hosts, what they run
and the promotion rules into and out of it. Pure: derived from the host records and the rules,
nothing of it is stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from seeder.promotion import ENV_LABEL


class HostLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> dict[str, str]: ...

    @property
    def current(self) -> str | None: ...


def envs_of(hosts: Iterable[HostLike], names: Iterable[str]) -> dict[str, str]:
    """The env label ("" for none) of each of ``names`` among ``hosts``: what promotion rules
    and a rollout's recorded history go by."""
    wanted = set(names)
    return {h.name: h.labels.get(ENV_LABEL, "") for h in hosts if h.name in wanted}


def environments(
    hosts: Iterable[HostLike], connected: set[str], rules: Mapping[str, list[str]]
) -> list[dict[str, Any]]:
    """One entry per env (hosts without an env label under ``""``, last), sorted by name.

    ``rules``: app -> its rules as ``FROM:TO``; an env named by a rule but with no host yet is
    listed too (with no hosts), so a rule's typo shows."""
    members: dict[str, list[HostLike]] = {}
    for h in hosts:
        members.setdefault(h.labels.get(ENV_LABEL, ""), []).append(h)
    into: dict[str, list[dict[str, str]]] = {}
    out_of: dict[str, list[dict[str, str]]] = {}
    for app, texts in sorted(rules.items()):
        for text in texts:
            source, _, target = text.partition(":")
            into.setdefault(target, []).append({"app": app, "rule": text})
            out_of.setdefault(source, []).append({"app": app, "rule": text})
            members.setdefault(source, [])
            members.setdefault(target, [])
    result = []
    for env in sorted(members, key=lambda e: (e == "", e)):
        group = sorted(members[env], key=lambda h: h.name)
        live = Counter(h.current for h in group if h.current)
        result.append(
            {
                "env": env,
                "hosts": [h.name for h in group],
                "connected": sum(1 for h in group if h.name in connected),
                "releases": dict(sorted(live.items())),
                "rules_in": into.get(env, []),
                "rules_out": out_of.get(env, []),
            }
        )
    return result
