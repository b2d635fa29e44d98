"""`sluicegate optimize` as a user runs it: a subprocess over files, decisions out as a table,
YAML, JSON or VariantAutoscaling status, metrics to a file, exit 1 naming a bad field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from sluicegate.optimizer import samples_dir

SAMPLES = str(samples_dir())


def _optimize(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sluicegate", "optimize", *args],
                          capture_output=True, text=True, timeout=60)


def test_json_output_lists_every_variant_with_its_decision() -> None:
    out = _optimize("--config", SAMPLES, "--output", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["solver"] == "greedy" and data["unmet"] == []
    variants = {a["variant"]: a for a in data["allocations"]}
    assert set(variants) == {"llm-inference/llama-8b-a100", "llm-inference/llama-8b-l40s",
                             "llm-inference/llama-70b", "llm-inference/granite-13b"}
    assert variants["llm-inference/granite-13b"]["numReplicas"] == 0  # idle, scale to zero
    assert variants["llm-inference/llama-8b-a100"]["currentReplicas"] == 2
    for acc, used in data["unitsUsed"].items():
        assert used <= data["capacity"][acc]


def test_both_solvers_in_yaml_and_the_table_reports_the_ratio() -> None:
    out = _optimize("--config", SAMPLES, "--solver", "both", "--output", "yaml")
    assert out.returncode == 0, out.stderr
    data = yaml.safe_load(out.stdout)
    assert [s["solver"] for s in data["solutions"]] == ["greedy", "exact"]
    table = _optimize("--config", SAMPLES, "--solver", "both")
    assert table.returncode == 0 and "greedy/exact cost: 1.0000" in table.stdout


def test_status_output_and_metrics_file(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.prom"
    out = _optimize("--config", SAMPLES, "--output", "status", "--metrics-file", str(metrics))
    assert out.returncode == 0, out.stderr
    objs = list(yaml.safe_load_all(out.stdout))
    assert {o["metadata"]["name"] for o in objs} == {
        "llama-8b-a100", "llama-8b-l40s", "llama-70b", "granite-13b"}
    assert all("numReplicas" in o["status"]["desiredOptimizedAlloc"] for o in objs)
    assert 'wva_desired_replicas{accelerator_type="A100",namespace="llm-inference"' in \
        metrics.read_text()


def test_bad_field_exits_1_naming_file_field_and_value(tmp_path: Path) -> None:
    bad = tmp_path / "va.yaml"
    text = (samples_dir() / "variantautoscalings.yaml").read_text()
    bad.write_text(text.replace('alpha: "8.2"', 'alpha: "eight"'))
    args = []
    for f in sorted(samples_dir().glob("*.yaml")):
        args += ["--config", str(bad if f.name == "variantautoscalings.yaml" else f)]
    out = _optimize(*args)
    assert out.returncode == 1 and out.stdout == ""
    assert str(bad) in out.stderr and "decodeParms.alpha='eight'" in out.stderr
