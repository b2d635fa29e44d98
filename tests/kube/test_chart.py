"""The Helm chart with the real helm CLI (`make helm-bin`): lint, render, apply the rendered
manifests to the real API server, and run the EPP with the chart's ServiceAccount to show its RBAC
is enough (and no more)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

from sluicegate.scheduling.config import load_config
from tests.kube.cluster import REPO
from tests.kube.epp import FAST_LEASE, KubeEpp, health
from tests.kube.objects import Kube, wait_until

pytestmark = pytest.mark.kube

CHART = REPO / "charts" / "sluicegate"
BASE = {"inferencePool.modelServers.matchLabels.app": "vllm"}
EPP_CONFIG = """apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: max-score-picker
"""


@pytest.fixture(scope="module")
def helm() -> str:
    version = re.search(r"^HELM_VERSION := (\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    subprocess.run(["make", "-s", "helm-bin"], cwd=REPO, check=True, timeout=1800)
    return str(Path.home() / ".cache" / "sluicegate" / f"helm-{version}" / "helm")


def render(helm: str, namespace: str, values: dict[str, str], release: str = "pool") -> list[dict]:
    """`helm template`; "--set" values, and one nested mapping under the key "-f" as a values file."""
    sets = [a for k, v in values.items() if k != "-f" for a in ("--set", f"{k}={v}")]
    files = ["-f", "-"] if "-f" in values else []
    out = subprocess.run([helm, "template", release, str(CHART), "-n", namespace, *sets, *files],
                         input=yaml.safe_dump(values.get("-f") or {}), check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def apply(api: client.ApiClient, docs: list[dict], namespace: str) -> None:
    dyn = dynamic.DynamicClient(api)
    for d in docs:
        dyn.resources.get(api_version=d["apiVersion"], kind=d["kind"]).create(body=d, namespace=namespace)


def test_helm_lint_passes(helm):
    r = subprocess.run([helm, "lint", str(CHART), *[a for k, v in BASE.items() for a in ("--set", f"{k}={v}")]],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_chart_refuses_a_pool_without_model_server_labels(helm):
    r = subprocess.run([helm, "template", "x", str(CHART)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "inferencePool.modelServers.matchLabels" in r.stderr


@pytest.mark.parametrize("values", [
    {},
    {"inferenceExtension.enableLeaderElection": "true", "inferenceExtension.replicas": "2",
     "inferenceExtension.envoy.enabled": "true", "objectives[0].name": "critical", "objectives[0].priority": "10",
     "-f": {"inferenceExtension": {"pluginsCustomConfig": EPP_CONFIG}}},
    {"inferencePool.apiVersion": "inference.networking.x-k8s.io/v1alpha2"},
], ids=["defaults", "ha-envoy-objectives-config", "legacy-pool-group"])
def test_rendered_manifests_are_accepted_by_the_api_server(helm, control_plane, values):
    kube = Kube(control_plane.apiserver.client()).create_namespace()
    docs = render(helm, kube.ns, {**BASE, **values})
    kinds = sorted(d["kind"] for d in docs)
    assert {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "InferencePool"} <= set(kinds)
    apply(kube.api, docs, kube.ns)
    svc = kube.core.read_namespaced_service("pool-epp", kube.ns)
    assert {(p.name, p.port) for p in svc.spec.ports} >= {("grpc-ext-proc", 9002), ("grpc-health", 9003),
                                                           ("http-metrics", 9090)}
    role = next(d for d in docs if d["kind"] == "Role")
    verbs = {v for r in role["rules"] for v in r["verbs"]}
    leases = any("leases" in r["resources"] for r in role["rules"])
    assert leases == (values.get("inferenceExtension.enableLeaderElection") == "true")
    assert verbs <= {"get", "list", "watch", "create", "update"} and ("create" in verbs) == leases
    for cm in (d for d in docs if d["kind"] == "ConfigMap"):
        load_config(text=cm["data"]["epp-config.yaml"])  # the EPP would accept it (ConfigError otherwise)


def test_epp_runs_with_the_charts_service_account_and_nothing_more(helm, control_plane, tmp_path):
    admin = Kube(control_plane.apiserver.client()).create_namespace()
    docs = render(helm, admin.ns, {**BASE, "inferenceExtension.enableLeaderElection": "true"})
    apply(admin.api, docs, admin.ns)
    admin.ready_pod("m-0", {"app": "vllm"}, "10.40.0.1")
    token = admin.core.create_namespaced_service_account_token(
        "pool-epp", admin.ns, {"spec": {"expirationSeconds": 3600}}).status.token
    kubeconfig = tmp_path / "sa.kubeconfig"
    cfg = yaml.safe_load(control_plane.apiserver.kubeconfig.read_text())
    cfg["users"] = [{"name": "admin", "user": {"token": token}}]
    kubeconfig.write_text(yaml.safe_dump(cfg))

    sa_api = Kube(config.new_client_from_config(config_file=str(kubeconfig)), admin.ns)
    with pytest.raises(ApiException) as denied:
        sa_api.core.list_namespaced_secret(admin.ns)
    assert denied.value.status == 403

    epp = KubeEpp(kubeconfig, admin.ns, "--ha-enable-leader-election", *FAST_LEASE).start()
    try:
        wait_until(lambda: health(epp.health_port) == "SERVING", timeout=15, what="leader with SA rights")
        wait_until(lambda: "10.40.0.1:8000" in epp.log_path.read_text(), timeout=10, what="endpoint seen")
        # The API server's refusal as the client reports it ("(403)", "Forbidden"); a bare "403"
        # also matches random port numbers in the log.
        log = epp.log_path.read_text()
        assert "Forbidden" not in log and "(403)" not in log, log
    finally:
        epp.stop()
