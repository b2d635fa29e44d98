"""The optimizer controller with the autoscaler's real inputs, against a real kube-apiserver
and a real Prometheus: accelerator counts from Node objects (allocatable GPUs and the vendor's
product label), load and observed TTFT/ITL from the vLLM series Prometheus scrapes, and the
full VariantAutoscaling status (currentAlloc with accelerator, replicas, maxBatch, cost,
averages and load; conditions MetricsAvailable, CapacityExceeded, OptimizationReady)."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client

from sluicegate.optimizer import greedy
from sluicegate.optimizer.controller import ControllerOptions, OptimizerController
from sluicegate.optimizer.kube import VA_GROUP, VA_PLURAL, VA_VERSION
from sluicegate.optimizer.prometheus import PrometheusSource
from tests.kube.test_optimizer_controller import cluster_inputs  # noqa: F401 (a fixture)
from tests.prometheus.server import PrometheusServer
from tests.prometheus.vllm import OUTPUT, PROMPT, RATE_RPS, TPOT_S, TTFT_S, VllmMetrics, wait_for_rate

pytestmark = pytest.mark.kube

MODEL = "meta/llama-3.1-8b"
WINDOW = "5s"  # rate() range: full of 1 s scrapes soon after the fixture starts
# name -> (product label, resource, units); the H200 has no accelerator-unit-costs entry.
NODES = {"gpu-a100-0": ("nvidia.com/gpu.product", "NVIDIA-A100-PCIE-80GB", "nvidia.com/gpu", 2),
         "gpu-a100-1": ("nvidia.com/gpu.product", "NVIDIA-A100-PCIE-80GB", "nvidia.com/gpu", 1),
         "gpu-mi300x": ("amd.com/gpu.product-name", "AMD-MI300X-192GB", "amd.com/gpu", 8),
         "gpu-h200": ("nvidia.com/gpu.product", "NVIDIA-H200", "nvidia.com/gpu", 8)}


@pytest.fixture
def gpu_nodes(kube):
    core = client.CoreV1Api(kube.api)
    names = [f"{kube.ns}-{n}" for n in NODES]
    for name, (label, product, resource, units) in zip(names, NODES.values()):
        core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "labels": {label: product}}})
        # The test plays kubelet: allocatable and Ready go through the status subresource.
        core.patch_node_status(name, {"status": {
            "capacity": {resource: str(units)}, "allocatable": {resource: str(units)},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "test"}]}})
    yield names
    for name in names:
        core.delete_node(name)


@pytest.fixture
def vllm_prometheus(cluster_inputs, tmp_path):  # noqa: F811
    kube, _ = cluster_inputs
    with VllmMetrics(MODEL) as vllm, PrometheusServer(tmp_path, {"vllm": (
            [f"127.0.0.1:{vllm.port}"], {"namespace": kube.ns})}) as prom:
        seen = wait_for_rate(PrometheusSource(prom.url, WINDOW), kube.ns, MODEL, settle_s=6.0)
        assert seen.load is not None and seen.load.arrival_rps > 0, prom.log_tail()
        yield prom


def test_capacity_from_nodes_load_from_prometheus_and_the_full_status(
        cluster_inputs, gpu_nodes, vllm_prometheus) -> None:  # noqa: F811
    kube, extra = cluster_inputs
    ctl = OptimizerController(kube.api, extra, greedy.solve, ControllerOptions(
        configmap_namespace=kube.ns, inventory_from_nodes=True,
        prometheus_url=vllm_prometheus.url, prometheus_window=WINDOW))
    sol, decisions = asyncio.run(ctl.run_once(now=0.0))
    # Only the Nodes' GPUs count: 3 A100 and 8 MI300X (the sample file says 16 A100); the
    # H200s match no accelerator type and L40S/H100 have no node.
    used = sol.units_used()
    assert used.get("A100", 0) <= 3 and used.get("MI300X", 0) <= 8
    assert used.get("L40S", 0) == used.get("H100", 0) == 0
    by_name = {d.variant.name: d for d in decisions}
    llama = [d for d in decisions if d.variant.model == MODEL]
    assert llama and all(d.load is not None for d in llama)
    served = next(d for d in llama if d.allocation.serving)
    assert served.observation is not None
    assert served.observation.load.arrival_rps == pytest.approx(RATE_RPS, rel=0.35)
    assert served.observation.load.input_tokens == pytest.approx(PROMPT)

    status = kube.custom.get_namespaced_custom_object_status(
        VA_GROUP, VA_VERSION, kube.ns, VA_PLURAL, "llama-8b-a100")["status"]
    current = status["currentAlloc"]
    assert current["numReplicas"] == 1  # the Deployment's replicas
    assert current["accelerator"] == "A100" and current["maxBatch"] == 64
    assert float(current["variantCost"]) == pytest.approx(40.0)
    assert float(current["ttftAverage"]) == pytest.approx(TTFT_S * 1000, abs=0.01)
    assert float(current["itlAverage"]) == pytest.approx(TPOT_S * 1000, abs=0.01)
    assert float(current["load"]["arrivalRate"]) == pytest.approx(RATE_RPS * 60, rel=0.35)
    assert float(current["load"]["avgInputTokens"]) == pytest.approx(PROMPT, abs=0.01)
    assert float(current["load"]["avgOutputTokens"]) == pytest.approx(OUTPUT, abs=0.01)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["MetricsAvailable"]["status"] == "True"
    assert conditions["MetricsAvailable"]["reason"] == "MetricsFound"
    assert {"OptimizationReady", "CapacityExceeded"} <= set(conditions)
    # A model with no vLLM series says so.
    absent = next(d for d in decisions if d.variant.model != MODEL)
    other = kube.custom.get_namespaced_custom_object_status(
        VA_GROUP, VA_VERSION, kube.ns, VA_PLURAL, absent.variant.name)["status"]
    assert {c["type"]: c["reason"] for c in other["conditions"]}["MetricsAvailable"] == \
        "MetricsMissing"
    # Capacity short of an SLO is reported where it applies.
    for model, why in sol.capacity_exceeded().items():
        name = next(d.variant.name for d in decisions if f"{d.variant.namespace}/"
                    f"{d.variant.model}" == model and d.allocation.serving)
        st = kube.custom.get_namespaced_custom_object_status(
            VA_GROUP, VA_VERSION, kube.ns, VA_PLURAL, name)["status"]
        assert {c["type"]: c["status"] for c in st["conditions"]}["CapacityExceeded"] == "True"
    assert by_name  # every variant has a decision
