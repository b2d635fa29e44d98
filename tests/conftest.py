"""Shared fixtures; every server a fixture starts is stopped by it."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.harness import LoopThread, SimFleet


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def sims(loop_thread: LoopThread) -> Iterator[SimFleet]:
    fleet = SimFleet(loop_thread)
    yield fleet
    fleet.stop_all()


