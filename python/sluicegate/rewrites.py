"""InferenceModelRewrite rules resolved into one lookup table, as upstream resolves them: an Exact
match on the request's model beats a rule with no matches (match-all); between objects the
oldest wins; within a rule a target is drawn at random by weight. Kubernetes mode feeds it the
InferenceModelRewrites bound to the pool (kube/policies.py), static mode the config file's
`rewrites:` list, where list order stands for age (the first entry is the oldest). The resolved
table goes to the Rust Router whole (`Router.set_rewrites`).

Static form (the InferenceModelRewrite spec, with a name):

    rewrites:
    - name: chat-canary
      rules:
      - matches: [{model: {value: chat}}]     # no matches: every model
        targets: [{modelRewrite: chat-v2, weight: 90}, {modelRewrite: chat-v1, weight: 10}]
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewriteTarget:
    model: str
    weight: int


@dataclass(frozen=True)
class RewriteRule:
    source: str  # "<namespace>/<name>" of the InferenceModelRewrite (static: its name), for logs
    targets: tuple[RewriteTarget, ...]

    def pick(self, rng: random.Random) -> str:
        if len(self.targets) == 1:
            return self.targets[0].model
        return rng.choices([t.model for t in self.targets], weights=[t.weight for t in self.targets])[0]


class RewriteTable:
    """Immutable lookup: request model → rewritten model (or None)."""

    def __init__(self, exact: dict[str, RewriteRule] | None = None, match_all: RewriteRule | None = None,
                 seed: int | None = None) -> None:
        self.exact = exact or {}
        self.match_all = match_all
        self._rng = random.Random(seed)

    def __bool__(self) -> bool:
        return bool(self.exact) or self.match_all is not None

    def rule_for(self, model: str | None) -> RewriteRule | None:
        if model is not None and model in self.exact:
            return self.exact[model]
        return self.match_all

    def rewrite(self, model: str | None) -> str | None:
        rule = self.rule_for(model)
        return rule.pick(self._rng) if rule is not None else None

    def to_json(self) -> str:
        """The table as the Rust Router takes it (`Router.set_rewrites`)."""
        def rule(r: RewriteRule) -> dict:
            return {"source": r.source, "targets": [{"model": t.model, "weight": t.weight} for t in r.targets]}

        return json.dumps({"exact": {m: rule(r) for m, r in self.exact.items()},
                           "matchAll": rule(self.match_all) if self.match_all is not None else None})


def resolve(specs: Iterable[tuple[str, dict]]) -> RewriteTable:
    """`(source, spec)` pairs, oldest first: the first exact rule for a model and the first
    match-all rule win. A rule without targets is skipped (logged)."""
    exact: dict[str, RewriteRule] = {}
    match_all: RewriteRule | None = None
    for source, spec in specs:
        for i, raw in enumerate(spec.get("rules") or []):
            targets = tuple(
                RewriteTarget(model=str(t["modelRewrite"]), weight=int(t.get("weight") or 1))
                for t in raw.get("targets") or [] if t.get("modelRewrite")
            )
            if not targets:
                log.warning("InferenceModelRewrite %s: rules[%d] has no targets; ignored", source, i)
                continue
            rule = RewriteRule(source=source, targets=targets)
            matches = raw.get("matches") or []
            if not matches:
                match_all = match_all or rule  # the oldest match-all wins
            for m in matches:
                value = ((m or {}).get("model") or {}).get("value")
                if value:
                    exact.setdefault(value, rule)  # oldest first: keep the first seen
    return RewriteTable(exact, match_all)


def parse_static(raw: Any, where: str) -> RewriteTable | None:
    """The config file's `rewrites:` list, checked strictly (errors name the field); None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of {{name, rules}}")
    specs: list[tuple[str, dict]] = []
    names: set[str] = set()
    for i, entry in enumerate(raw):
        w = f"{where}[{i}]"
        m = _mapping(entry, w, {"name", "rules"})
        name = m.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{w}.name: required")
        if name in names:
            raise ConfigError(f"{w}.name: {name!r} is listed twice")
        names.add(name)
        rules = m.get("rules")
        if not isinstance(rules, list) or not rules:
            raise ConfigError(f"{w}.rules: expected a non-empty list of {{matches, targets}}")
        for j, rule in enumerate(rules):
            _check_rule(rule, f"{w}.rules[{j}]")
        specs.append((name, {"rules": rules}))
    return resolve(specs)


def _check_rule(rule: Any, where: str) -> None:
    r = _mapping(rule, where, {"matches", "targets"})
    matches = r.get("matches", [])
    if not isinstance(matches, list):
        raise ConfigError(f"{where}.matches: expected a list of {{model: {{value}}}}")
    for k, match in enumerate(matches):
        mw = f"{where}.matches[{k}]"
        model = _mapping(_mapping(match, mw, {"model"}).get("model"), f"{mw}.model", {"type", "value"})
        if model.get("type", "Exact") != "Exact":
            raise ConfigError(f"{mw}.model.type: {model['type']!r} is not supported (only 'Exact')")
        if not isinstance(model.get("value"), str) or not model["value"]:
            raise ConfigError(f"{mw}.model.value: required")
    targets = r.get("targets")
    if not isinstance(targets, list) or not targets:
        raise ConfigError(f"{where}.targets: expected a non-empty list of {{modelRewrite, weight}}")
    for k, target in enumerate(targets):
        tw = f"{where}.targets[{k}]"
        t = _mapping(target, tw, {"modelRewrite", "weight"})
        if not isinstance(t.get("modelRewrite"), str) or not t["modelRewrite"]:
            raise ConfigError(f"{tw}.modelRewrite: required")
        weight = t.get("weight", 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise ConfigError(f"{tw}.weight: {weight!r} is not an integer >= 1")


def _mapping(value: Any, where: str, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return value
