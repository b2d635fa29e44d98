"""What a standalone Envoy in front of the EPP is configured with: one frozen, validated value.

Every field is checked once here, so the bootstrap builder below never sees a bad value; a
bad value raises ConfigError naming the field.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from sluicegate.errors import ConfigError
from sluicegate.standalone.ai_gateway import DEFAULT_MODEL_HEADER, PoolRoute, check_pools

# round_robin is the baseline without an EPP: no ext_proc, Envoy spreads requests itself.
UpstreamMode = Literal["original_dst", "override_host", "round_robin"]
ProcessingMode = Literal["full_duplex", "buffered", "streamed"]

UPSTREAM_MODES: tuple[str, ...] = ("original_dst", "override_host", "round_robin")
# Modes where Envoy lists the model servers itself (a STATIC cluster).
STATIC_UPSTREAM_MODES: tuple[str, ...] = ("override_host", "round_robin")
PROCESSING_MODES: tuple[str, ...] = ("full_duplex", "buffered", "streamed")


def parse_endpoint(value: str, field_name: str) -> tuple[str, int]:
    """Split an `ip:port` (IPv6 as `[ip]:port`) into its parts, or raise naming the field."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{field_name}: {value!r} is not an ip:port address")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{field_name}: {value!r} needs an IP address, not a name") from None
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"{field_name}: port {port} in {value!r} is out of range")
    return host, port


