"""Command-line face of the load generator: the flags of `sluicegate loadgen` and the coroutine
that runs one load and prints its report as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from sluicegate.loadgen.report import LoadReport
from sluicegate.loadgen.runner import run_load
from sluicegate.loadgen.workloads import WORKLOADS
from sluicegate.sim.config import DEFAULT_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--url", required=True, help="base URL, e.g. http://127.0.0.1:8081 (the proxy or a server)")
    add("--workload", choices=sorted(WORKLOADS), default="mixed")
    add("--rate", type=float, default=10.0, help="mean arrivals per second (Poisson)")
    add("--duration", type=float, default=30.0, help="seconds during which requests are sent")
    add("--seed", type=int, default=0)
    add("--max-in-flight", type=int, default=512)
    add("--timeout", type=float, default=60.0, help="per-request client timeout, seconds")
    add("--model", default=DEFAULT_MODEL)
    add("--header", action="append", default=[], metavar="NAME:VALUE",
        help="extra request header, repeatable")


def parse_headers(values: list[str]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"--header {value!r}: expected NAME:VALUE")
        headers[name.strip()] = content.strip()
    return headers


async def run_from_args(args: argparse.Namespace) -> LoadReport:
    try:
        report = await run_load(args.url, args.workload, args.rate, args.duration, args.seed,
                                parse_headers(args.header) or None, args.max_in_flight,
                                model=args.model, request_timeout_s=args.timeout)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    json.dump(report.to_dict(), sys.stdout, indent=2)
    print(flush=True)
    return report
