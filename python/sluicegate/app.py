"""The EPP process: config → Router (Rust) → endpoint discovery → scraper → the Rust ext_proc
server (flow control, objectives, rewrites and routing all in Rust; Python never sees a request).

`Epp` is what `sluicegate run` starts and what tests and the demo start in-process.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .datalayer.discovery import ENGINE_LABEL, Endpoint, FileDiscovery
from .datalayer.dns import Resolver
from .datalayer.failures import FailureLog
from .datalayer.hostnames import DEFAULT_REFRESH_S, HostnameResolution
from .errors import ConfigError
from .extproc.flow import EppFlowControl
from .extproc.protocol import MAX_BODY_BYTES
from .extproc.server import EppServer
from .metrics import MetricsServer, build_registry
from .metrics.server import MetricsAccess
from .scheduling import Router
from .scheduling.kv_events import KvEventSubscriber
from .scheduling.config import EppConfig, load_config
from .scheduling.data_layer import no_node_addresses

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
    # --ext-proc-impl: deprecated no-op (one request path, in Rust); a value given logs a line
    ext_proc_impl: str | None = None
    metrics_port: int | None = 9090  # None: no metrics/health HTTP server
    metrics_token_file: str | None = None
    max_request_body_bytes: int = MAX_BODY_BYTES  # --max-request-body-bytes: larger bodies get 413
    kube: "KubeOptions | None" = None  # Kubernetes mode (--pool-name or --endpoint-selector)
    leader_election: "LeaseOptions | None" = None  # --ha-enable-leader-election
    scale_to_zero: bool = False  # --enable-scale-to-zero (activator, Kubernetes mode)
    # Upstream EPP flags (python/sluicegate/runflags.py; README flag table)
    health_checking: bool = False  # --health-checking: gRPC health on the ext_proc port too
    grpc_max_recv_msg_bytes: int | None = None  # --grpc-max-recv-msg-size
    grpc_max_send_msg_bytes: int | None = None  # --grpc-max-send-msg-size
    tls_min_version: str | None = None  # --tls-min-version (VersionTLS12, VersionTLS13)
    tls_cipher_suites: tuple[str, ...] = ()  # --tls-cipher-suites (Go names)
    cert_reload: bool = False  # --enable-cert-reload
    enable_pprof: bool = False  # --enable-pprof: /debug/pprof/ on the metrics port
    metrics_endpoint_auth: bool = False  # --metrics-endpoint-auth (Kubernetes mode: TokenReview + SAR)
    metrics_cert_dir: str | None = None  # --metrics-cert-dir: HTTPS metrics
    metrics_client_ca_file: str | None = None  # --metrics-client-ca-file: mTLS metrics
    tracing: bool = False  # --tracing (set up by the CLI; spans around the control path)
    emit_endpoint_scores: bool = False  # --emit-endpoint-scores
    disable_endpoint_subset_filter: bool = False  # --disable-endpoint-subset-filter
    grpc_stream_metrics: bool = False  # --enable-grpc-stream-metrics
    dns_server: str | None = None  # --dns-server host:port for hostname endpoints; None: the system resolver
    dns_refresh_s: float = DEFAULT_REFRESH_S  # --dns-refresh-interval
    # --model-allow-list: the pool serves only these models (others get 404); None: any model.
    # In Kubernetes mode the pool's InferenceModelRewrites add theirs (see kube.models).
    allowed_models: tuple[str, ...] | None = None


class Epp:
    def __init__(self, opts: EppOptions) -> None:
        self.opts = opts
        self.config: EppConfig = load_config(path=opts.config_file, text=opts.config_text)
        if opts.ext_proc_impl is not None:
            log.warning("--ext-proc-impl %s: deprecated and ignored; every mode is served by the Rust "
                        "ext_proc server", opts.ext_proc_impl)
        self.router = Router(
            self.config.router_json(
                scrapeIntervalMs=opts.refresh_metrics_interval_ms, stalenessMs=opts.metrics_staleness_ms,
                ignoreSubsetHint=opts.disable_endpoint_subset_filter,
                emitEndpointScores=opts.emit_endpoint_scores,
            )
        )
        if opts.allowed_models is not None:
            self.router.set_allowed_models(opts.pool_name or "default", list(opts.allowed_models))
        # Why data sources fail, in the log (their counters are on /metrics).
        self.failures = FailureLog(self.router.status)
        # precise-prefix-cache-producer: follow each endpoint's KV-event publisher.
        self.kv_events = KvEventSubscriber.from_config(self.router, self.config.precise_prefix)
        fc = self.config.flow_control
        # Objectives (priority per name): static ones now; Kubernetes mode replaces them whole.
        self.router.set_objectives(dict(fc.objectives))
        # Model rewrites: the config's static table now; Kubernetes mode replaces it whole.
        if self.config.rewrites_json is not None:
            self.router.set_rewrites(self.config.rewrites_json)
        self.kube = None
        # Discovery's endpoints pass through here: hostnames become one endpoint per DNS address.
        self.hostnames = HostnameResolution(self._set_endpoints, Resolver(opts.dns_server) if opts.dns_server else None,
                                            opts.dns_refresh_s)
        if opts.kube is not None:
            from .kube.mode import KubeMode

            self.kube = KubeMode(opts.kube, opts.leader_election, self.router, self.hostnames.update,
                                 spec_hostnames=self.config.data_layer.pod_hostnames)
            self.kube.watcher.on_models = self._set_pool_models
            self.discovery = self.kube.watcher
        else:
            if self.config.data_layer.k8s_sources:
                name, where = self.config.data_layer.k8s_sources[0]
                raise ConfigError(f"{where}: k8s-notification-source {name!r} watches the Kubernetes API and does "
                                  f"not bind without Kubernetes mode (--pool-name or --endpoint-selector); remove "
                                  f"it from dataLayer.sources to run with file discovery")
            if self.config.data_layer.node_addresses:
                raise ConfigError(no_node_addresses(self.config.data_layer.node_addresses))
            path = opts.endpoints_file or self.config.endpoints_file
            if path is None:
                raise ConfigError("no endpoints: give --endpoints-file, --pool-name, or a file-discovery plugin")
            self.discovery = FileDiscovery(path, self.hostnames.update, watch=self.config.watch_file)
        # Flow control (feature gate `flowControl`): requests wait by priority and fairness while the
        # pool is saturated or empty, and are routed when their turn comes. Gate off: upstream's
        # legacy admission sheds sheddable requests (objective priority < 0) with 429 while saturated.
        self.flow: EppFlowControl | None = None
        self.shedder: EppFlowControl | None = None
        if fc.enabled:
            self.flow = EppFlowControl(fc, self.router)
        elif fc.objectives or self.kube is not None:
            self.shedder = EppFlowControl(fc, self.router, queueing=False)
        gate = (self.flow or self.shedder).gate if (self.flow or self.shedder) is not None else None
        self._gate = gate
        # Activator (flow control on, Kubernetes mode with a pool or static `activator:`): scale the
        # pool's workload from/to zero, on counters read from Rust.
        self.activator = None
        if self.flow is not None and self.kube is not None and self.kube.watcher.pool is not None:
            from .activator.kube import kube_activator

            self.activator = kube_activator(self.kube, self.flow, self.router, scale_to_zero=opts.scale_to_zero)
        elif self.kube is None and self.config.activator is not None:  # static mode: scale commands
            from .activator.static import static_activator

            self.activator = static_activator(opts.pool_name or "default", self.flow, self.router,
                                              self.config.activator, after_command=self.discovery.check)
        self.server = EppServer(
            self.router,
            host=opts.grpc_host,
            port=opts.grpc_port,
            health_port=opts.grpc_health_port,
            secure=opts.secure_serving,
            cert_path=opts.cert_path,
            skip_response=opts.skip_response,
            max_body_bytes=opts.max_request_body_bytes,
            gate=gate,
            **_server_flags(opts),
        )
        self.metrics: MetricsServer | None = None
        if opts.metrics_port is not None:
            registry = build_registry(self.router, opts.pool_name or "default", extra=self._collectors)
            self.metrics = MetricsServer(registry, self.ready, opts.grpc_host, opts.metrics_port,
                                         access=self._metrics_access())
        self._serving = False

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def health_port(self) -> int:
        return self.server.health_port

    def _set_endpoints(self, endpoints: list[Endpoint]) -> None:
        self.router.set_endpoints([(e.name, e.hostport, _labels(e)) for e in endpoints],
                                  {e.hostport: e.pod_facts for e in endpoints if e.pod_facts})
        if self.kv_events is not None:
            self.kv_events.endpoints_changed(((e.hostport, _labels(e)) for e in endpoints),
                                             {e.hostport: e.rank for e in endpoints if e.rank})
        log.info("endpoints: %s", ", ".join(e.hostport for e in endpoints) or "none")
        if self._gate is not None:
            self._gate.notify()  # requests held for want of endpoints may go now
        if self.activator is not None:
            self.activator.endpoints_changed(len(endpoints))

    def _set_pool_models(self, bound) -> None:
        """Kubernetes mode: the allow-list is --model-allow-list plus the models bound to the pool
        (its served-models annotation, its InferenceModelRewrites); on with the flag or the annotation."""
        if self.opts.allowed_models is None and not bound.explicit:
            self.router.set_allowed_models(self.opts.pool_name or "default", None)
            return
        models = sorted(set(self.opts.allowed_models or ()) | bound.models)
        self.router.set_allowed_models(self.opts.pool_name or "default", models)
        log.info("model allow-list: %s", ", ".join(models) or "empty (every model refused)")

    def _collectors(self) -> list:
        from .datalayer.dns_metrics import HostnameCollector

        out: list = [HostnameCollector(self.hostnames)]
        if self.opts.grpc_stream_metrics:
            from .metrics.grpc_streams import StreamMetrics

            out.append(StreamMetrics(self.server.stream_metrics))
        if self.flow is not None:
            from .metrics.flowcontrol import FlowControlCollector

            out.append(FlowControlCollector(self.opts.pool_name or "default", self.flow, self.router.status))
        if self.activator is not None:
            from .activator import ActivatorCollector

            out.append(ActivatorCollector(self.activator))
        if self.kv_events is not None:
            from .scheduling.kv_events import KvEventsCollector

            out.append(KvEventsCollector(self.kv_events, self.router))
        return out

    def _metrics_access(self) -> MetricsAccess:
        """Upstream's metrics flags: auth through the API server in Kubernetes mode (upstream's
        file-discovery mode has none either), HTTPS, client certificates, pprof."""
        opts = self.opts
        authorize = None
        if opts.metrics_endpoint_auth and self.kube is not None:
            from .kube.watcher import api_client
            from .metrics.kube_auth import KubeMetricsAuth

            authorize = KubeMetricsAuth(api_client(opts.kube.kubeconfig))
        return MetricsAccess(token_file=opts.metrics_token_file, authorize=authorize, cert_dir=opts.metrics_cert_dir,
                             client_ca_file=opts.metrics_client_ca_file, pprof=opts.enable_pprof)

    @property
    def metrics_port(self) -> int | None:
        return self.metrics.port if self.metrics is not None else None

    def ready(self) -> bool:
        """Started and not stopping: what /readyz reports."""
        return self._serving

    async def start(self) -> None:
        if self.kv_events is not None:
            self.kv_events.start()  # binds kvEventsConfig.zmqEndpoint before servers dial it
        self.hostnames.start()
        self.discovery.start()
        self.router.start_scraper()
        self.failures.start()
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
        # NOT_SERVING, still-queued requests 503 rejected-shutting-down, then the drain.
        await self.server.stop(self.opts.drain_timeout_s if drain_timeout is None else drain_timeout)
        await self.discovery.stop()
        await self.hostnames.stop()
        self.router.stop_scraper()
        await self.failures.stop()
        if self.kv_events is not None:
            await self.kv_events.close()
        if self.metrics is not None:
            await self.metrics.stop()

    async def __aenter__(self) -> "Epp":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop(0)


def _server_flags(opts: EppOptions) -> dict:
    """Upstream's ext_proc flags as server arguments: health on the ext_proc port, message
    limits, TLS (reload, minimum version, suites; refused by name by the server when it cannot)
    and the stream metrics."""
    return {"health_checking": opts.health_checking, "max_recv_msg_bytes": opts.grpc_max_recv_msg_bytes,
            "max_send_msg_bytes": opts.grpc_max_send_msg_bytes, "cert_reload": opts.cert_reload,
            "tls_min_version": opts.tls_min_version, "tls_cipher_suites": opts.tls_cipher_suites,
            "stream_metrics": opts.grpc_stream_metrics}


def _labels(e: Endpoint) -> dict[str, str]:
    labels = dict(e.labels)
    labels.setdefault(ENGINE_LABEL, "vllm")
    return labels


async def run_until(opts: EppOptions, stop: asyncio.Event) -> None:
    """Serve until `stop` is set (SIGTERM/SIGINT), then drain for --drain-timeout."""
    from .tracing import span

    epp = Epp(opts)
    with span("sluicegate.start"):  # --tracing: the start-up (config, discovery, servers) as one span
        await epp.start()
    try:
        # Tests and wrappers wait for this line to know the ports.
        print(f"sluicegate ready grpc={epp.port} health={epp.health_port} metrics={epp.metrics_port or 0}",
              flush=True)
        await stop.wait()
    finally:
        await epp.stop()
