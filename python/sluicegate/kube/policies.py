"""InferenceObjective → flow priorities, InferenceModelRewrite → model rewrite rules.

Both are read-only policy objects bound to one pool through `spec.poolRef.name`; the EPP writes
no status to them (as upstream). Rewrites resolve as upstream: an Exact match on the request's
model beats a rule with no matches (match-all); between objects, the oldest (creationTimestamp,
then name) wins; within a rule, a target is drawn at random by weight. Precedence is resolved
here, once per change; the resolved tables go to the Rust Router whole (`set_objectives`,
`set_rewrites`), where each request reads them with the body parsed once.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass

log = logging.getLogger(__name__)


def _bound_to(obj: dict, pool_name: str) -> bool:
    # `poolRef` (v1alpha2); newer llm-d objects may name several pools in `poolRefs`.
    spec = obj.get("spec") or {}
    refs = [spec.get("poolRef") or {}, *(spec.get("poolRefs") or [])]
    return any(isinstance(r, dict) and r.get("name") == pool_name for r in refs)


def _age_key(obj: dict) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    # RFC 3339 timestamps from the API server sort as strings.
    return (md.get("creationTimestamp") or "", md.get("name") or "")


def objective_priorities(objects: list[dict], pool_name: str) -> dict[str, int]:
    """Objective name → priority (unset = 0). `objects` is ordered by precedence: the first
    object with a name wins (the llm-d.ai group is listed before the legacy group)."""
    out: dict[str, int] = {}
    for obj in objects:
        if not _bound_to(obj, pool_name):
            continue
        name = obj["metadata"]["name"]
        if name in out:
            continue
        priority = (obj.get("spec") or {}).get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            log.warning("InferenceObjective %s: spec.priority %r is not an integer; using 0", name, priority)
            priority = 0
        out[name] = priority
    return out


@dataclass(frozen=True)
class RewriteTarget:
    model: str
    weight: int


@dataclass(frozen=True)
class RewriteRule:
    source: str  # "<namespace>/<name>" of the InferenceModelRewrite, for logs
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


def rewrite_table(objects: list[dict], pool_name: str) -> RewriteTable:
    exact: dict[str, RewriteRule] = {}
    match_all: RewriteRule | None = None
    for obj in sorted((o for o in objects if _bound_to(o, pool_name)), key=_age_key):
        md = obj["metadata"]
        source = f"{md.get('namespace', '')}/{md['name']}"
        for i, raw in enumerate((obj.get("spec") or {}).get("rules") or []):
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
