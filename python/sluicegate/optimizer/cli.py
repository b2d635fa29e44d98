"""`sluicegate optimize --config FILE…`: one offline solve of the files' VariantAutoscalings,
ConfigMaps and OptimizerConfig; prints the allocation (table, YAML, JSON, or the
VariantAutoscaling status it would write) and can write the metrics HPA/KEDA would read.
With `--kube` the VariantAutoscalings and ConfigMaps come from the cluster, every
VariantAutoscaling gets its status, `--actuate` sets the scale targets, and `--interval`
keeps it running as the controller (serving the gauges on `--metrics-port`).

Imports are deferred to the code that needs them: `--help` and a greedy solve must not pay
for scipy (the exact solver), aiohttp or the Kubernetes client."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable


def solver(name: str) -> Callable[[Any], Any]:
    if name == "exact":
        from .exact import solve
    else:
        from .greedy import solve
    return solve


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML with ConfigMaps service-classes-config / accelerator-unit-costs, "
                        "VariantAutoscalings and an OptimizerConfig (repeatable)")
    p.add_argument("--solver", choices=("greedy", "exact", "both"), default="greedy",
                   help="greedy (default), the exact MILP, or both with the cost gap")
    p.add_argument("--output", choices=("table", "yaml", "json", "status"), default="table",
                   help="status: the VariantAutoscaling status objects the decision writes")
    p.add_argument("--metrics-file", metavar="PATH",
                   help="also write the desired-replica gauges (Prometheus text format)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    k = p.add_argument_group("cluster")
    k.add_argument("--kube", action="store_true",
                   help="read VariantAutoscalings and ConfigMaps from the cluster, write status")
    k.add_argument("--kubeconfig", help="default: in-cluster, then $KUBECONFIG / ~/.kube/config")
    k.add_argument("--configmap-namespace", default="workload-variant-autoscaler-system")
    k.add_argument("--actuate", action="store_true",
                   help="set each variant's scale target (scale subresource) to its decision")
    k.add_argument("--interval", type=float, default=0.0,
                   help="seconds between solves; 0 (default): solve once and exit")
    k.add_argument("--scale-down-window", type=float, default=300.0,
                   help="seconds a lower recommendation must hold before scaling down")
    k.add_argument("--epp-metrics", action="append", default=[], metavar="URL",
                   help="an EPP's /metrics: observed load from its request accounting "
                        "(repeatable; overrides the OptimizerConfig load of the models it saw)")
    k.add_argument("--load-window", type=float, default=120.0,
                   help="seconds of EPP accounting one load estimate spans")
    k.add_argument("--tune-port", type=int, default=None, metavar="PORT",
                   help="fit each profile online from its pods' vLLM /metrics on this port")
    k.add_argument("--metrics-port", type=int, default=None,
                   help="with --interval: serve the gauges on /metrics at this port")
    k.add_argument("--prometheus-url", metavar="URL",
                   help="a Prometheus server: observed load, TTFT and ITL per model from the "
                        "vLLM metrics it scrapes (as the workload-variant-autoscaler queries "
                        "them), and the MetricsAvailable condition")
    k.add_argument("--prometheus-window", default="1m",
                   help="range of the rate() queries (default 1m)")
    k.add_argument("--inventory-from-nodes", action="store_true",
                   help="accelerator counts from the Nodes' allocatable GPUs and accelerator "
                        "labels instead of the OptimizerConfig capacity")


def run_from_args(args: argparse.Namespace) -> int:
    import json

    import yaml

    from sluicegate.errors import ConfigError

    from .actuation import MetricsExporter, decide, variant_objects
    from .config import load_config
    from .problem import build_problem
    from .report import as_data, table

    if args.kube:
        return _run_kube(args)
    if (args.actuate or args.interval) and not args.kube:
        print("sluicegate optimize: --actuate and --interval need --kube", file=sys.stderr)
        return 1
    if not args.config:
        print("sluicegate optimize: --config FILE is required (or --kube)", file=sys.stderr)
        return 1
    try:
        problem = build_problem(load_config(args.config))
    except ConfigError as e:
        print(f"sluicegate optimize: {e}", file=sys.stderr)
        return 1
    names = ("greedy", "exact") if args.solver == "both" else (args.solver,)
    solutions = []
    for name in names:
        started = time.perf_counter()
        solutions.append((solver(name)(problem), time.perf_counter() - started))
    first = solutions[0][0]
    decisions = decide(first, problem.input.variants, now=time.time(), inp=problem.input)
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


def _run_kube(args: argparse.Namespace) -> int:
    import asyncio
    import json

    import yaml

    from sluicegate.errors import ConfigError
    from sluicegate.kube.watcher import api_client

    from .actuation import variant_objects
    from .config import read_files
    from .controller import ControllerOptions, OptimizerController
    from .observe import EppLoadSource
    from .report import table

    if args.solver == "both":
        print("sluicegate optimize: --kube acts on one solver: greedy or exact", file=sys.stderr)
        return 1
    try:
        extra = read_files(args.config)
    except ConfigError as e:
        print(f"sluicegate optimize: {e}", file=sys.stderr)
        return 1
    opts = ControllerOptions(interval_s=args.interval, scale_down_window_s=args.scale_down_window,
                             actuate=args.actuate, configmap_namespace=args.configmap_namespace,
                             tune_port=args.tune_port, prometheus_url=args.prometheus_url,
                             prometheus_window=args.prometheus_window,
                             inventory_from_nodes=args.inventory_from_nodes)
    source = EppLoadSource(args.epp_metrics, args.load_window) if args.epp_metrics else None
    controller = OptimizerController(api_client(args.kubeconfig), extra, solver(args.solver),
                                     opts, load_source=source)
    if args.interval > 0:
        return _serve_controller(controller, args.metrics_port)
    try:
        sol, decisions = asyncio.run(controller.run_once())
    except ConfigError as e:
        print(f"sluicegate optimize: {e}", file=sys.stderr)
        return 1
    if args.metrics_file:
        with open(args.metrics_file, "wb") as f:
            f.write(controller.exporter.render())
    if args.output == "table":
        print(table(sol))
    elif args.output == "status":
        print(yaml.safe_dump_all(variant_objects(decisions), sort_keys=False), end="")
    else:
        data = {"solver": sol.solver, "costCentsPerHour": round(sol.cost, 6),
                "unmet": list(sol.unmet()),
                "decisions": [{"variant": d.variant.key, "accelerator": d.allocation.accelerator,
                               "numReplicas": d.desired_replicas,
                               "optimizedReplicas": d.allocation.replicas,
                               "sloMet": d.allocation.slo_met, "reason": d.reason}
                              for d in decisions]}
        print(json.dumps(data, indent=2) if args.output == "json" else
              yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


def _serve_controller(controller, metrics_port: int | None) -> int:
    import asyncio
    import signal

    from prometheus_client import start_http_server

    server = None
    if metrics_port is not None:
        server, _ = start_http_server(metrics_port, registry=controller.exporter.registry)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await controller.run(stop)

    try:
        asyncio.run(main())
    finally:
        if server is not None:
            server.shutdown()
    return 0
