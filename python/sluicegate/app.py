"""The EPP process: config → Router (Rust) → endpoint discovery → scraper → gRPC servers.

`Epp` is what `sluicegate run` starts and what tests and the demo start in-process.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .datalayer.discovery import ENGINE_LABEL, Endpoint, FileDiscovery
from .errors import ConfigError
from .extproc.native_server import NativeEppServer
from .extproc.server import EppServer
from .extproc.stream import MAX_BODY_BYTES
from .flowcontrol import FlowController
from .metrics import MetricsServer, build_registry
from .scheduling import Router
from .scheduling.kv_events import KvEventSubscriber
from .scheduling.config import EppConfig, load_config

if TYPE_CHECKING:
    from .kube.mode import LeaseOptions
    from .kube.watcher import KubeOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EppOptions:
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 9002
    grpc_health_port: int = 9003
    config_file: str | None = None
    config_text: str | None = None
    endpoints_file: str | None = None
    secure_serving: bool = True
    cert_path: str | None = None
    refresh_metrics_interval_ms: int = 50
    metrics_staleness_ms: int = 2000
    drain_timeout_s: float = 30.0
    skip_response: bool = False
    pool_name: str | None = None
    # "rust" (tonic, no Python per request), "python" (grpc.aio), "auto": rust where it can serve
    ext_proc_impl: str = "auto"
    metrics_port: int | None = 9090  # None: no metrics/health HTTP server
    metrics_token_file: str | None = None
    max_request_body_bytes: int = MAX_BODY_BYTES  # --max-request-body-bytes: larger bodies get 413
    kube: "KubeOptions | None" = None  # Kubernetes mode (--pool-name or --endpoint-selector)
    leader_election: "LeaseOptions | None" = None  # --ha-enable-leader-election
    scale_to_zero: bool = False  # --enable-scale-to-zero (activator, Kubernetes mode)


class Epp:
    def __init__(self, opts: EppOptions) -> None:
        self.opts = opts
        self.config: EppConfig = load_config(path=opts.config_file, text=opts.config_text)
        server_class = _ext_proc_server(opts, self.config)  # a bad --ext-proc-impl fails before anything starts
        self.router = Router(
            self.config.router_json(
                scrapeIntervalMs=opts.refresh_metrics_interval_ms, stalenessMs=opts.metrics_staleness_ms
            )
        )
        # precise-prefix-cache-producer: follow each endpoint's KV-event publisher.
        self.kv_events = KvEventSubscriber.from_config(self.router, self.config.precise_prefix)
        self.kube = None
        picker = self.router
        if opts.kube is not None:
            from .kube.mode import KubeMode

            self.kube = KubeMode(opts.kube, opts.leader_election, self.router, self._set_endpoints)
            self.discovery = self.kube.watcher
            picker = self.kube.picker
        else:
            path = opts.endpoints_file or self.config.endpoints_file
            if path is None:
                raise ConfigError("no endpoints: give --endpoints-file, --pool-name, or a file-discovery plugin")
            self.discovery = FileDiscovery(path, self._set_endpoints, watch=self.config.watch_file)
        # Flow control (feature gate `flowControl`): requests wait by priority and fairness while the
        # pool is saturated or empty, and are routed in the dispatch thread when their turn comes.
        fc = self.config.flow_control
        self.flow = FlowController(fc, router=self.router) if fc.enabled else None
        # Gate off, Python request path: upstream's legacy admission sheds sheddable requests
        # (objective priority < 0) with 429 while the pool is saturated.
        self.shedder = None
        if self.flow is None and server_class is EppServer:
            self.shedder = FlowController(fc, router=self.router, queueing=False)
            if self.kube is not None:
                self.kube.on_objectives(self.shedder.set_objectives)
        # Activator (Kubernetes mode with flow control): scale the pool's workload from/to zero.
        self.activator = None
        if self.flow is not None and self.kube is not None and self.kube.watcher.pool is not None:
            from .activator.kube import kube_activator

            self.activator = kube_activator(self.kube, self.flow, self.router, scale_to_zero=opts.scale_to_zero)
        elif self.kube is None and self.config.activator is not None:  # static mode: scale commands
            from .activator.static import static_activator

            self.activator = static_activator(opts.pool_name or "default", self.flow, self.router,
                                              self.config.activator)
        flow_args = {"flow": self.activator.flow if self.activator else self.flow} if self.flow is not None else {}
        if self.shedder is not None:
            flow_args = {"flow": self.shedder}
        if self.flow is not None and self.kube is not None:
            self.kube.on_objectives(self.flow.set_objectives)
            flow_args["flow"] = self.kube.rewriting(flow_args["flow"])  # InferenceModelRewrite before queueing
        self.server = server_class(
            picker,
            host=opts.grpc_host,
            port=opts.grpc_port,
            health_port=opts.grpc_health_port,
            secure=opts.secure_serving,
            cert_path=opts.cert_path,
            skip_response=opts.skip_response,
            stats=self.router.request_stats(),
            max_body_bytes=opts.max_request_body_bytes,
            **flow_args,
        )
        self.metrics: MetricsServer | None = None
        if opts.metrics_port is not None:
            registry = build_registry(self.router, opts.pool_name or "default", extra=self._collectors)
            self.metrics = MetricsServer(registry, self.ready, opts.grpc_host, opts.metrics_port,
                                         opts.metrics_token_file)
        self._serving = False

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def health_port(self) -> int:
        return self.server.health_port

    def _set_endpoints(self, endpoints: list[Endpoint]) -> None:
        self.router.set_endpoints([(e.name, e.hostport, _labels(e)) for e in endpoints])
        if self.kv_events is not None:
            self.kv_events.endpoints_changed((e.hostport, _labels(e)) for e in endpoints)
        log.info("endpoints: %s", ", ".join(e.hostport for e in endpoints) or "none")
        if self.flow is not None:
            self.flow.notify()  # requests held for want of endpoints may go now
        if self.activator is not None:
            self.activator.endpoints_changed(len(endpoints))

    def _collectors(self) -> list:
        out = []
        if self.flow is not None:
            from .metrics.flowcontrol import FlowControlCollector

            out.append(FlowControlCollector(self.opts.pool_name or "default", self.flow))
        if self.activator is not None:
            from .activator import ActivatorCollector

            out.append(ActivatorCollector(self.activator))
        if self.kv_events is not None:
            from .scheduling.kv_events import KvEventsCollector

            out.append(KvEventsCollector(self.kv_events, self.router))
        return out

    @property
    def metrics_port(self) -> int | None:
        return self.metrics.port if self.metrics is not None else None

    def ready(self) -> bool:
        """Started and not stopping: what /readyz reports."""
        return self._serving

    async def start(self) -> None:
        if self.kv_events is not None:
            self.kv_events.start()  # binds kvEventsConfig.zmqEndpoint before servers dial it
        self.discovery.start()
        self.router.start_scraper()
        if self.metrics is not None:
            await self.metrics.start()
        await self.server.start()
        self._serving = True
        if self.activator is not None:
            self.activator.start()
        if self.kube is not None:
            await self.kube.start(self.server.set_serving)  # SERVING once synced (and leader, with HA)
            if self.activator is None:
                from .activator.kube import warn_if_annotated_without_flow_control

                warn_if_annotated_without_flow_control(self.kube)
        else:
            await self.server.set_serving(True)

    async def stop(self, drain_timeout: float | None = None) -> None:
        self._serving = False
        if self.kube is not None:
            await self.kube.stop_serving()
        if self.activator is not None:
            await self.activator.stop()
        if self.flow is not None:
            self.flow.close()  # still-queued requests get 503 rejected-shutting-down
        if self.shedder is not None:
            self.shedder.close()
        await self.server.stop(self.opts.drain_timeout_s if drain_timeout is None else drain_timeout)
        await self.discovery.stop()
        self.router.stop_scraper()
        if self.kv_events is not None:
            await self.kv_events.close()
        if self.metrics is not None:
            await self.metrics.stop()

    async def __aenter__(self) -> "Epp":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop(0)


def _ext_proc_server(opts: EppOptions, config: EppConfig) -> type[EppServer] | type[NativeEppServer]:
    """The ext_proc server --ext-proc-impl names; `auto` is the Rust one unless the configuration
    needs what only the Python request path has (flow control, Kubernetes mode, objectives)."""
    impl = opts.ext_proc_impl
    if impl not in ("auto", "python", "rust"):
        raise ConfigError(f"--ext-proc-impl: {impl!r} is not one of auto, python, rust")
    fc = config.flow_control
    python_only = ("flow control (featureGates: [flowControl])" if fc.enabled
                   else "Kubernetes mode (--pool-name, --endpoint-selector)" if opts.kube is not None
                   else "objectives (priorities, shedding sheddable requests)" if fc.objectives else None)
    if impl == "python" or (impl == "auto" and python_only):
        return EppServer
    if python_only:
        raise ConfigError(f"--ext-proc-impl rust: {python_only} runs in the Python request path only; "
                          "use --ext-proc-impl python or auto")
    return NativeEppServer


def _labels(e: Endpoint) -> dict[str, str]:
    labels = dict(e.labels)
    labels.setdefault(ENGINE_LABEL, "vllm")
    return labels


async def run_until(opts: EppOptions, stop: asyncio.Event) -> None:
    """Serve until `stop` is set (SIGTERM/SIGINT), then drain for --drain-timeout."""
    epp = Epp(opts)
    await epp.start()
    try:
        # Tests and wrappers wait for this line to know the ports.
        print(f"sluicegate ready grpc={epp.port} health={epp.health_port} metrics={epp.metrics_port or 0}",
              flush=True)
        await stop.wait()
    finally:
        await epp.stop()
