"""One informer per watched resource: list, then watch from the list's resourceVersion, keep a
cache of the objects (plain dicts) and call `on_change` on the event loop when the cache changes.

The official client is blocking, so each informer owns one thread; the thread only talks to the
API server and hands the loop a coalesced "changed" signal. Broken watches reconnect from the last
seen resourceVersion with capped exponential backoff; 410 Gone (history compacted) relists.
A 404 on the list means the resource type is not served (CRD not installed): `on_missing` is
called once and the informer keeps checking at the backoff cap, so installing the CRD later works.
An `optional` informer treats 403 (RBAC does not grant it) the same way: that feature is off,
the EPP still becomes ready.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import urllib3
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

# A watch request returns after this long even when nothing happened; it is re-opened at once.
WATCH_TIMEOUT_S = 240
BACKOFF_START_S = 0.2
BACKOFF_CAP_S = 10.0


class Gone(Exception):
    """The watch's resourceVersion is older than the server keeps: relist."""


@dataclass
class InformerStats:
    lists: int = 0
    watches: int = 0
    events: int = 0
    gone: int = 0  # 410 relists
    errors: int = 0


@dataclass
class Resource:
    """How to list/watch one kind: `call(**kwargs)` is a client method returning the raw response
    (`_preload_content=False`), e.g. CoreV1Api.list_namespaced_pod bound to a namespace."""

    kind: str
    call: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


def object_key(obj: dict) -> str:
    md = obj.get("metadata") or {}
    return f"{md.get('namespace', '')}/{md.get('name', '')}"


class Informer:
    def __init__(self, resource: Resource, on_change: Callable[[], None],
                 on_missing: Callable[[], None] | None = None, optional: bool = False) -> None:
        self.resource = resource
        self.optional = optional
        self.stats = InformerStats()
        self._on_change = on_change
        self._on_missing = on_missing
        self._objects: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._rv: str | None = None
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._missing_logged = False
        self._response: urllib3.BaseHTTPResponse | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False
        self._thread: threading.Thread | None = None

    # lifecycle (called on the event loop)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.resource.kind}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        self._close_response()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None

    async def wait_synced(self, timeout: float) -> bool:
        """True once the first list arrived (or the resource was found missing)."""
        return await asyncio.to_thread(self._synced.wait, timeout)

    @property
    def missing(self) -> bool:
        return self._missing_logged

    def objects(self) -> list[dict]:
        with self._lock:
            return list(self._objects.values())

    # the informer thread

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        while not self._stop.is_set():
            try:
                if self._rv is None:
                    self._list()
                events_before, started = self.stats.events, time.monotonic()
                self._watch()
                if self.stats.events == events_before and time.monotonic() - started < 1.0:
                    # Closed at once with nothing in it: do not spin on a server that does this.
                    self._sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_CAP_S)
                else:
                    backoff = BACKOFF_START_S
            except Gone:
                self.stats.gone += 1
                log.info("%s: watch history expired (410), relisting", self.resource.kind)
                self._rv = None
            except ApiException as e:
                if self._rv is None and (e.status == 404 or (e.status == 403 and self.optional)):
                    self._mark_missing(e.status)
                    backoff = BACKOFF_CAP_S
                elif e.status == 410:
                    self.stats.gone += 1
                    self._rv = None
                    continue
                else:
                    self._error(f"API error {e.status} {e.reason}")
                self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                if self._stop.is_set():
                    break
                self._error(f"{type(e).__name__}: {e}")
                self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds * random.uniform(0.8, 1.2))

    def _error(self, what: str) -> None:
        self.stats.errors += 1
        log.warning("%s: watch failed (%s); reconnecting", self.resource.kind, what)

    def _mark_missing(self, status: int = 404) -> None:
        if not self._missing_logged:
            self._missing_logged = True
            why = "not served by the API server (CRD not installed)" if status == 404 else "listing is forbidden (RBAC)"
            log.info("%s: %s", self.resource.kind, why)
            if self._on_missing is not None:
                self._on_missing()
        if self._objects:
            self._replace({})
        self._synced.set()

    def _list(self) -> None:
        resp = self.resource.call(**self.resource.kwargs, _preload_content=False, _request_timeout=30)
        doc = json.loads(resp.data)
        self.stats.lists += 1
        if self._missing_logged:
            self._missing_logged = False
            log.warning("%s: now served by the API server", self.resource.kind)
        self._rv = doc["metadata"]["resourceVersion"]
        self._replace({object_key(o): o for o in doc.get("items") or []})
        self._synced.set()

    def _watch(self) -> None:
        resp = self.resource.call(
            **self.resource.kwargs, watch=True, resource_version=self._rv, allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_S, _preload_content=False, _request_timeout=(10, WATCH_TIMEOUT_S + 30),
        )
        self._response = resp
        self.stats.watches += 1
        try:
            if self._stop.is_set():
                return
            for line in _lines(resp):
                self._event(json.loads(line))
                if self._stop.is_set():
                    return
        finally:
            self._response = None
            resp.release_conn()

    def _event(self, ev: dict) -> None:
        kind, obj = ev.get("type"), ev.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ValueError(f"watch error event: {obj.get('message')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self._rv = rv
        if kind == "BOOKMARK":
            return
        self.stats.events += 1
        key = object_key(obj)
        with self._lock:
            if kind == "DELETED":
                self._objects.pop(key, None)
            else:
                self._objects[key] = obj
        self._notify()

    def _replace(self, objects: dict[str, dict]) -> None:
        with self._lock:
            self._objects = objects
        self._notify()

    def _notify(self) -> None:
        # Coalesce: a burst of events becomes one recomputation on the loop.
        if self._pending or self._loop is None or self._loop.is_closed():
            return
        self._pending = True
        try:
            self._loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # loop closed during shutdown
            self._pending = False

    def _fire(self) -> None:
        self._pending = False
        try:
            self._on_change()
        except Exception:
            log.exception("%s: change handler failed", self.resource.kind)

    def _close_response(self) -> None:
        resp = self._response
        if resp is not None:
            try:
                resp.shutdown()
            except Exception:  # already closed
                pass


def _lines(resp) -> Any:
    """Newline-delimited JSON from a streaming response, across chunk boundaries."""
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield line
