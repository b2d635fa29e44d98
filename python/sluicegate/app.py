"""The EPP process: config → Router (Rust) → endpoint discovery → scraper → gRPC servers.

`Epp` is what `sluicegate run` starts and what tests and the demo start in-process.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from .datalayer.discovery import ENGINE_LABEL, Endpoint, FileDiscovery
from .errors import ConfigError
from .extproc.server import EppServer
from .scheduling import Router
from .scheduling.config import EppConfig, load_config

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


class Epp:
    def __init__(self, opts: EppOptions) -> None:
        self.opts = opts
        self.config: EppConfig = load_config(path=opts.config_file, text=opts.config_text)
        self.router = Router(
            self.config.router_json(
                scrapeIntervalMs=opts.refresh_metrics_interval_ms, stalenessMs=opts.metrics_staleness_ms
            )
        )
        if opts.pool_name:
            raise ConfigError("--pool-name (Kubernetes mode) is not available in this build; use --endpoints-file")
        path = opts.endpoints_file or self.config.endpoints_file
        if path is None:
            raise ConfigError("no endpoints: give --endpoints-file or a file-discovery plugin in the config")
        self.discovery = FileDiscovery(path, self._set_endpoints, watch=self.config.watch_file)
        self.server = EppServer(
            self.router,
            host=opts.grpc_host,
            port=opts.grpc_port,
            health_port=opts.grpc_health_port,
            secure=opts.secure_serving,
            cert_path=opts.cert_path,
            skip_response=opts.skip_response,
        )

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def health_port(self) -> int:
        return self.server.health_port

    def _set_endpoints(self, endpoints: list[Endpoint]) -> None:
        self.router.set_endpoints([(e.name, e.hostport, _labels(e)) for e in endpoints])
        log.info("endpoints: %s", ", ".join(e.hostport for e in endpoints) or "none")

    async def start(self) -> None:
        self.discovery.start()
        self.router.start_scraper()
        await self.server.start()
        await self.server.set_serving(True)

    async def stop(self, drain_timeout: float | None = None) -> None:
        await self.server.stop(self.opts.drain_timeout_s if drain_timeout is None else drain_timeout)
        await self.discovery.stop()
        self.router.stop_scraper()

    async def __aenter__(self) -> "Epp":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop(0)


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
        print(f"sluicegate ready grpc={epp.port} health={epp.health_port}", flush=True)
        await stop.wait()
    finally:
        await epp.stop()