def _check_port(value: int, field_name: str, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or not low <= value < 65536:
        raise ConfigError(f"{field_name}: {value!r} is not a port number")


def _check_ip(value: str, field_name: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{field_name}: {value!r} must be an IP address") from None


def _check_positive(value: float, field_name: str) -> None:
    if not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{field_name}: {value!r} must be a positive number of seconds")


@dataclass(frozen=True)
class EppReplica:
    """One more EPP replica of the same pool: ext_proc on host:port, gRPC health on health_port
    (None = on port)."""

    host: str
    port: int
    health_port: int | None = None


@dataclass(frozen=True)
class EnvoyOptions:
    """One Envoy listener → ext_proc (the EPP) → the model-server endpoint the EPP picked.

    Ports of 0 mean "pick a free one" to EnvoyProcess; a bootstrap needs real ports.
    """

    listen_port: int = 8081
    listen_address: str = "0.0.0.0"
    admin_port: int = 19000
    epp_host: str = "127.0.0.1"
    epp_port: int = 9002
    # The EPP serves gRPC health on its own port (`--grpc-health-port`); None = same as epp_port.
    epp_health_port: int | None = 9003
    # The EPP serves ext_proc over TLS by default (--secure-serving, self-signed certificate,
    # not verified, as upstream); its health port stays plaintext.
    epp_tls: bool = True
    upstream_mode: UpstreamMode = "original_dst"
    # override_host and round_robin modes: the endpoints Envoy knows (the EPP's picks must be
    # among them).
    endpoints: tuple[str, ...] = ()
    failure_mode_allow: bool = True
    # original_dst mode only: where a request goes when the EPP set no destination (fail-open).
    fallback_endpoint: str | None = None
    processing_mode: ProcessingMode = "full_duplex"
    skip_response: bool = False
    route_timeout_s: float = 300.0
    idle_timeout_s: float = 300.0
    concurrency: int = 2
    # Retries move to the next endpoint of the EPP's fallback list (override_host mode).
    num_retries: int = 2
    # Bodies above this are refused with 413 in buffered mode; it also caps retry buffering.
    buffer_limit_bytes: int = 8 * 1024 * 1024
    # Only failures before any response byte: a retry then cannot duplicate a streamed answer.
    retry_on: str = "connect-failure,refused-stream,reset"
    # Circuit-breaker ceiling (connections, pending and active requests) of every cluster.
    max_concurrent_requests: int = 1024
    # The AI Gateway shape: several pools, each with its own EPP, picked by a model header.
    # Empty: one pool behind the EPP above.
    pools: tuple[PoolRoute, ...] = ()
    model_header: str = DEFAULT_MODEL_HEADER
    # Active-active EPP replicas: more hosts of the one EPP cluster, next to epp_host:epp_port;
    # Envoy spreads the ext_proc streams over the healthy ones.
    epp_replicas: tuple[EppReplica, ...] = ()
    # Model servers speak cleartext HTTP/2 (h2c), e.g. gRPC servers read by vllmgrpc-parser or
    # vertexai-parser (upstream's appProtocol h2c); False = HTTP/1.1.
    upstream_http2: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_concurrent_requests, int) or self.max_concurrent_requests < 1:
            raise ConfigError(f"max_concurrent_requests: {self.max_concurrent_requests!r} must be an integer >= 1")
        _check_port(self.listen_port, "listen_port", allow_zero=True)
        _check_port(self.admin_port, "admin_port", allow_zero=True)
        _check_port(self.epp_port, "epp_port", allow_zero=False)
        if self.epp_health_port is not None:
            _check_port(self.epp_health_port, "epp_health_port", allow_zero=False)
        for name in ("listen_address", "epp_host"):
            _check_ip(getattr(self, name), name)
        if self.upstream_mode not in UPSTREAM_MODES:
            raise ConfigError(
                f"upstream_mode: {self.upstream_mode!r} is not one of {', '.join(UPSTREAM_MODES)}"
            )
        if self.processing_mode not in PROCESSING_MODES:
            raise ConfigError(
                f"processing_mode: {self.processing_mode!r} is not one of "
                f"{', '.join(PROCESSING_MODES)}"
            )
        if isinstance(self.endpoints, (str, bytes)):
            raise ConfigError("endpoints: must be a sequence of ip:port strings, not one string")
        object.__setattr__(self, "endpoints", tuple(self.endpoints))
        for i, endpoint in enumerate(self.endpoints):
            parse_endpoint(endpoint, f"endpoints[{i}]")
        if self.upstream_mode in STATIC_UPSTREAM_MODES and not self.endpoints:
            raise ConfigError(
                f"endpoints: {self.upstream_mode} mode needs at least one ip:port endpoint"
            )
        if self.fallback_endpoint is not None:
            parse_endpoint(self.fallback_endpoint, "fallback_endpoint")
        _check_positive(self.route_timeout_s, "route_timeout_s")
        _check_positive(self.idle_timeout_s, "idle_timeout_s")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigError(f"concurrency: {self.concurrency!r} must be an integer >= 1")
        if not isinstance(self.num_retries, int) or self.num_retries < 0:
            raise ConfigError(f"num_retries: {self.num_retries!r} must be an integer >= 0")
        if not isinstance(self.retry_on, str) or not self.retry_on.strip():
            raise ConfigError(f"retry_on: {self.retry_on!r} must name at least one retry condition")
        object.__setattr__(self, "epp_replicas", tuple(self.epp_replicas))
        for i, replica in enumerate(self.epp_replicas):
            if not isinstance(replica, EppReplica):
                raise ConfigError(f"epp_replicas[{i}]: {replica!r} is not an EppReplica")
            _check_ip(replica.host, f"epp_replicas[{i}].host")
            _check_port(replica.port, f"epp_replicas[{i}].port", allow_zero=False)
            if replica.health_port is not None:
                _check_port(replica.health_port, f"epp_replicas[{i}].health_port", allow_zero=False)
        if self.epp_tls and any((r.health_port not in (None, r.port)) != (self.health_port != self.epp_port)
                                for r in self.epp_replicas):
            # One health-check socket for the cluster: TLS on the ext_proc port, or plaintext
            # on a separate health port, the same for every replica.
            raise ConfigError("epp_replicas: with epp_tls every replica needs a separate health port "
                              "exactly when epp_health_port is separate")
        if self.epp_replicas and self.pools:
            raise ConfigError("epp_replicas: not with pools (each pool names its own EPP)")
        object.__setattr__(self, "pools", tuple(self.pools))
        check_pools(self.pools, self.model_header, self.upstream_mode)
        if not isinstance(self.buffer_limit_bytes, int) or self.buffer_limit_bytes < 1024:
            raise ConfigError(
                f"buffer_limit_bytes: {self.buffer_limit_bytes!r} must be an integer >= 1024"
            )

    @property
    def health_port(self) -> int:
        return self.epp_health_port if self.epp_health_port is not None else self.epp_port
