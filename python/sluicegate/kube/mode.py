"""What the EPP process does differently in Kubernetes mode: endpoints, objectives and rewrites from
the API server (the last two replace the Rust Router's tables whole), and, with HA on, health
SERVING only on the Lease holder.

Followers keep their caches warm (the watchers run on every replica), so a new leader routes at
once. On shutdown the replica reports NOT_SERVING and gives the lease up before it drains.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable

from ..datalayer.discovery import Endpoint
from .leader import LeaderElector
from .policies import RewriteTable
from .watcher import KubeOptions, PoolWatcher, api_client

log = logging.getLogger(__name__)

SYNC_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LeaseOptions:
    """--ha-enable-leader-election; the timings are client-go's defaults."""

    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    lease_name: str | None = None  # default: derived from the pool


class KubeMode:
    def __init__(self, opts: KubeOptions, lease: LeaseOptions | None, router,
                 on_endpoints: Callable[[list[Endpoint]], None], spec_hostnames: bool = False) -> None:
        api = api_client(opts.kubeconfig)
        self.opts = opts
        self.router = router
        self.priorities: dict[str, int] = {}
        self._objective_listeners: list[Callable[[dict[str, int]], None]] = []
        self.watcher = PoolWatcher(opts, api, on_endpoints, self._set_objectives, self._set_rewrites,
                                   spec_hostnames=spec_hostnames)
        self.elector: LeaderElector | None = None
        if lease is not None:
            from kubernetes.client import CoordinationV1Api

            pool = opts.pool_name or "selector"
            name = lease.lease_name or f"epp-{opts.namespace}-{pool}.sluicegate"[:253]
            identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
            self.elector = LeaderElector(CoordinationV1Api(api), opts.namespace, name, identity, self._leader_changed,
                                         lease.lease_duration_s, lease.renew_deadline_s, lease.retry_period_s)
        self._set_serving: Callable[[bool], Awaitable[None]] | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()

    # objectives: listeners (beyond the Router) get name → priority on every change

    def on_objectives(self, listener: Callable[[dict[str, int]], None]) -> None:
        self._objective_listeners.append(listener)
        listener(dict(self.priorities))

    def priority_of(self, objective: str) -> int:
        return self.priorities.get(objective, 0)

    def _set_objectives(self, priorities: dict[str, int]) -> None:
        self.priorities = priorities
        self.router.set_objectives(priorities)
        log.info("objectives: %s", ", ".join(f"{k}={v}" for k, v in sorted(priorities.items())) or "none")
        for listener in self._objective_listeners:
            listener(dict(priorities))

    def _set_rewrites(self, table: RewriteTable) -> None:
        self.router.set_rewrites(table.to_json())
        log.info("model rewrites: %d exact, match-all %s", len(table.exact), "on" if table.match_all else "off")

    # lifecycle

    async def start(self, set_serving: Callable[[bool], Awaitable[None]]) -> None:
        """Watchers first (and wait, bounded, for the first lists), then serving or campaigning."""
        self._set_serving = set_serving
        if not await self.watcher.wait_synced(SYNC_TIMEOUT_S):
            log.warning("Kubernetes caches not synced after %.0f s; serving with what is known", SYNC_TIMEOUT_S)
        if self.elector is None:
            await set_serving(True)
        else:
            self.elector.start()

    async def stop_serving(self) -> None:
        """NOT_SERVING first, then release the lease so a follower takes over at once."""
        self._stopping = True
        if self._set_serving is not None:
            await self._set_serving(False)
        if self.elector is not None:
            await self.elector.stop(release=True)
        for t in list(self._tasks):
            await asyncio.gather(t, return_exceptions=True)

    def _leader_changed(self, leader: bool) -> None:
        if self._set_serving is None:
            return
        task = asyncio.get_running_loop().create_task(self._set_serving(leader and not self._stopping))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
