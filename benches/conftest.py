"""Bench fixtures: sizes (SLUICEGATE_BENCH_QUICK / SLUICEGATE_BENCH_REQUESTS), one backend and
the baseline paths for the session, and the results every path records, printed at the end."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import pytest

from benches.results import PathResult, format_table
from benches.stack import BackendProcess, BaselineStacks

_RESULTS = pytest.StashKey[dict[str, PathResult]]()


@dataclass(frozen=True)
class BenchSizes:
    warmup: int
    requests: int
    idle_window_s: float


def _sizes_from_env() -> BenchSizes:
    quick = os.environ.get("SLUICEGATE_BENCH_QUICK", "") not in ("", "0", "false")
    sizes = BenchSizes(warmup=100, requests=300, idle_window_s=0.5) if quick else \
        BenchSizes(warmup=200, requests=2000, idle_window_s=1.0)
    override = os.environ.get("SLUICEGATE_BENCH_REQUESTS")
    if override:
        if not override.isdigit() or int(override) < 10:
            raise pytest.UsageError(
                f"SLUICEGATE_BENCH_REQUESTS: {override!r} must be an integer >= 10")
        sizes = BenchSizes(sizes.warmup, int(override), sizes.idle_window_s)
    return sizes


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS] = {}


@pytest.fixture(scope="session")
def bench_sizes() -> BenchSizes:
    return _sizes_from_env()


@pytest.fixture(scope="session")
def backend() -> Iterator[BackendProcess]:
    process = BackendProcess().start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def baseline_stacks(backend: BackendProcess) -> Iterator[BaselineStacks]:
    stacks = BaselineStacks(backend)
    yield stacks
    stacks.stop_all()


@pytest.fixture(scope="session")
def path_results(pytestconfig: pytest.Config) -> dict[str, PathResult]:
    """Results by path name, in the order measured, for the end-of-session table."""
    return pytestconfig.stash[_RESULTS]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, {})
    if results:
        terminalreporter.section("request path latency (sluicegate benches)")
        terminalreporter.write_line(format_table(results))
