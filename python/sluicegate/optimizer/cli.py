"""`sluicegate optimize --config FILE…`: one offline solve of the files' VariantAutoscalings,
ConfigMaps and OptimizerConfig; prints the allocation (table, YAML, JSON, or the
VariantAutoscaling status it would write) and can write the metrics HPA/KEDA would read."""

from __future__ import annotations

import argparse
import json
import sys
import time

import yaml

from sluicegate.errors import ConfigError

from . import exact, greedy
from .actuation import MetricsExporter, decide, variant_objects
from .config import load_config
from .problem import build_problem
from .report import as_data, table

SOLVERS = {"greedy": greedy.solve, "exact": exact.solve}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", required=True, metavar="FILE",
                   help="YAML with ConfigMaps service-classes-config / accelerator-unit-costs, "
                        "VariantAutoscalings and an OptimizerConfig (repeatable)")
    p.add_argument("--solver", choices=("greedy", "exact", "both"), default="greedy",
                   help="greedy (default), the exact MILP, or both with the cost gap")
    p.add_argument("--output", choices=("table", "yaml", "json", "status"), default="table",
                   help="status: the VariantAutoscaling status objects the decision writes")
    p.add_argument("--metrics-file", metavar="PATH",
                   help="also write the desired-replica gauges (Prometheus text format)")


def run_from_args(args: argparse.Namespace) -> int:
    try:
        problem = build_problem(load_config(args.config))
    except ConfigError as e:
        print(f"sluicegate optimize: {e}", file=sys.stderr)
        return 1
    names = ("greedy", "exact") if args.solver == "both" else (args.solver,)
    solutions = []
    for name in names:
        started = time.perf_counter()
        solutions.append((SOLVERS[name](problem), time.perf_counter() - started))
    first = solutions[0][0]
    decisions = decide(first, problem.input.variants, now=time.time())
    if args.metrics_file:
        exporter = MetricsExporter()
        exporter.update(first, decisions)
        with open(args.metrics_file, "wb") as f:
            f.write(exporter.render())
    if args.output == "table":
        for sol, took in solutions:
            print(table(sol))
            print(f"solved in {took * 1000:.1f} ms")
        if len(solutions) == 2:
            g, e = solutions[0][0].cost, solutions[1][0].cost
            print(f"greedy/exact cost: {g / e if e else 1.0:.4f}")
    elif args.output == "status":
        print(yaml.safe_dump_all(variant_objects(decisions), sort_keys=False), end="")
    else:
        data = [as_data(problem, sol) for sol, _ in solutions]
        out = data[0] if len(data) == 1 else {"solutions": data}
        print(json.dumps(out, indent=2) if args.output == "json"
              else yaml.safe_dump(out, sort_keys=False), end="" if args.output == "yaml" else "\n")
    return 0
