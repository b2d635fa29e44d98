"""Shared fixtures; every server a fixture starts is stopped by it. The `leak_guard` fixture
runs around every test and fails it when it leaves tasks on the shared loop or non-daemon
threads behind (after a bounded wait for them to end on their own)."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Iterator

import pytest
from hypothesis import settings

from tests.harness import HoldingProxy, LoopThread, SimFleet

# CI runs the property tests on a fixed sequence of examples, so a red CI names a change, not a
# lucky draw; local runs keep exploring new examples (what found the bugs fixed so far).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# How long a test's leftovers get to end by themselves (a server's handler finishing its last
# write, a thread returning) before they count as leaked.
LEAK_GRACE_S = 5.0
_LOOP: list[LoopThread] = []  # the session loop, once a test asked for it


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    _LOOP.append(lt)
    yield lt
    _LOOP.remove(lt)
    lt.close()


@pytest.fixture
def sims(loop_thread: LoopThread) -> Iterator[SimFleet]:
    fleet = SimFleet(loop_thread)
    yield fleet
    fleet.stop_all()


@pytest.fixture
def holding_proxy(loop_thread: LoopThread) -> Iterator:
    """make(upstream "host:port"[, hold_body]) → a started HoldingProxy in front of it; all
    stopped after."""
    made: list[HoldingProxy] = []

    def make(upstream: str, hold_body: bytes | None = None) -> HoldingProxy:
        made.append(HoldingProxy(loop_thread, upstream, hold_body).start())
        return made[-1]

    yield make
    for p in made:
        p.stop()


def _pending(lt: LoopThread) -> list:
    return lt.pending_tasks() if not lt.loop.is_closed() else []


@pytest.fixture(autouse=True)
def root_logger_restored() -> Iterator[None]:
    """A command run in-process (`cli.main`) installs a handler on the root logger bound to the
    stderr pytest captures for that test and closes after it; restored here, so a later test's
    threads log into pytest's capture rather than "--- Logging error ---" on a closed file."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def leak_guard() -> Iterator[None]:
    # Autouse and function-scoped: set up before, torn down after, the test's own fixtures.
    before = {t.ident for t in threading.enumerate()}
    tasks_before = {id(t) for lt in _LOOP for t in _pending(lt)}
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    threads, tasks = [], []
    while time.monotonic() < deadline:
        threads = [t for t in threading.enumerate()
                   if t.ident not in before and not t.daemon and t.is_alive()]
        tasks = [t for lt in _LOOP for t in _pending(lt) if id(t) not in tasks_before]
        if not threads and not tasks:
            return
        if threads:
            threads[0].join(0.05)
        else:
            time.sleep(0.05)  # bounded poll of the loop's tasks, inside the deadline above
    raise AssertionError(f"the test left {len(threads)} non-daemon thread(s) "
                         f"{[t.name for t in threads]} and {len(tasks)} task(s) on the shared loop "
                         f"{[t.get_coro() for t in tasks][:5]} running after {LEAK_GRACE_S} s")
