"""The Grafana dashboard queries only metric families the EPP exposes (the pinned lists: core,
flow control, activator)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.unit.metrics.test_metrics import PINNED as CORE

DATA = Path(__file__).parents[2] / "data"
PINNED = CORE | frozenset((DATA / "metric_families_flowcontrol.txt").read_text().split()) \
    | frozenset((DATA / "metric_families_activator.txt").read_text().split())
DASHBOARD = Path(__file__).parents[3] / "charts" / "sluicegate" / "dashboards" / "sluicegate-epp.json"
_SUFFIXES = ("_bucket", "_sum", "_count")


def _family(sample: str) -> str:
    for suffix in _SUFFIXES:
        if sample.endswith(suffix) and sample[: -len(suffix)] in PINNED:
            return sample[: -len(suffix)]
    return sample


def test_every_panel_queries_pinned_families():
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs
    names = {m for e in exprs for m in re.findall(r"\b(?:llm_d_epp|inference|sluicegate)_[a-z0-9_]+", e)}
    assert {_family(n) for n in names} <= PINNED


def test_panels_have_unique_ids_and_do_not_overlap():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(set(cells)) == len(cells)
