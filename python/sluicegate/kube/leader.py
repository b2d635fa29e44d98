"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

The holder renews every `retry_period`; a candidate takes the lease once the record has not
changed for `lease_duration` (measured on its own clock, so clock skew between replicas does not
matter) or once the holder released it (empty holderIdentity). Updates carry the resourceVersion
read, so two candidates cannot both win: the loser gets 409 Conflict.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import urllib3
from kubernetes.client import CoordinationV1Api
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api: CoordinationV1Api, namespace: str, name: str, identity: str,
                 on_change: Callable[[bool], None], lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")
        self.namespace, self.name, self.identity = namespace, name, identity
        self._api = api
        self._on_change = on_change
        self._duration, self._deadline, self._retry = lease_duration, renew_deadline, retry_period
        self._leader = False
        self._last_renew = 0.0
        self._observed: tuple[str | None, str | None] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def is_leader(self) -> bool:
        return self._leader

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    async def stop(self, release: bool = True) -> None:
        """Stop campaigning; the leader gives the lease up so a follower takes over at once."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self._retry + 15)
            self._thread = None
        if release and self._leader:
            await asyncio.to_thread(self._release)
        self._set_leader(False)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                renewed = self._try_acquire_or_renew()
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                log.warning("lease %s/%s: %s", self.namespace, self.name, getattr(e, "reason", None) or e)
                renewed = False
            now = time.monotonic()
            if renewed:
                self._last_renew = now
                self._set_leader(True)
            elif self._leader and now - self._last_renew > self._deadline:
                log.warning("lease %s/%s: not renewed within %.0f s; stepping down", self.namespace, self.name,
                            self._deadline)
                self._set_leader(False)
            self._stop.wait(self._retry)

    def _set_leader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        log.warning("lease %s/%s: %s %s", self.namespace, self.name, self.identity,
                    "is the leader" if leader else "is a follower")
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._on_change, leader)
            except RuntimeError:  # loop closed during shutdown
                pass

    def _read(self) -> dict | None:
        try:
            resp = self._api.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                   _request_timeout=5)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def _try_acquire_or_renew(self) -> bool:
        lease = self._read()
        now = _now()
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(acquire_time=now, renew_time=now, transitions=0)}
            return self._write(lambda: self._api.create_namespaced_lease(self.namespace, body, _request_timeout=5))
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        record = (holder, spec.get("renewTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        duration = spec.get("leaseDurationSeconds") or self._duration
        if holder not in (None, self.identity) and time.monotonic() - self._observed_at < duration:
            return False  # someone else holds a live lease
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            new_spec = {**spec, "renewTime": now, "leaseDurationSeconds": int(self._duration)}
        else:
            new_spec = self._spec(acquire_time=now, renew_time=now, transitions=transitions + 1)
        body = {**lease, "spec": new_spec}
        return self._write(lambda: self._api.replace_namespaced_lease(self.name, self.namespace, body,
                                                                      _request_timeout=5))

    def _spec(self, acquire_time: str, renew_time: str, transitions: int) -> dict:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": int(self._duration),
                "acquireTime": acquire_time, "renewTime": renew_time, "leaseTransitions": transitions}

    def _write(self, call: Callable[[], object]) -> bool:
        try:
            call()
        except ApiException as e:
            if e.status in (409, 422):  # another candidate wrote first
                return False
            raise
        return True

    def _release(self) -> None:
        try:
            lease = self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _now()}
            self._api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=5)
            log.warning("lease %s/%s: released by %s", self.namespace, self.name, self.identity)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            log.warning("lease %s/%s: release failed: %s", self.namespace, self.name, e)
