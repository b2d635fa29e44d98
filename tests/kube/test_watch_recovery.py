"""Broken watches recover without restarting the EPP and without losing updates: the apiserver
restarts under a running watcher; changes made while it was down arrive through a relist after
410 Gone (history compacted in etcd)."""

from __future__ import annotations

import pytest

from tests.kube.objects import Kube, wait_until

pytestmark = pytest.mark.kube

APP = {"app": "vllm"}


def test_watch_survives_an_apiserver_restart(kube, start_watcher, control_plane):
    kube.create_pool("pool", APP, [8000])
    kube.ready_pod("a", APP, "10.20.0.1")
    w, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.hostports() == {"10.20.0.1:8000"})
    watches_before = w.pods.stats.watches
    control_plane.apiserver.restart()
    after = Kube(control_plane.apiserver.client(), kube.ns)
    after.ready_pod("b", APP, "10.20.0.2")
    wait_until(lambda: rec.hostports() == {"10.20.0.1:8000", "10.20.0.2:8000"}, timeout=30,
               what="change after restart")
    assert w.pods.stats.watches > watches_before


def test_changes_made_while_disconnected_arrive_by_relist_after_410(kube, start_watcher, control_plane):
    kube.create_pool("pool", APP, [8000])
    kube.ready_pod("a", APP, "10.21.0.1")
    w, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.hostports() == {"10.21.0.1:8000"})
    primary = control_plane.apiserver
    other = control_plane.add_apiserver()
    try:
        primary.stop()
        while_down = Kube(other.client(), kube.ns)
        while_down.set_pod_status("a", "10.21.0.1", ready=False)
        while_down.ready_pod("b", APP, "10.21.0.2")
        while_down.patch_pool("pool", {"targetPorts": [{"number": 8000}, {"number": 8001}]})
        control_plane.compact()
    finally:
        primary.start()
        other.stop()
        control_plane.apiservers.remove(other)
    wait_until(lambda: rec.hostports() == {"10.21.0.2:8000", "10.21.0.2:8001"}, timeout=30,
               what="state written while the watcher was disconnected")
    assert w.pods.stats.gone + w.pool.stats.gone >= 1  # recovered by relisting, not by luck
