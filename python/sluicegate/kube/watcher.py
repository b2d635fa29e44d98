"""Kubernetes mode: the pool's endpoints, objectives and rewrites, kept current from the API.

`PoolWatcher` runs one informer per resource and, on every change, recomputes what changed and
hands it to the EPP through callbacks: endpoints (the same `list[Endpoint]` file discovery
produces, from Pods, EndpointSlices and ExternalName Services), objective priorities
(name → priority), the model-rewrite table and the pool's models (for the allow-list).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

from kubernetes import client, config

from ..datalayer.discovery import Endpoint
from ..errors import ConfigError
from .informer import Informer, Resource
from .policies import RewriteTable, objective_priorities, rewrite_table
from .pool import (LEGACY_GROUP, V1_GROUP, PoolModels, PoolSpec, parse_ports, parse_selector, pool_endpoints,
                   pool_models, pool_spec)

log = logging.getLogger(__name__)

POLICY_GROUPS = (("llm-d.ai", "v1alpha2"), (LEGACY_GROUP, "v1alpha2"))  # first wins on a name clash
POOL_VERSIONS = {V1_GROUP: "v1", LEGACY_GROUP: "v1alpha2"}


@dataclass(frozen=True)
class KubeOptions:
    pool_name: str | None = None
    pool_namespace: str | None = None  # default: $NAMESPACE, then "default"
    pool_group: str = V1_GROUP
    kubeconfig: str | None = None
    endpoint_selector: str | None = None
    endpoint_target_ports: str | None = None

    @property
    def namespace(self) -> str:
        return self.pool_namespace or os.environ.get("NAMESPACE") or "default"

    def check(self) -> None:
        if bool(self.pool_name) == bool(self.endpoint_selector):
            raise ConfigError("give exactly one of --pool-name and --endpoint-selector")
        if self.endpoint_selector and not self.endpoint_target_ports:
            raise ConfigError("--endpoint-selector needs --endpoint-target-ports")
        if self.pool_group not in POOL_VERSIONS:
            raise ConfigError(f"--pool-group: {self.pool_group!r} is not one of {', '.join(POOL_VERSIONS)}")


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """--kubeconfig, else in-cluster (service account), else $KUBECONFIG / ~/.kube/config."""
    try:
        if kubeconfig:
            return config.new_client_from_config(config_file=kubeconfig)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg)
        return config.new_client_from_config()
    except (config.ConfigException, OSError) as e:
        raise ConfigError(f"--kubeconfig: cannot load Kubernetes credentials: {e}") from None


class PoolWatcher:
    def __init__(self, opts: KubeOptions, api: client.ApiClient, on_endpoints: Callable[[list[Endpoint]], None],
                 on_objectives: Callable[[dict[str, int]], None] | None = None,
                 on_rewrites: Callable[[RewriteTable], None] | None = None, spec_hostnames: bool = False) -> None:
        opts.check()
        self.opts = opts
        # A topology-extractor reads each Pod's spec.hostname (upstream's Pod k8s-notification-source):
        # taken from the Pod watch below, in the same objects that make the endpoints.
        self.spec_hostnames = spec_hostnames
        self._on_endpoints = on_endpoints
        self._on_objectives = on_objectives
        self._on_rewrites = on_rewrites
        self._endpoints: list[Endpoint] | None = None
        self._objectives: dict[str, int] | None = None
        # The pool's models (allow-list); set by the EPP when it wants them, called on every change.
        self.on_models: Callable[[PoolModels], None] | None = None
        self._models: PoolModels | None = None
        self._off_logged: set[str] = set()
        self.last_change_at = 0.0  # time.monotonic() of the last endpoint change handed on
        ns = opts.namespace
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        self._fixed: PoolSpec | None = None
        self.pool: Informer | None = None
        if opts.pool_name:
            version = POOL_VERSIONS[opts.pool_group]
            self.pool = Informer(Resource("InferencePool", _custom(custom, opts.pool_group, version, ns, "inferencepools"),
                                          {"field_selector": f"metadata.name={opts.pool_name}"}),
                                 self._endpoints_changed, lambda: self._feature_off("InferencePool", [self.pool]))
            pods = Resource("Pod", core.list_namespaced_pod, {"namespace": ns})
        else:
            self._fixed = PoolSpec(selector=parse_selector(opts.endpoint_selector or ""),
                                   target_ports=parse_ports(opts.endpoint_target_ports or ""))
            pods = Resource("Pod", core.list_namespaced_pod,
                            {"namespace": ns, "label_selector": opts.endpoint_selector})
        self.pods = Informer(pods, self._endpoints_changed)
        # Non-Pod members (EndpointSlices of Services, ExternalName Services): optional, so a
        # deployment whose RBAC does not grant them still becomes ready, with Pods only.
        narrow = {"label_selector": opts.endpoint_selector} if opts.endpoint_selector else {}
        self.slices = Informer(Resource("EndpointSlice", client.DiscoveryV1Api(api).list_namespaced_endpoint_slice,
                                        {"namespace": ns, **narrow}), self._endpoints_changed, optional=True)
        self.services = Informer(Resource("Service", core.list_namespaced_service, {"namespace": ns, **narrow}),
                                 self._endpoints_changed, optional=True)
        self.objectives: list[Informer] = []
        self.rewrites: list[Informer] = []
        if opts.pool_name:
            for group, version in POLICY_GROUPS:
                self.objectives.append(Informer(
                    Resource(f"InferenceObjective.{group}", _custom(custom, group, version, ns, "inferenceobjectives")),
                    self._objectives_changed, lambda: self._feature_off("InferenceObjective", self.objectives)))
                self.rewrites.append(Informer(
                    Resource(f"InferenceModelRewrite.{group}",
                             _custom(custom, group, version, ns, "inferencemodelrewrites")),
                    self._rewrites_changed, lambda: self._feature_off("InferenceModelRewrite", self.rewrites)))

    @property
    def informers(self) -> list[Informer]:
        return [i for i in (self.pool, self.pods, self.slices, self.services, *self.objectives, *self.rewrites)
                if i is not None]

    def start(self) -> None:
        for inf in self.informers:
            inf.start()

    async def stop(self) -> None:
        for inf in self.informers:
            await inf.stop()

    async def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for inf in self.informers:
            if not await inf.wait_synced(max(0.0, deadline - time.monotonic())):
                return False
        return True

    # recomputation, on the event loop

    def _spec(self) -> PoolSpec | None:
        if self._fixed is not None:
            return self._fixed
        assert self.pool is not None
        objs = self.pool.objects()
        if not objs:
            return None
        try:
            return pool_spec(objs[0])
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            log.error("InferencePool %s/%s is unusable (%s); no endpoints", self.opts.namespace, self.opts.pool_name, e)
            return None

    def _models_changed(self) -> None:
        if self.on_models is None or self.pool is None:
            return
        pools = self.pool.objects()
        models = pool_models(pools[0] if pools else None, [o for inf in self.rewrites for o in inf.objects()],
                             self.opts.pool_name or "")
        if models != self._models:
            self._models = models
            self.on_models(models)

    def _endpoints_changed(self) -> None:
        self._models_changed()
        endpoints = pool_endpoints(self._spec(), self.pods.objects(), self.slices.objects(), self.services.objects(),
                                   spec_hostnames=self.spec_hostnames)
        if endpoints == self._endpoints:
            return
        self._endpoints = endpoints
        self.last_change_at = time.monotonic()
        self._on_endpoints(endpoints)

    def _objectives_changed(self) -> None:
        objs = [o for inf in self.objectives for o in inf.objects()]
        priorities = objective_priorities(objs, self.opts.pool_name or "")
        if priorities == self._objectives:
            return
        self._objectives = priorities
        if self._on_objectives is not None:
            self._on_objectives(priorities)

    def _rewrites_changed(self) -> None:
        objs = [o for inf in self.rewrites for o in inf.objects()]
        self._models_changed()
        if self._on_rewrites is not None:
            self._on_rewrites(rewrite_table(objs, self.opts.pool_name or ""))

    def _feature_off(self, kind: str, informers: list) -> None:
        # Called from an informer thread; one line per feature, the first time every group is missing.
        if kind not in self._off_logged and all(i is not None and i.missing for i in informers):
            self._off_logged.add(kind)
            log.warning("%s: no CRD for it on the API server; that feature is off", kind)


def _custom(api: client.CustomObjectsApi, group: str, version: str, namespace: str, plural: str):
    def call(**kwargs):
        return api.list_namespaced_custom_object(group, version, namespace, plural, **kwargs)
    return call
