"""InferenceObjective → flow priorities, InferenceModelRewrite → model rewrite rules.

Both are read-only policy objects bound to one pool through `spec.poolRef.name`; the EPP writes
no status to them (as upstream). Rewrites resolve as upstream: an Exact match on the request's
model beats a rule with no matches (match-all); between objects, the oldest (creationTimestamp,
then name) wins; within a rule, a target is drawn at random by weight. Precedence is resolved
here, once per change; the resolved tables go to the Rust Router whole (`set_objectives`,
`set_rewrites`), where each request reads them with the body parsed once.
"""

from __future__ import annotations

import logging

from ..rewrites import RewriteRule, RewriteTable, RewriteTarget, resolve

__all__ = ["RewriteRule", "RewriteTable", "RewriteTarget", "objective_priorities", "rewrite_table"]

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


def rewrite_table(objects: list[dict], pool_name: str) -> RewriteTable:
    def spec(obj: dict) -> tuple[str, dict]:
        md = obj["metadata"]
        return f"{md.get('namespace', '')}/{md['name']}", obj.get("spec") or {}

    return resolve(spec(o) for o in sorted((o for o in objects if _bound_to(o, pool_name)), key=_age_key))
