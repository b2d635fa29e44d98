"""The optimizer against a Kubernetes API server: reads the VariantAutoscalings (all
namespaces) and the autoscaler's ConfigMaps, sets replicas through the `scale` subresource
of each variant's scale target, and writes each VariantAutoscaling's status. The client is
the synchronous `kubernetes` one, run off the event loop (a solve per interval, not per request)."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .actuation import Decision, status_patch
from .config import (ACCELERATOR_COSTS_CONFIGMAP, SCALE_TO_ZERO_CONFIGMAPS,
                     SERVICE_CLASSES_CONFIGMAP)
from .inputs import ScaleTarget

VA_GROUP, VA_VERSION, VA_PLURAL = "llmd.ai", "v1alpha1", "variantautoscalings"
_CONFIGMAPS = (SERVICE_CLASSES_CONFIGMAP, ACCELERATOR_COSTS_CONFIGMAP) + SCALE_TO_ZERO_CONFIGMAPS


def read_documents(api: client.ApiClient, configmap_namespace: str
                   ) -> list[tuple[dict[str, Any], str]]:
    """The cluster's inputs as (document, source) pairs for `config.parse_sourced`."""
    core = client.CoreV1Api(api)
    docs: list[tuple[dict[str, Any], str]] = []
    for name in _CONFIGMAPS:
        try:
            cm = core.read_namespaced_config_map(name, configmap_namespace)
        except ApiException as e:
            if e.status == 404:
                continue
            raise
        docs.append(({"kind": "ConfigMap", "metadata": {"name": name}, "data": cm.data or {}},
                     f"ConfigMap {configmap_namespace}/{name}"))
    listed = client.CustomObjectsApi(api).list_cluster_custom_object(VA_GROUP, VA_VERSION,
                                                                     VA_PLURAL)
    docs += [(va, f"namespace {va.get('metadata', {}).get('namespace')}")
             for va in listed.get("items", [])]
    return docs


class KubeScaler:
    """`actuation.Scaler` over the scale subresource: Deployments and StatefulSets through
    apps/v1, any other kind (e.g. a LeaderWorkerSet) through its CRD's scale subresource."""

    def __init__(self, api: client.ApiClient) -> None:
        self._apps = client.AppsV1Api(api)
        self._custom = client.CustomObjectsApi(api)

    async def get_replicas(self, target: ScaleTarget, namespace: str) -> int | None:
        try:
            scale = await asyncio.to_thread(self._read, target, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        spec = scale.get("spec") if isinstance(scale, dict) else scale.spec
        replicas = spec.get("replicas") if isinstance(spec, dict) else spec.replicas
        return int(replicas or 0)

    async def set_replicas(self, target: ScaleTarget, namespace: str, replicas: int) -> None:
        await asyncio.to_thread(self._patch, target, namespace, {"spec": {"replicas": replicas}})

    def _read(self, t: ScaleTarget, ns: str) -> Any:
        if t.kind == "Deployment":
            return self._apps.read_namespaced_deployment_scale(t.name, ns)
        if t.kind == "StatefulSet":
            return self._apps.read_namespaced_stateful_set_scale(t.name, ns)
        group, version, plural = _custom(t)
        return self._custom.get_namespaced_custom_object_scale(group, version, ns, plural,
                                                               t.name)

    def _patch(self, t: ScaleTarget, ns: str, body: dict) -> Any:
        if t.kind == "Deployment":
            return self._apps.patch_namespaced_deployment_scale(t.name, ns, body)
        if t.kind == "StatefulSet":
            return self._apps.patch_namespaced_stateful_set_scale(t.name, ns, body)
        group, version, plural = _custom(t)
        return self._custom.patch_namespaced_custom_object_scale(group, version, ns, plural,
                                                                 t.name, body)


def model_server_urls(api: client.ApiClient, target: ScaleTarget, namespace: str,
                      port: int) -> list[str]:
    """/metrics of the target's ready pods, found through the scale subresource's selector
    (so no read right on the workload itself is needed)."""
    scaler = KubeScaler(api)
    try:
        scale = scaler._read(target, namespace)
    except ApiException as e:
        if e.status == 404:
            return []
        raise
    status = scale.get("status", {}) if isinstance(scale, dict) else scale.status.to_dict()
    selector = status.get("selector") or ""
    if not selector:
        return []
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    return [f"http://{p.status.pod_ip}:{port}/metrics" for p in pods
            if p.status and p.status.pod_ip and p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True"
                    for c in (p.status.conditions or []))]


def _custom(t: ScaleTarget) -> tuple[str, str, str]:
    group, _, version = t.api_version.rpartition("/")
    return group, version, t.kind.lower() + "s"


async def write_status(api: client.ApiClient, d: Decision, current_replicas: int | None,
                       actuated: bool = True) -> None:
    """Status of `d`: applied when actuating and its target now has the desired replicas."""
    body = status_patch(d, applied=actuated and current_replicas == d.desired_replicas,
                        current_replicas=current_replicas)
    await asyncio.to_thread(
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status, VA_GROUP,
        VA_VERSION, d.variant.namespace, VA_PLURAL, d.variant.name, body)
