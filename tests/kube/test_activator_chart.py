"""The chart with the activator on: the pool carries the activator annotations, the EPP gets
--enable-scale-to-zero, and its ServiceAccount may get/patch the named workload's scale
subresource and nothing else; the EPP running with that account scales from zero."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from sluicegate.sim.config import SimConfig
from sluicegate.standalone.ports import find_free_port

from tests.integration.extproc_client import (
    exchange,
    header_set,
    request_body,
    request_headers,
)
from tests.kube.cluster import REPO
from tests.kube.epp import KubeEpp
from tests.kube.objects import Kube, wait_until
from tests.kube.test_activator import APP, Kubelet, chat
from tests.kube.test_chart import apply, render

pytestmark = pytest.mark.kube

VALUES = {"-f": {
    "inferencePool": {"modelServers": {"matchLabels": APP}},
    "inferenceExtension": {"pluginsCustomConfig": "featureGates: [flowControl]\n"},
    "activator": {"enabled": True, "scaleToZero": True, "scaleFromZeroGracePeriod": "30s",
                  "target": {"name": "model"}},
}}


@pytest.fixture(scope="module")
def helm() -> str:
    version = re.search(r"^HELM_VERSION := (\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    subprocess.run(["make", "-s", "helm-bin"], cwd=REPO, check=True, timeout=1800)
    return str(Path.home() / ".cache" / "sluicegate" / f"helm-{version}" / "helm")


def test_chart_annotates_the_pool_and_grants_only_the_targets_scale(helm):
    docs = render(helm, "ns", VALUES)
    pool = next(d for d in docs if d["kind"] == "InferencePool")
    ann = pool["metadata"]["annotations"]
    assert ann["activator.llm-d.ai/target-name"] == "model" and ann["activator.llm-d.ai/target-kind"] == "Deployment"
    assert ann["activator.llm-d.ai/scale-from-zero-grace-period"] == "30s"
    role = next(d for d in docs if d["kind"] == "Role")
    scale_rules = [r for r in role["rules"] if any("scale" in res for res in r["resources"])]
    assert scale_rules == [{"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["model"],
                            "verbs": ["get", "patch"]}]
    epp = next(d for d in docs if d["kind"] == "Deployment")
    assert "--enable-scale-to-zero" in epp["spec"]["template"]["spec"]["containers"][0]["args"]


def test_activator_off_renders_nothing_of_it(helm):
    docs = render(helm, "ns", {"inferencePool.modelServers.matchLabels.app": "vllm"})
    text = yaml.safe_dump_all(docs)
    assert "activator.llm-d.ai" not in text and "scale" not in text


def test_epp_with_the_charts_service_account_scales_the_pool_from_zero(helm, control_plane, loop_thread, tmp_path):
    admin = Kube(control_plane.apiserver.client()).create_namespace()
    port = find_free_port()
    docs = render(helm, admin.ns, {"-f": {**VALUES["-f"], "inferencePool": {
        "modelServers": {"matchLabels": APP}, "targetPorts": [{"number": port}]}}})
    apply(admin.api, [d for d in docs if d["kind"] in ("ServiceAccount", "Role", "RoleBinding", "InferencePool")],
          admin.ns)
    kubelet = Kubelet(admin, loop_thread, port, SimConfig(name="model-0", speedup=50))
    kubelet.create_deployment(0)
    kubelet.apps.create_namespaced_deployment(admin.ns, {"metadata": {"name": "other"}, "spec": {
        "replicas": 0, "selector": {"matchLabels": {"app": "other"}},
        "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    # The admin kubeconfig with the chart's ServiceAccount token in place of the admin's.
    sa_token = admin.core.create_namespaced_service_account_token("pool-epp", admin.ns, {}).status.token
    kubeconfig = tmp_path / "sa.kubeconfig"
    kubeconfig.write_text(control_plane.apiserver.kubeconfig.read_text().replace(control_plane.token, sa_token))
    sa_apps = client.AppsV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    for forbidden in (lambda: sa_apps.patch_namespaced_deployment_scale("other", admin.ns, {"spec": {"replicas": 1}}),
                      lambda: sa_apps.read_namespaced_deployment("model", admin.ns)):
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403

    kubelet.start()
    epp = KubeEpp(kubeconfig, admin.ns, "--config-text", "featureGates: [flowControl]\n", pool="pool")
    try:
        epp.start()
        answers: list = []
        body = json.dumps(chat()).encode()
        t = threading.Thread(target=lambda: answers.extend(exchange(epp.port, [
            request_headers("/v1/chat/completions"), request_body(body, True)], timeout=30)))
        t.start()
        wait_until(lambda: kubelet.replicas() == 1, timeout=15, what="scaled 0 → 1 with the chart's rights")
        t.join(30)
        first = answers[0]
        assert first.WhichOneof("response") == "request_headers", first
        assert header_set(first.request_headers.response)["x-gateway-destination-endpoint"] == f"127.0.0.1:{port}"
        assert " 403" not in epp.log_path.read_text() and "Forbidden" not in epp.log_path.read_text()
    finally:
        epp.stop()
        kubelet.stop()
