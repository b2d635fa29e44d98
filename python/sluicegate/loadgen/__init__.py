"""Open-loop load generator: Poisson arrivals of streamed OpenAI requests from seeded
workloads, timed per request (TTFT, end-to-end, tokens, serving endpoint) into a `LoadReport`."""

from sluicegate.loadgen.cli import add_arguments, run_from_args
from sluicegate.loadgen.client import RequestResult
from sluicegate.loadgen.report import LoadReport
from sluicegate.loadgen.runner import run_load
from sluicegate.loadgen.workloads import WORKLOADS, WorkloadRequest

__all__ = ["WORKLOADS", "LoadReport", "RequestResult", "WorkloadRequest", "add_arguments",
           "run_from_args", "run_load"]
