"""The optimizer controller against a real kube-apiserver: it reads VariantAutoscalings and the
autoscaler's ConfigMaps, writes each VariantAutoscaling's status, sets Deployments' replicas
through the scale subresource when actuating, and holds a scale-down for its window."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from kubernetes import client

from sluicegate.loadgen.client import send
from sluicegate.loadgen.workloads import WorkloadRequest
from sluicegate.sim.config import SimConfig

from sluicegate.optimizer import greedy, samples_dir
from sluicegate.optimizer.controller import ControllerOptions, OptimizerController
from sluicegate.optimizer.kube import VA_GROUP, VA_PLURAL, VA_VERSION
from tests.kube.objects import install_crds

pytestmark = pytest.mark.kube

CRDS = Path(samples_dir()).parent / "crds"
WINDOW_S = 300.0


def _samples(ns: str) -> tuple[list[dict], list[dict], list[tuple[dict, str]]]:
    """(ConfigMaps, VariantAutoscalings, other documents) of the samples, moved to `ns`."""
    docs = [d for f in sorted(samples_dir().glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]
    for d in docs:
        if d["kind"] in ("ConfigMap", "VariantAutoscaling"):
            d["metadata"]["namespace"] = ns
    cms = [d for d in docs if d["kind"] == "ConfigMap"]
    vas = [d for d in docs if d["kind"] == "VariantAutoscaling"]
    for d in docs:
        if d["kind"] == "OptimizerConfig":
            for entry in d["spec"]["load"]:
                entry.pop("namespace", None)
    return cms, vas, [(d, "optimizer-config.yaml") for d in docs
                      if d["kind"] == "OptimizerConfig"]


def _deployment(name: str, replicas: int) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "vllm", "image": "vllm/vllm-openai:latest"}]}}}}


def _with_load(extra: list[tuple[dict, str]], rate_per_min: float) -> list[tuple[dict, str]]:
    cfg = yaml.safe_load(yaml.safe_dump(extra[0][0]))
    for entry in cfg["spec"]["load"]:
        if entry["model"] == "meta/llama-3.1-8b":
            entry["arrivalRate"] = rate_per_min
    return [(cfg, extra[0][1])]


@pytest.fixture
def cluster_inputs(kube):
    install_crds(kube.api, CRDS)
    cms, vas, extra = _samples(kube.ns)
    for cm in cms:
        kube.core.create_namespaced_config_map(kube.ns, cm)
    apps = client.AppsV1Api(kube.api)
    for va in vas:
        target = va["spec"].get("scaleTargetRef", {}).get("name", va["metadata"]["name"])
        apps.create_namespaced_deployment(kube.ns, _deployment(target, 1))
        created = kube.custom.create_namespaced_custom_object(VA_GROUP, VA_VERSION, kube.ns,
                                                              VA_PLURAL, va)
        if "status" in va:  # status is a subresource: written apart, as a controller would
            created["status"] = va["status"]
            kube.custom.replace_namespaced_custom_object_status(
                VA_GROUP, VA_VERSION, kube.ns, VA_PLURAL, va["metadata"]["name"], created)
    yield kube, extra
    for va in vas:
        kube.custom.delete_namespaced_custom_object(VA_GROUP, VA_VERSION, kube.ns, VA_PLURAL,
                                                    va["metadata"]["name"])


def _controller(kube, extra, actuate: bool) -> OptimizerController:
    return OptimizerController(kube.api, extra, greedy.solve, ControllerOptions(
        actuate=actuate, scale_down_window_s=WINDOW_S, configmap_namespace=kube.ns))


def _replicas(kube, name: str) -> int:
    return client.AppsV1Api(kube.api).read_namespaced_deployment(name, kube.ns).spec.replicas


def _status(kube, name: str) -> dict:
    return kube.custom.get_namespaced_custom_object_status(
        VA_GROUP, VA_VERSION, kube.ns, VA_PLURAL, name)["status"]


def test_status_is_written_and_replicas_left_alone_without_actuate(cluster_inputs) -> None:
    kube, extra = cluster_inputs
    sol, decisions = asyncio.run(_controller(kube, extra, actuate=False).run_once(now=0.0))
    assert sol.unmet() == ()
    for d in decisions:
        status = _status(kube, d.variant.name)
        assert status["desiredOptimizedAlloc"]["numReplicas"] == d.desired_replicas
        assert status["actuation"] == {"applied": False}
        assert status["conditions"][0]["type"] == "OptimizationReady"
        assert _replicas(kube, d.target.name) == 1
    a100 = next(d for d in decisions if d.variant.name == "llama-8b-a100")
    assert a100.allocation.current_replicas == 2  # read back from status.currentAlloc


def test_actuate_scales_targets_and_holds_a_scale_down_for_the_window(cluster_inputs) -> None:
    kube, extra = cluster_inputs
    ctl = _controller(kube, extra, actuate=True)

    key = "llama-8b-a100"

    async def round_at(now: float):
        _, decisions = await ctl.run_once(now=now)
        return next(d for d in decisions if d.variant.name == key), _replicas(kube, key)

    async def rounds():
        first = await round_at(0.0)
        ctl._extra = _with_load(extra, 600)  # a quarter of the load
        return first, await round_at(60.0), await round_at(WINDOW_S + 61.0)

    (up, up_now), (held, held_now), (down, down_now) = asyncio.run(rounds())
    assert up.desired_replicas > 1 and up_now == up.desired_replicas
    assert held.allocation.replicas < up.desired_replicas
    assert held.desired_replicas == held_now == up.desired_replicas
    assert down.desired_replicas == held.allocation.replicas == down_now
    assert _status(kube, key)["actuation"] == {"applied": True}
    current = _status(kube, key)["currentAlloc"]
    assert current["numReplicas"] == down_now and current["accelerator"] == "A100"
    assert float(current["load"]["arrivalRate"]) == 600.0  # the load sized for
    # Idle granite is allowed to scale to zero; its Deployment follows.
    assert _replicas(kube, "granite-13b") == 0


def test_cli_solves_from_the_cluster_and_actuates(cluster_inputs, control_plane,
                                                  tmp_path: Path) -> None:
    kube, extra = cluster_inputs
    cfg = tmp_path / "optimizer.yaml"
    cfg.write_text(yaml.safe_dump_all([doc for doc, _ in extra]))
    out = subprocess.run(
        [sys.executable, "-m", "sluicegate", "optimize", "--kube",
         "--kubeconfig", str(control_plane.apiserver.kubeconfig),
         "--configmap-namespace", kube.ns, "--config", str(cfg), "--actuate", "--output",
         "json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    mine = {d["variant"]: d for d in data["decisions"] if d["variant"].startswith(kube.ns)}
    assert len(mine) == 4
    for key, d in mine.items():
        name = key.split("/", 1)[1]
        assert _status(kube, name)["desiredOptimizedAlloc"]["numReplicas"] == d["numReplicas"]
    assert _replicas(kube, "llama-8b-a100") == mine[f"{kube.ns}/llama-8b-a100"]["numReplicas"]


def test_cli_names_a_bad_variant_field_read_from_the_cluster(cluster_inputs, control_plane,
                                                             tmp_path: Path) -> None:
    kube, extra = cluster_inputs
    kube.custom.patch_namespaced_custom_object(
        VA_GROUP, VA_VERSION, kube.ns, VA_PLURAL, "llama-70b",
        {"spec": {"modelProfile": {"accelerators": [{
            "acc": "H100", "accCount": 2, "maxBatchSize": 0, "perfParms": {
                "decodeParms": {"alpha": "18", "beta": "0.4"},
                "prefillParms": {"gamma": "12", "delta": "0.04"}}}]}}})
    cfg = tmp_path / "optimizer.yaml"
    cfg.write_text(yaml.safe_dump_all([doc for doc, _ in extra]))
    out = subprocess.run(
        [sys.executable, "-m", "sluicegate", "optimize", "--kube",
         "--kubeconfig", str(control_plane.apiserver.kubeconfig),
         "--configmap-namespace", kube.ns, "--config", str(cfg)],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert f"namespace {kube.ns}: VariantAutoscaling llama-70b: spec.modelProfile" \
        ".accelerators[0].maxBatchSize=0: must be an integer >= 1" in out.stderr


def test_controller_tunes_the_profile_from_the_pods_vllm_metrics(cluster_inputs, sims,
                                                                 loop_thread) -> None:
    kube, extra = cluster_inputs
    sim = SimConfig(alpha_ms=20.0, beta_ms=1.5, gamma_ms=2.0, delta_ms=0.01, max_num_seqs=16,
                    loras=(), model="meta/llama-3.1-8b", seed=5)
    (server,) = sims.start(sim)
    host, port = server.address.rsplit(":", 1)
    kube.ready_pod("llama-8b-a100-0", {"app": "llama-8b-a100"}, host)
    ctl = OptimizerController(kube.api, extra, greedy.solve, ControllerOptions(
        configmap_namespace=kube.ns, tune_port=int(port)))
    itls: list[float] = []

    async def drive() -> None:
        until = time.monotonic() + 6.0
        async with aiohttp.ClientSession() as session:
            async def client_loop() -> None:
                while time.monotonic() < until:
                    r = await send(session, f"http://{server.address}", WorkloadRequest(
                        "/v1/completions", {"model": sim.model, "prompt": "x " * 200,
                                            "max_tokens": 24, "stream": True,
                                            "ignore_eos": True}))
                    assert r.ok, r.error
                    itls.append((r.e2e_s - r.ttft_s) * 1000 / (r.output_tokens - 1))

            async def optimize() -> None:
                await asyncio.sleep(1.0)  # pacing, not synchronisation: the batch fills first
                while time.monotonic() < until:
                    await ctl.run_once()
                    await asyncio.sleep(0.4)  # pacing: the controller's cycle interval

            await asyncio.gather(*(client_loop() for _ in range(8)), optimize())

    loop_thread.run(drive(), timeout=60)
    tuner = ctl.tuning.tuners[("meta/llama-3.1-8b", "A100")]
    fit = tuner.fit.decode
    assert fit.samples >= 5
    # One batch size (8) was seen: the line must predict the ITL the clients saw there.
    assert fit.base + fit.slope * 8 == pytest.approx(statistics.mean(itls[len(itls) // 3:]),
                                                     rel=0.2)
    text = ctl.exporter.render().decode()
    assert ('sluicegate_optimizer_fit_rmse_ms{accelerator_type="A100",'
            'model_name="meta/llama-3.1-8b",phase="decode"}') in text
