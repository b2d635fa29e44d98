"""Kubernetes mode: the activator settings come from the InferencePool's annotations and the
pool is scaled through its workload's `scale` subresource.

Annotations are re-read on every activator tick from the pool informer's cache; a change is
parsed and the target resolved once. Unusable settings are logged once per distinct value and
leave the pool unmanaged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ..errors import ConfigError
from .activator import Managed
from .annotations import PREFIX, parse_annotations
from .scale import ScaleConflict, ScaleTarget

log = logging.getLogger(__name__)

RETRY_S = 5.0  # after the API server failed discovery


class KubeActuator:
    def __init__(self, target: ScaleTarget) -> None:
        self.target = target

    async def scale_up(self) -> bool:
        return await asyncio.to_thread(self._edge, 0, 1)

    async def scale_down(self) -> bool:
        return await asyncio.to_thread(self._edge, 1, 0)

    def _edge(self, frm: int, to: int) -> bool:
        seen = self.target.read()
        if seen.replicas != frm:
            return False  # someone else's decision (an autoscaler above 1, or already there)
        try:
            self.target.write(to, seen)
        except ScaleConflict:
            log.info("activator: %s changed while scaling %d → %d; left as it is", self.target.target, frm, to)
            return False
        return True


class PoolAnnotations:
    """`Source` for Kubernetes mode; `pool_object()` gives the InferencePool dict or None."""

    def __init__(self, api: client.ApiClient, namespace: str, pool: str,
                 pool_object: Callable[[], dict | None]) -> None:
        self._api = api
        self.namespace = namespace
        self.pool = pool
        self._pool_object = pool_object
        self._seen: dict[str, str] | None = None
        self._managed: Managed | None = None
        self._retry_at = 0.0
        self._reported: set[str] = set()

    async def current(self) -> Managed | None:
        obj = self._pool_object()
        annotations = dict(((obj or {}).get("metadata") or {}).get("annotations") or {})
        if annotations == self._seen and time.monotonic() >= self._retry_at > 0:
            self._seen = None  # discovery failed earlier: try again
        if annotations != self._seen:
            self._seen = annotations
            self._retry_at = 0.0
            self._managed = await self._resolve(annotations)
        return self._managed

    async def _resolve(self, annotations: dict[str, str]) -> Managed | None:
        try:
            spec = parse_annotations(annotations)
            if spec is None:
                return None
            target = ScaleTarget(self._api, self.namespace, spec.target)
            await asyncio.to_thread(target.resolve)
        except ConfigError as e:
            self._report(str(e))
            return None
        except (ApiException, OSError) as e:
            self._retry_at = time.monotonic() + RETRY_S
            self._report(f"cannot look up the scale target: {e}", level=logging.WARNING)
            return None
        log.info("activator: InferencePool %s/%s scales %s (grace %g s, scale-down delay %g s)", self.namespace,
                 self.pool, spec.target, spec.grace_s, spec.scale_down_delay_s)
        return Managed(spec.grace_s, spec.scale_down_delay_s, KubeActuator(target), str(spec.target))

    def _report(self, problem: str, level: int = logging.ERROR) -> None:
        if problem not in self._reported:
            self._reported.add(problem)
            log.log(level, "activator: InferencePool %s/%s: %s; the pool is served without an activator",
                    self.namespace, self.pool, problem)


def kube_activator(kube, flow, router, *, scale_to_zero: bool):
    """The activator of Kubernetes mode's InferencePool (`kube` is the EPP's KubeMode)."""
    from ..kube.watcher import api_client
    from .activator import Activator, servers_busy

    watcher = kube.watcher
    ns, pool = watcher.opts.namespace, watcher.opts.pool_name
    source = PoolAnnotations(api_client(watcher.opts.kubeconfig), ns, pool,
                             lambda: next(iter(watcher.pool.objects()), None))
    return Activator(pool, flow, source, scale_to_zero=scale_to_zero,
                     is_leader=lambda: kube.elector is None or kube.elector.is_leader,
                     servers_busy=servers_busy(router))


def warn_if_annotated_without_flow_control(kube) -> None:
    """The pool asks for an activator but flow control is off: say so once rather than ignore it."""
    pool = kube.watcher.pool
    obj = next(iter(pool.objects()), None) if pool is not None else None
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    if any(k.startswith(PREFIX) for k in annotations):
        log.warning("activator: InferencePool %s/%s has activator.llm-d.ai annotations, but flow control is off; "
                    "add featureGates: [flowControl] to the EPP config for scale from/to zero",
                    kube.watcher.opts.namespace, kube.watcher.opts.pool_name)
