"""Session fixtures for the kube tests: one real etcd + kube-apiserver with the chart's CRDs,
a fresh namespace per test, and in-process watchers driven on the test loop."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest

from sluicegate.kube.watcher import KubeOptions, PoolWatcher
from tests.kube.cluster import CRD_DIR, ControlPlane, ensure_bins
from tests.kube.objects import Kube, install_crds


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("kube"), ensure_bins())
    try:
        cp.start()
        install_crds(cp.apiserver.client(), CRD_DIR)
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def kube(control_plane) -> Kube:
    return Kube(control_plane.apiserver.client()).create_namespace()


class Recorder:
    """What a PoolWatcher handed on, readable from the test thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.endpoints: list = []
        self.objectives: dict[str, int] | None = None
        self.rewrites = None
        self.endpoint_updates = 0

    def on_endpoints(self, eps) -> None:
        with self._lock:
            self.endpoints = list(eps)
            self.endpoint_updates += 1

    def on_objectives(self, prios) -> None:
        with self._lock:
            self.objectives = dict(prios)

    def on_rewrites(self, table) -> None:
        with self._lock:
            self.rewrites = table

    def hostports(self) -> set[str]:
        with self._lock:
            return {e.hostport for e in self.endpoints}


@pytest.fixture
def start_watcher(loop_thread, control_plane):
    """start_watcher(kube, pool_name=...) → (PoolWatcher, Recorder), stopped at teardown."""
    started: list[PoolWatcher] = []

    def start(kube: Kube, api=None, **opts) -> tuple[PoolWatcher, Recorder]:
        rec = Recorder()
        opts.setdefault("pool_namespace", kube.ns)

        async def go() -> PoolWatcher:
            w = PoolWatcher(KubeOptions(**opts), api or control_plane.apiserver.client(), rec.on_endpoints,
                            rec.on_objectives, rec.on_rewrites)
            w.start()
            assert await w.wait_synced(30)
            return w

        w = loop_thread.run(go())
        started.append(w)
        return w, rec

    yield start
    for w in started:
        loop_thread.run(w.stop())
