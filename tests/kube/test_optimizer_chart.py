"""The chart's optimizer (optimizer.enabled): what it renders, and the controller running with
the chart's ServiceAccount against the real API server — it writes VariantAutoscaling status,
scales the targets, serves wva_desired_replicas, stops on SIGTERM, and may not read
Deployments themselves (only their scale subresource)."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sluicegate.optimizer.kube import VA_GROUP, VA_PLURAL, VA_VERSION
from sluicegate.standalone.ports import find_free_port
from tests.kube.objects import wait_until
from tests.kube.test_chart import BASE, apply, helm, render  # noqa: F401 (helm: a fixture)
from tests.kube.test_optimizer_controller import cluster_inputs  # noqa: F401 (a fixture)

pytestmark = pytest.mark.kube


def _values(ns: str, spec: dict, port: int) -> dict:
    return {**BASE, "-f": {"optimizer": {"enabled": True, "actuate": True, "interval": 1,
                                         "scaleDownWindow": 30, "configMapNamespace": ns,
                                         "metricsPort": port, "config": spec}}}


def test_optimizer_renders_only_when_enabled(helm) -> None:  # noqa: F811
    off = render(helm, "ns", BASE)
    assert not [d for d in off if "optimizer" in d["metadata"]["name"]]
    docs = render(helm, "ns", _values("wva", {"capacity": {"A100": 4}}, 9091))
    mine = {d["kind"]: d for d in docs if d["metadata"]["name"].endswith("pool-optimizer")}
    assert set(mine) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                         "RoleBinding", "ConfigMap", "Deployment", "Service"}
    args = mine["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["optimize", "--kube"] and "--actuate" in args
    assert "--configmap-namespace=wva" in args and "--metrics-port=9091" in args
    assert mine["Role"]["metadata"]["namespace"] == "wva"
    cfg = yaml.safe_load(mine["ConfigMap"]["data"]["optimizer.yaml"])
    assert cfg["kind"] == "OptimizerConfig" and cfg["spec"] == {"capacity": {"A100": 4}}


def test_controller_with_the_charts_service_account(helm, control_plane, cluster_inputs,  # noqa: F811
                                                    tmp_path) -> None:
    kube, extra = cluster_inputs
    port = find_free_port()
    docs = render(helm, kube.ns, _values(kube.ns, extra[0][0]["spec"], port))
    apply(kube.api, [d for d in docs if d["kind"] in (
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")], kube.ns)
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "optimizer" in d["metadata"]["name"])
    cfg = tmp_path / "optimizer.yaml"
    cfg.write_text(cm["data"]["optimizer.yaml"])
    token = kube.core.create_namespaced_service_account_token("pool-optimizer", kube.ns,
                                                              {}).status.token
    kubeconfig = tmp_path / "sa.kubeconfig"
    kubeconfig.write_text(control_plane.apiserver.kubeconfig.read_text().replace(
        control_plane.token, token))
    sa_apps = client.AppsV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    with pytest.raises(ApiException) as denied:
        sa_apps.read_namespaced_deployment("llama-8b-a100", kube.ns)
    assert denied.value.status == 403

    log = tmp_path / "optimizer.log"
    args = next(d for d in docs if d["kind"] == "Deployment" and "optimizer" in
                d["metadata"]["name"])["spec"]["template"]["spec"]["containers"][0]["args"]
    args = [a if not a.startswith("--config=") else f"--config={cfg}" for a in args]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sluicegate", *args,
                                 f"--kubeconfig={kubeconfig}", "-v"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        def status_written() -> bool:
            va = kube.custom.get_namespaced_custom_object_status(
                VA_GROUP, VA_VERSION, kube.ns, VA_PLURAL, "llama-8b-a100")
            return bool(va.get("status", {}).get("actuation", {}).get("applied"))

        try:
            wait_until(status_written, timeout=60, interval=0.2, what="status written by the SA")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{log.read_text()[-3000:]}") from None
        desired = kube.custom.get_namespaced_custom_object_status(
            VA_GROUP, VA_VERSION, kube.ns, VA_PLURAL, "llama-8b-a100"
        )["status"]["desiredOptimizedAlloc"]["numReplicas"]
        assert client.AppsV1Api(kube.api).read_namespaced_deployment(
            "llama-8b-a100", kube.ns).spec.replicas == desired > 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert (f'wva_desired_replicas{{accelerator_type="A100",namespace="{kube.ns}",'
                f'target_kind="Deployment",target_name="llama-8b-a100",'
                f'variant_name="llama-8b-a100"}} {float(desired)}') in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise
    assert code == 0, log.read_text()[-2000:]
    assert "Forbidden" not in log.read_text() and "403" not in log.read_text()


def test_tuning_adds_the_pod_read_rights_and_flags(helm) -> None:  # noqa: F811
    values = _values("wva", {}, 9091)
    values["-f"]["optimizer"].update(actuate=False, tunePort=8000,
                                     eppMetrics=["http://pool-epp:9090/metrics"])
    docs = render(helm, "ns", values)
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]} in role["rules"]
    scale = next(r for r in role["rules"] if "deployments/scale" in r["resources"])
    assert scale["verbs"] == ["get"]  # reads the selector; may not scale without actuate
    args = next(d for d in docs if d["kind"] == "Deployment" and "optimizer" in
                d["metadata"]["name"])["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--tune-port=8000" in args and "--epp-metrics=http://pool-epp:9090/metrics" in args
