"""InferencePool + Pods on a real kube-apiserver → the endpoints the EPP routes to."""

from __future__ import annotations

import pytest

from tests.kube.objects import LEGACY, wait_until

pytestmark = pytest.mark.kube

APP = {"app": "vllm"}


def test_ready_pods_become_one_endpoint_per_target_port(kube, start_watcher):
    kube.create_pool("pool", APP, [8000, 8001])
    kube.ready_pod("a", {**APP, "llm-d.ai/role": "decode"}, "10.1.0.1")
    kube.ready_pod("b", APP, "10.1.0.2")
    _, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.hostports() == {"10.1.0.1:8000", "10.1.0.1:8001", "10.1.0.2:8000", "10.1.0.2:8001"})
    by_name = {e.name: e for e in rec.endpoints}
    assert set(by_name) == {"a-rank-0", "a-rank-1", "b-rank-0", "b-rank-1"}
    assert by_name["a-rank-1"].labels["llm-d.ai/role"] == "decode" and by_name["a-rank-1"].namespace == kube.ns


def test_unready_ipless_and_deleting_pods_are_not_endpoints(kube, start_watcher):
    kube.create_pool("pool", APP, [8000])
    kube.ready_pod("a", APP, "10.2.0.1")
    kube.create_pod("no-ip", APP)
    kube.set_pod_status("no-ip", None, ready=True)
    kube.create_pod("unready", APP)
    kube.set_pod_status("unready", "10.2.0.3", ready=False)
    kube.ready_pod("other-app", {"app": "other"}, "10.2.0.4")
    _, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.hostports() == {"10.2.0.1:8000"})

    kube.set_pod_status("unready", "10.2.0.3", ready=True)
    wait_until(lambda: rec.hostports() == {"10.2.0.1:8000", "10.2.0.3:8000"}, what="pod turned Ready")
    kube.set_pod_status("a", "10.2.0.1", ready=False)
    wait_until(lambda: rec.hostports() == {"10.2.0.3:8000"}, what="pod turned unready")
    kube.start_deleting_pod("unready")
    wait_until(lambda: rec.hostports() == set(), what="pod being deleted dropped")
    assert kube.core.read_namespaced_pod("unready", kube.ns).metadata.deletion_timestamp is not None


def test_active_ports_annotation_narrows_the_target_ports(kube, start_watcher):
    kube.create_pool("pool", APP, [8000, 8001, 8002])
    kube.ready_pod("dp", APP, "10.3.0.1", annotations={"llm-d.ai/active-ports": "8001, 8002,9999"})
    kube.ready_pod("legacy", APP, "10.3.0.2", annotations={"inference.networking.k8s.io/active-ports": "8000"})
    _, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.hostports() == {"10.3.0.1:8001", "10.3.0.1:8002", "10.3.0.2:8000"})
    assert {e.name for e in rec.endpoints} == {"dp-rank-1", "dp-rank-2", "legacy-rank-0"}

    kube.annotate_pod("dp", {"llm-d.ai/active-ports": None})  # annotation removed: every target port
    wait_until(lambda: {"10.3.0.1:8000", "10.3.0.1:8001", "10.3.0.1:8002"} <= rec.hostports())


def test_pool_selector_and_port_changes_reselect(kube, start_watcher):
    kube.create_pool("pool", APP, [8000])
    kube.ready_pod("a", APP, "10.4.0.1")
    kube.ready_pod("b", {"app": "sglang"}, "10.4.0.2")
    _, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.hostports() == {"10.4.0.1:8000"})
    kube.patch_pool("pool", {"selector": {"matchLabels": {"app": "sglang"}}, "targetPorts": [{"number": 30000}]})
    wait_until(lambda: rec.hostports() == {"10.4.0.2:30000"}, what="pool re-selected")
    kube.relabel_pod("a", {"app": "sglang"})
    wait_until(lambda: rec.hostports() == {"10.4.0.1:30000", "10.4.0.2:30000"}, what="relabelled pod joined")


def test_pool_deleted_means_no_endpoints_and_recreated_means_back(kube, start_watcher):
    kube.create_pool("pool", APP, [8000])
    kube.ready_pod("a", APP, "10.5.0.1")
    _, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.hostports() == {"10.5.0.1:8000"})
    kube.delete_pool("pool")
    wait_until(lambda: rec.endpoints == [] and rec.endpoint_updates >= 2, what="endpoints emptied")
    kube.create_pool("pool", APP, [8080])
    wait_until(lambda: rec.hostports() == {"10.5.0.1:8080"}, what="pool back")


def test_pool_that_does_not_exist_yet_gives_no_endpoints_until_created(kube, start_watcher):
    kube.ready_pod("a", APP, "10.6.0.1")
    _, rec = start_watcher(kube, pool_name="late")
    assert rec.hostports() == set()
    kube.create_pool("late", APP, [8000])
    wait_until(lambda: rec.hostports() == {"10.6.0.1:8000"})


def test_legacy_pool_group_is_read_with_pool_group(kube, start_watcher):
    kube.create_pool("old", APP, [8000], group=LEGACY)
    kube.ready_pod("a", APP, "10.7.0.1")
    _, rec = start_watcher(kube, pool_name="old", pool_group="inference.networking.x-k8s.io")
    wait_until(lambda: rec.hostports() == {"10.7.0.1:8000"})


def test_endpoint_selector_without_crds(kube, start_watcher):
    kube.ready_pod("a", {"app": "vllm", "tier": "gold"}, "10.8.0.1")
    kube.ready_pod("b", {"app": "vllm"}, "10.8.0.2")
    w, rec = start_watcher(kube, endpoint_selector="app=vllm,tier=gold", endpoint_target_ports="8000,8001")
    wait_until(lambda: rec.hostports() == {"10.8.0.1:8000", "10.8.0.1:8001"})
    assert w.pool is None and w.objectives == [] and w.rewrites == []


def test_changes_arrive_by_watch_events_not_by_relisting(kube, start_watcher):
    kube.create_pool("pool", APP, [8000])
    w, rec = start_watcher(kube, pool_name="pool")
    kube.ready_pod("a", APP, "10.9.0.1")
    wait_until(lambda: rec.hostports() == {"10.9.0.1:8000"})
    assert w.pods.stats.lists == 1 and w.pods.stats.events >= 2  # one list, then watch events only
