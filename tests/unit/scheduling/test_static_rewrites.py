"""The config file's `rewrites:` table: InferenceModelRewrite rules in static mode, resolved as
upstream resolves the objects (exact beats match-all, the oldest — first listed — wins, weighted
targets), checked strictly, and handed to the Rust Router whole."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from sluicegate._core import Router
from sluicegate.errors import ConfigError
from sluicegate.scheduling.config import load_config

TABLE = """
rewrites:
- name: chat-split
  rules:
  - matches: [{model: {value: chat}}]
    targets: [{modelRewrite: chat-v2, weight: 3}, {modelRewrite: chat-v1, weight: 1}]
- name: chat-later
  rules:
  - matches: [{model: {type: Exact, value: chat}}, {model: {value: code}}]
    targets: [{modelRewrite: later}]
- name: catch-all
  rules:
  - targets: [{modelRewrite: base}]
- name: catch-all-later
  rules:
  - targets: [{modelRewrite: never}]
"""


def router_with(text: str) -> Router:
    config = load_config(text=text)
    router = Router(config.router_json())
    assert config.rewrites_json is not None
    router.set_rewrites(config.rewrites_json)
    return router


def test_exact_beats_match_all_and_the_first_listed_wins():
    router = router_with(TABLE)
    assert router.rewrite_of("code") == "later", "an exact rule of a later entry beats any match-all"
    assert router.rewrite_of("anything") == "base", "the first match-all wins"
    assert router.rewrite_of(None) == "base", "a body naming no model takes the match-all rule"
    assert {router.rewrite_of("chat") for _ in range(50)} <= {"chat-v2", "chat-v1"}, "the first exact rule wins"


def test_targets_are_drawn_by_weight():
    router = router_with(TABLE)
    drawn = Counter(router.rewrite_of("chat") for _ in range(4000))
    assert set(drawn) == {"chat-v2", "chat-v1"}
    assert 2.0 < drawn["chat-v2"] / drawn["chat-v1"] < 4.5  # weights 3:1, far outside chance at n=4000


def test_no_rewrites_section_leaves_the_table_alone():
    assert load_config(text="featureGates: []").rewrites_json is None


def test_the_resolved_table_is_what_kubernetes_mode_sends_for_the_same_objects():
    from sluicegate.kube.policies import rewrite_table

    def obj(name: str, created: str, spec: dict) -> dict:
        return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
                "spec": {"poolRef": {"name": "pool"}, **spec}}

    entries = load_config(text=TABLE)
    import yaml

    objects = [obj(e["name"], f"2026-01-0{i + 1}T00:00:00Z", {"rules": e["rules"]})
               for i, e in enumerate(yaml.safe_load(TABLE)["rewrites"])]
    kube = json.loads(rewrite_table(objects, "pool").to_json())
    static = json.loads(entries.rewrites_json or "{}")
    strip = lambda t: json.dumps({k: {m: r["targets"] for m, r in v.items()} if k == "exact"  # noqa: E731
                                  else (v or {}).get("targets") for k, v in t.items()}, sort_keys=True)
    assert strip(kube) == strip(static)


@pytest.mark.parametrize("text, field", [
    ("rewrites: {name: x}", "rewrites: expected a list"),
    ("rewrites: [{rules: [{targets: [{modelRewrite: a}]}]}]", "rewrites[0].name: required"),
    ("rewrites: [{name: a, rules: []}]", "rewrites[0].rules: expected a non-empty list"),
    ("rewrites: [{name: a, rules: [{targets: []}]}]", "rewrites[0].rules[0].targets: expected a non-empty list"),
    ("rewrites: [{name: a, rules: [{targets: [{modelRewrite: b, weight: 0}]}]}]",
     "rewrites[0].rules[0].targets[0].weight: 0 is not an integer >= 1"),
    ("rewrites: [{name: a, rules: [{targets: [{model: b}]}]}]", "rewrites[0].rules[0].targets[0]: unknown field 'model'"),
    ("rewrites: [{name: a, rules: [{matches: [{model: {value: m, type: RegularExpression}}], "
     "targets: [{modelRewrite: b}]}]}]", "rewrites[0].rules[0].matches[0].model.type"),
    ("rewrites: [{name: a, rules: [{matches: [{model: {}}], targets: [{modelRewrite: b}]}]}]",
     "rewrites[0].rules[0].matches[0].model.value: required"),
    ("rewrites: [{name: a, rules: [{targets: [{modelRewrite: b}]}]}, {name: a, rules: [{targets: [{modelRewrite: c}]}]}]",
     "rewrites[1].name: 'a' is listed twice"),
    ("rewrites: [{name: a, owner: me, rules: [{targets: [{modelRewrite: b}]}]}]", "rewrites[0]: unknown field 'owner'"),
])
def test_bad_rewrites_name_the_field(text, field):
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        load_config(text=text)
