"""The Envoy AI Gateway shape: several InferencePools behind one listener, picked by a model
header (`x-ai-eg-model`, as the AI Gateway sets it), each pool with its own EPP cluster.

One ext_proc filter sits in the chain; each model's route overrides its gRPC service to that
pool's EPP (ExtProcPerRoute), so a request only ever reaches the EPP of the pool serving its
model. A model no pool serves gets a 404 from Envoy without any EPP being asked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sluicegate.errors import ConfigError

DEFAULT_MODEL_HEADER = "x-ai-eg-model"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
_TYPE = "type.googleapis.com/"
_POOL_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_HEADER_NAME = re.compile(r"[a-z0-9][-a-z0-9_.]*")


@dataclass(frozen=True)
class PoolRoute:
    """One pool: its EPP (ext_proc on host:port, gRPC health on health_port) and its models."""

    name: str
    epp_host: str
    epp_port: int
    epp_health_port: int | None
    models: tuple[str, ...]

    @property
    def epp_cluster(self) -> str:
        return f"epp-{self.name}"

    @property
    def upstream_cluster(self) -> str:
        return f"pool-{self.name}"


def parse_pool(value: str, flag: str = "--pool") -> PoolRoute:
    """`name=NAME;epp=IP:PORT[;health-port=PORT];models=M1,M2` (IPv6 as `[ip]:port`)."""
    from sluicegate.standalone.options import parse_endpoint

    fields: dict[str, str] = {}
    for part in (p.strip() for p in value.split(";")):
        key, sep, val = part.partition("=")
        if not sep or key not in ("name", "epp", "health-port", "models"):
            raise ConfigError(f"{flag}: {part!r} in {value!r} is not name=, epp=, health-port= or models=")
        fields[key] = val.strip()
    missing = [k for k in ("name", "epp", "models") if not fields.get(k)]
    if missing:
        raise ConfigError(f"{flag}: {value!r} has no {missing[0]}=")
    host, port = parse_endpoint(fields["epp"], f"{flag} epp")
    health = fields.get("health-port")
    if health is not None and not (health.isdigit() and 0 < int(health) < 65536):
        raise ConfigError(f"{flag}: health-port {health!r} is not a port number")
    models = tuple(m.strip() for m in fields["models"].split(",") if m.strip())
    return PoolRoute(fields["name"], host, port, int(health) if health else None, models)


def check_pools(pools: tuple[PoolRoute, ...], model_header: str, upstream_mode: str) -> None:
    if not pools:
        return
    if upstream_mode != "original_dst":
        raise ConfigError(f"pools: the AI Gateway shape routes with original_dst, not {upstream_mode}")
    if not _HEADER_NAME.fullmatch(model_header):
        raise ConfigError(f"model_header: {model_header!r} is not a lower-case header name")
    owner: dict[str, str] = {}
    for pool in pools:
        if not _POOL_NAME.fullmatch(pool.name):
            raise ConfigError(f"pools: pool name {pool.name!r} must be lower-case letters, digits and '-'")
        if any(p.name == pool.name for p in pools if p is not pool):
            raise ConfigError(f"pools: pool {pool.name!r} is listed twice")
        if not pool.models:
            raise ConfigError(f"pools: pool {pool.name!r} serves no model")
        for model in pool.models:
            if model in owner:
                raise ConfigError(f"pools: model {model!r} is served by both {owner[model]!r} and {pool.name!r}")
            owner[model] = pool.name


def model_routes(pools: tuple[PoolRoute, ...], model_header: str,
                 route_for: Any) -> list[dict[str, Any]]:
    """One route per model (exact header match) to its pool, then a 404 for any other model.
    `route_for(cluster)` builds the route action the single-pool shape would use."""
    routes = []
    for pool in pools:
        for model in pool.models:
            route = route_for(pool.upstream_cluster)
            route["match"] = {"prefix": "/", "headers": [{"name": model_header, "string_match": {"exact": model}}]}
            route["typed_per_filter_config"] = {EXT_PROC_FILTER: {
                "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                "overrides": {"grpc_service": {"envoy_grpc": {"cluster_name": pool.epp_cluster}, "timeout": "10s"}},
            }}
            routes.append(route)
    served = sorted(m for p in pools for m in p.models)
    body = {"error": {"message": f"no pool serves the model named by {model_header}; served: {', '.join(served)}",
                      "type": "NotFound", "code": 404}}
    routes.append({
        "match": {"prefix": "/"},
        "direct_response": {"status": 404, "body": {"inline_string": json.dumps(body)}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        "typed_per_filter_config": {EXT_PROC_FILTER: {
            "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "disabled": True}},
    })
    return routes
