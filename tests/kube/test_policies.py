"""InferenceObjective → priorities and InferenceModelRewrite → rewrite rules, from a real API server;
a CRD missing from the cluster turns its feature off (logged once) and back on when installed."""

from __future__ import annotations

import logging
import time

import pytest
import yaml
from kubernetes import client

from sluicegate.scheduling import Router
from tests.kube.cluster import CRD_DIR
from tests.kube.objects import LEGACY, Kube, wait_crd_established, wait_until

pytestmark = pytest.mark.kube


def exact(model: str, *targets: tuple[str, int]) -> dict:
    return {"matches": [{"model": {"type": "Exact", "value": model}}],
            "targets": [{"modelRewrite": m, "weight": w} for m, w in targets]}


def match_all(target: str) -> dict:
    return {"matches": [], "targets": [{"modelRewrite": target}]}


def test_objectives_of_the_pool_become_priorities_live(kube, start_watcher):
    kube.create_objective("critical", "pool", 10)
    kube.create_objective("batch", "pool", -5)
    kube.create_objective("unset", "pool", None)
    kube.create_objective("elsewhere", "other-pool", 99)
    _, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.objectives == {"critical": 10, "batch": -5, "unset": 0})
    kube.patch_objective("batch", 3)
    wait_until(lambda: rec.objectives == {"critical": 10, "batch": 3, "unset": 0}, what="priority change")
    kube.delete_objective("critical")
    wait_until(lambda: rec.objectives == {"batch": 3, "unset": 0}, what="objective deleted")


def test_llmd_group_objective_wins_over_the_legacy_group_of_the_same_name(kube, start_watcher):
    kube.create_objective("shared", "pool", 1, group=LEGACY)
    kube.create_objective("legacy-only", "pool", 2, group=LEGACY)
    kube.create_objective("shared", "pool", 7)
    _, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.objectives == {"shared": 7, "legacy-only": 2})


def test_rewrites_exact_beats_match_all_and_oldest_object_wins(kube, start_watcher):
    kube.create_rewrite("old-catchall", "pool", [match_all("base")])
    kube.create_rewrite("old-alias", "pool", [exact("chat", ("chat-v1", 1))])
    time.sleep(1.1)  # creationTimestamp has one-second resolution
    kube.create_rewrite("new-alias", "pool", [exact("chat", ("chat-v2", 1)), exact("code", ("code-v2", 1))])
    kube.create_rewrite("new-catchall", "pool", [match_all("other-base")])
    kube.create_rewrite("other-pool", "elsewhere", [exact("code", ("wrong", 1))])
    _, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.rewrites is not None and len(rec.rewrites.exact) == 2)
    table = rec.rewrites
    assert table.rewrite("chat") == "chat-v1"  # both exact: oldest object wins
    assert table.rewrite("code") == "code-v2"  # exact beats the older match-all
    assert table.rewrite("anything-else") == "base"  # oldest match-all
    kube.delete_rewrite("old-alias")
    wait_until(lambda: rec.rewrites.rewrite("chat") == "chat-v2", what="next-oldest alias takes over")


def test_weighted_targets_split_traffic_by_weight(kube, start_watcher):
    kube.create_rewrite("canary", "pool", [exact("m", ("m-v1", 90), ("m-v2", 10))])
    _, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.rewrites is not None and rec.rewrites)
    picks = [rec.rewrites.rewrite("m") for _ in range(4000)]
    share = picks.count("m-v2") / len(picks)
    assert set(picks) == {"m-v1", "m-v2"} and 0.07 < share < 0.13


def test_the_router_applies_the_table_unless_the_proxy_named_a_rewrite(kube, start_watcher):
    kube.create_rewrite("alias", "pool", [exact("small", ("small-v1", 1))])
    _, rec = start_watcher(kube, pool_name="pool")
    wait_until(lambda: rec.rewrites is not None and rec.rewrites)
    router = Router()
    router.set_endpoints([("ep", "10.0.0.1:8000", {})])
    router.set_rewrites(rec.rewrites.to_json())  # what Kubernetes mode does on every change
    body = b'{"model": "small", "messages": [{"role": "user", "content": "hi"}]}'
    targets = [router.route("/v1/chat/completions", body, None, None).target_model,
               router.route("/v1/chat/completions", body, "from-header", None).target_model,
               router.route("/v1/chat/completions", body.replace(b"small", b"large"), None, None).target_model]
    assert targets == ["small-v1", "from-header", None]


def _delete_crds(ext: client.ApiextensionsV1Api, names: list[str], timeout: float = 60.0) -> None:
    for n in names:
        ext.delete_custom_resource_definition(n)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {c.metadata.name for c in ext.list_custom_resource_definition().items} & set(names)
        if not left:
            return
        time.sleep(0.2)  # poll interval of this bounded wait
    raise TimeoutError(f"CRDs not deleted: {left}")


def test_missing_crd_turns_the_feature_off_logged_once_and_on_when_installed(control_plane, start_watcher, caplog):
    api = control_plane.apiserver.client()
    ext = client.ApiextensionsV1Api(api)
    files = sorted(CRD_DIR.glob("*inferenceobjectives.yaml"))
    names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
    kube = Kube(api).create_namespace()
    kube.create_pool("pool", {"app": "vllm"}, [8000])
    kube.ready_pod("a", {"app": "vllm"}, "10.10.0.1")
    _delete_crds(ext, names)
    try:
        with caplog.at_level(logging.WARNING, logger="sluicegate.kube"):
            w, rec = start_watcher(kube, pool_name="pool")
            wait_until(lambda: rec.hostports() == {"10.10.0.1:8000"}, what="endpoints without objectives")
            wait_until(lambda: all(i.missing for i in w.objectives), what="objectives marked missing")
        off = [r for r in caplog.records if "InferenceObjective" in r.getMessage() and "off" in r.getMessage()]
        assert len(off) == 1
        assert rec.objectives is None  # never reported: the feature is off, not "no objectives"
    finally:
        for f in files:
            ext.create_custom_resource_definition(yaml.safe_load(f.read_text()))
        for n in names:
            wait_crd_established(ext, n, 60)
    kube.create_objective("late", "pool", 4)
    wait_until(lambda: rec.objectives == {"late": 4}, timeout=40, what="feature back on after CRD install")


def test_objectives_reach_the_epps_router_live(kube, control_plane, loop_thread):
    from tests.kube.epp import start_in_process

    kube.create_objective("critical", "pool", 10)
    epp = start_in_process(loop_thread, control_plane, kube.ns, "featureGates: [flowControl]\n")
    try:
        assert epp.flow is not None
        wait_until(lambda: epp.router.priority_of("critical") == 10, what="objective in the Router")
        kube.patch_objective("critical", -3)
        kube.create_objective("batch", "pool", 2)
        wait_until(lambda: (epp.router.priority_of("critical"), epp.router.priority_of("batch")) == (-3, 2),
                   what="live priority change")
    finally:
        loop_thread.run(epp.stop(0))
