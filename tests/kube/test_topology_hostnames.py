"""A k8s-notification-source watching Pods feeds topology-extractor's fallback: a Pod without the
hostname label is placed by its spec.hostname, read from the API server with the endpoint set, in
the EPP as `sluicegate run --pool-name` builds it; a deleted Pod's hostname goes with it."""

from __future__ import annotations

import json

import pytest

from sluicegate.app import Epp
from sluicegate.errors import NoEndpointsError
from tests.harness import free_port
from tests.kube.epp import start_in_process
from tests.kube.objects import wait_until

pytestmark = pytest.mark.kube

APP = {"app": "pd"}
ROLE = "llm-d.ai/role"
HOST_LABEL = "kubernetes.io/hostname"
CONFIG = """
plugins:
- {type: k8s-notification-source, name: pods, parameters: {group: "", version: v1, kind: Pod}}
- {type: topology-extractor}
- {type: decode-filter}
- {type: prefill-filter}
- {type: always-disagg-pd-decider}
- {type: disagg-profile-handler, parameters: {deciders: {prefill: always-disagg-pd-decider}}}
- {type: topology-affinity-scorer, name: closer}
schedulingProfiles:
- {name: decode, plugins: [{pluginRef: decode-filter}]}
- {name: prefill, plugins: [{pluginRef: prefill-filter}, {pluginRef: closer, weight: 1}]}
dataLayer: {injectDefaults: false, sources: [{pluginRef: pods}]}
"""
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture
def epp(kube, control_plane, loop_thread):
    e = start_in_process(loop_thread, control_plane, kube.ns, CONFIG)
    yield e
    loop_thread.run(e.stop(0))


def prefill_closeness(epp: Epp) -> dict[str, float]:
    """The topology-affinity scorer's raw score per prefill candidate (address), or {} when the
    request did not reach the prefill profile (or found no decode endpoint yet: the watch delivers
    the Pods one by one)."""
    try:
        _, profiles = epp.router.explain("/v1/chat/completions", BODY)
    except NoEndpointsError:
        return {}
    for name, candidates, scores, _, _ in profiles:
        if name == "prefill":
            raw = next(r for scorer, _, r in scores if scorer == "closer")
            return dict(zip(candidates, raw))
    return {}


def test_a_pods_spec_hostname_places_it_when_the_hostname_label_is_absent(kube, epp):
    ports = {n: free_port() for n in ("dec", "pre-a", "pre-b", "pre-l")}
    kube.create_pool("pool", APP, list(ports.values()))
    at = {n: f"127.0.0.1:{p}" for n, p in ports.items()}

    def pod(name: str, role: str, hostname: str, labels: dict[str, str] | None = None) -> None:
        kube.ready_pod(name, {**APP, ROLE: role, **(labels or {})}, "127.0.0.1",
                       annotations={"llm-d.ai/active-ports": str(ports[name])}, hostname=hostname)

    pod("dec", "decode", "node-a")
    pod("pre-a", "prefill", "node-a")  # same node as the decode pick, by spec.hostname only
    pod("pre-b", "prefill", "node-b")
    pod("pre-l", "prefill", "node-a", {HOST_LABEL: "node-z"})  # the label is read first
    scores = wait_until(lambda: (s := prefill_closeness(epp)) and len(s) == 3 and s, timeout=20,
                        what="three prefill candidates")
    assert scores == {at["pre-a"]: 1.0, at["pre-b"]: 0.0, at["pre-l"]: 0.0}

    # Deleted, then recreated on another node at the same address: the old hostname is gone.
    kube.delete_pod_now("pre-a")
    wait_until(lambda: at["pre-a"] not in prefill_closeness(epp), timeout=20, what="pre-a gone")
    pod("pre-a", "prefill", "node-c")
    scores = wait_until(lambda: (s := prefill_closeness(epp)) and len(s) == 3 and s, timeout=20,
                        what="pre-a back")
    assert scores == {at["pre-a"]: 0.0, at["pre-b"]: 0.0, at["pre-l"]: 0.0}
    # The decode Pod moves to node-b: pre-b is now its neighbour.
    kube.delete_pod_now("dec")
    wait_until(lambda: at["dec"] not in {e.address for e in epp.router.status()}, timeout=20, what="dec gone")
    pod("dec", "decode", "node-b")
    wait_until(lambda: prefill_closeness(epp).get(at["pre-b"]) == 1.0, timeout=20, what="pre-b beside decode")
