"""What the tests write to the API server: CRDs from the chart, namespaces, InferencePools,
objectives, rewrites, and Pods whose status the test sets as a kubelet would."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness import wait_until  # noqa: F401 (the kube tests import it from here)

V1 = ("inference.networking.k8s.io", "v1")
LEGACY = ("inference.networking.x-k8s.io", "v1alpha2")
LLMD = ("llm-d.ai", "v1alpha2")


def install_crds(api: client.ApiClient, crd_dir: Path, timeout: float = 60.0) -> list[str]:
    ext = client.ApiextensionsV1Api(api)
    names = []
    for f in sorted(crd_dir.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        names.append(doc["metadata"]["name"])
        try:
            ext.create_custom_resource_definition(doc)
        except ApiException as e:
            if e.status != 409:
                raise
    for name in names:
        wait_crd_established(ext, name, timeout)
    return names


def wait_crd_established(ext: client.ApiextensionsV1Api, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(name)
        if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
            return
        time.sleep(0.1)  # poll interval of this bounded wait
    raise TimeoutError(f"CRD {name} not Established after {timeout} s")


class Kube:
    """Typed shortcuts over one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str | None = None) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.ns = namespace or f"t-{uuid.uuid4().hex[:8]}"

    def create_namespace(self) -> "Kube":
        self.core.create_namespace({"metadata": {"name": self.ns}})
        return self

    # InferencePool

    def create_pool(self, name: str, selector: dict[str, str], ports: list[int], group=V1) -> dict:
        if group == V1:
            spec = {"selector": {"matchLabels": selector}, "targetPorts": [{"number": p} for p in ports],
                    "endpointPickerRef": {"name": f"{name}-epp", "port": {"number": 9002}}}
        else:
            spec = {"selector": selector, "targetPortNumber": ports[0], "extensionRef": {"name": f"{name}-epp"}}
        return self.custom.create_namespaced_custom_object(*group, self.ns, "inferencepools",
                                                           {"apiVersion": "/".join(group), "kind": "InferencePool",
                                                            "metadata": {"name": name}, "spec": spec})

    def patch_pool(self, name: str, spec: dict, group=V1) -> None:
        self.custom.patch_namespaced_custom_object(*group, self.ns, "inferencepools", name, {"spec": spec})

    def delete_pool(self, name: str, group=V1) -> None:
        self.custom.delete_namespaced_custom_object(*group, self.ns, "inferencepools", name)

    # policies

    def create_objective(self, name: str, pool: str, priority: int | None, group=LLMD) -> None:
        spec: dict = {"poolRef": {"name": pool}}
        if priority is not None:
            spec["priority"] = priority
        self.custom.create_namespaced_custom_object(*group, self.ns, "inferenceobjectives", {
            "apiVersion": "/".join(group), "kind": "InferenceObjective", "metadata": {"name": name}, "spec": spec})

    def patch_objective(self, name: str, priority: int, group=LLMD) -> None:
        self.custom.patch_namespaced_custom_object(*group, self.ns, "inferenceobjectives", name,
                                                   {"spec": {"priority": priority}})

    def delete_objective(self, name: str, group=LLMD) -> None:
        self.custom.delete_namespaced_custom_object(*group, self.ns, "inferenceobjectives", name)

    def create_rewrite(self, name: str, pool: str, rules: list[dict], group=LLMD) -> None:
        self.custom.create_namespaced_custom_object(*group, self.ns, "inferencemodelrewrites", {
            "apiVersion": "/".join(group), "kind": "InferenceModelRewrite", "metadata": {"name": name},
            "spec": {"poolRef": {"name": pool}, "rules": rules}})

    def delete_rewrite(self, name: str, group=LLMD) -> None:
        self.custom.delete_namespaced_custom_object(*group, self.ns, "inferencemodelrewrites", name)

    # Pods, with the test as their kubelet

    def create_pod(self, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None,
                   hostname: str | None = None) -> None:
        # Bound to a node, so deletion is graceful (deletionTimestamp set, object kept) as with a kubelet.
        spec: dict = {"nodeName": "test-node", "containers": [{"name": "model-server", "image": "sluicegate/sim"}]}
        if hostname is not None:
            spec["hostname"] = hostname
        self.core.create_namespaced_pod(self.ns, {
            "metadata": {"name": name, "labels": labels, "annotations": annotations or {}}, "spec": spec})

    def set_pod_status(self, name: str, ip: str | None, ready: bool, host_ip: str | None = None) -> None:
        status: dict = {"phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
        if ip:
            status["podIP"], status["podIPs"] = ip, [{"ip": ip}]
        if host_ip:  # the node's address, as the kubelet reports it
            status["hostIP"], status["hostIPs"] = host_ip, [{"ip": host_ip}]
        self.core.patch_namespaced_pod_status(name, self.ns, {"status": status})

    def ready_pod(self, name: str, labels: dict[str, str], ip: str, annotations: dict[str, str] | None = None,
                  hostname: str | None = None, host_ip: str | None = None) -> None:
        self.create_pod(name, labels, annotations, hostname)
        self.set_pod_status(name, ip, ready=True, host_ip=host_ip)

    def annotate_pod(self, name: str, annotations: dict[str, str | None]) -> None:
        self.core.patch_namespaced_pod(name, self.ns, {"metadata": {"annotations": annotations}})

    def relabel_pod(self, name: str, labels: dict[str, str | None]) -> None:
        self.core.patch_namespaced_pod(name, self.ns, {"metadata": {"labels": labels}})

    def start_deleting_pod(self, name: str) -> None:
        self.core.delete_namespaced_pod(name, self.ns, grace_period_seconds=30)

    def delete_pod_now(self, name: str) -> None:
        self.core.delete_namespaced_pod(name, self.ns, grace_period_seconds=0)
