"""The `scale` subresource of the pool's workload (Deployment, StatefulSet, LeaderWorkerSet or any
CRD that has one): find its resource name by discovery, read and set `spec.replicas`.

Writes carry the resourceVersion just read, so an autoscaler's write in between wins and ours
fails with a conflict rather than undoing it. Blocking client calls; callers run them in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ..errors import ConfigError
from .annotations import KIND, Target


class ScaleConflict(Exception):
    """The workload changed between our read and our write."""


@dataclass(frozen=True)
class Scale:
    replicas: int
    resource_version: str


class ScaleTarget:
    def __init__(self, api: client.ApiClient, namespace: str, target: Target) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.target = target
        self.plural = ""

    def resolve(self) -> None:
        """Discovery: the resource serving `kind` in its group/version and that it has `scale`.
        ConfigError (naming the annotation) when there is none."""
        group, version = self.target.group_version
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            doc = self._api.call_api(path, "GET", response_type="object", auth_settings=["BearerToken"],
                                     _return_http_data_only=True)
        except ApiException as e:
            if e.status == 404:
                raise ConfigError(f"{KIND}: {self.target.kind!r}: the API server does not serve "
                                  f"{self.target.api_version}") from None
            raise
        names = {r["name"]: r for r in doc.get("resources", [])}
        for name, r in names.items():
            if "/" not in name and r.get("kind") == self.target.kind:
                if f"{name}/scale" not in names:
                    raise ConfigError(f"{KIND}: {self.target.kind!r} ({self.target.api_version}) has no scale "
                                      "subresource")
                if not group:
                    raise ConfigError(f"{KIND}: {self.target.kind!r}: core-group (v1) workloads are not supported; "
                                      "use a Deployment, StatefulSet or a CRD with a scale subresource")
                self.plural = name
                return
        raise ConfigError(f"{KIND}: {self.target.kind!r} is not a kind served by {self.target.api_version}")

    def read(self) -> Scale:
        group, version = self.target.group_version
        s = self._custom.get_namespaced_custom_object_scale(group, version, self.namespace, self.plural,
                                                            self.target.name)
        return Scale(int((s.get("spec") or {}).get("replicas") or 0), s["metadata"]["resourceVersion"])

    def write(self, replicas: int, seen: Scale) -> None:
        """Set replicas if nothing changed since `seen`; ScaleConflict otherwise."""
        group, version = self.target.group_version
        body = {"metadata": {"resourceVersion": seen.resource_version}, "spec": {"replicas": replicas}}
        try:
            self._custom.patch_namespaced_custom_object_scale(group, version, self.namespace, self.plural,
                                                              self.target.name, body)
        except ApiException as e:
            if e.status == 409:
                raise ScaleConflict(str(self.target)) from None
            raise
