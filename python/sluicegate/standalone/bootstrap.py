"""Builds the Envoy bootstrap (a plain dict, dumped to YAML) that puts Envoy in front of the EPP.

The shape follows what was measured with Envoy 1.40 (shared/ENVOY_NOTES.md): strip client
destination headers before ext_proc, health-check the EPP so fail-open works, and route by the
EPP's `x-gateway-destination-endpoint` through ORIGINAL_DST or the override_host LB policy.
The round_robin mode is the baseline without an EPP: no ext_proc, Envoy's own round-robin.
"""

from __future__ import annotations

from typing import Any

import yaml

from sluicegate.standalone.ai_gateway import model_routes
from sluicegate.standalone.options import EnvoyOptions, parse_endpoint

DESTINATION_HEADER = "x-gateway-destination-endpoint"
SERVED_HEADER = "x-gateway-destination-endpoint-served"
LB_NAMESPACE = "envoy.lb"
SUBSET_HINT_NAMESPACE = "envoy.lb.subset_hint"
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
EPP_CLUSTER = "epp"
UPSTREAM_CLUSTER = "inference_pool"

_TYPE = "type.googleapis.com/"
_PLAINTEXT_HEALTH = {"sluicegate_health": "plaintext"}


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _processing_mode(opts: EnvoyOptions) -> dict[str, str]:
    if opts.processing_mode == "full_duplex":
        # Envoy requires trailer SEND with FULL_DUPLEX_STREAMED bodies.
        body, trailers = "FULL_DUPLEX_STREAMED", "SEND"
    elif opts.processing_mode == "buffered":
        body, trailers = "BUFFERED", "SKIP"
    else:
        body, trailers = "STREAMED", "SKIP"
    mode = {
        "request_header_mode": "SEND",
        "request_body_mode": body,
        "request_trailer_mode": trailers,
        "response_header_mode": "SEND",
        "response_body_mode": body,
        "response_trailer_mode": trailers,
    }
    if opts.skip_response:
        mode |= {
            "response_header_mode": "SKIP",
            "response_body_mode": "NONE",
            "response_trailer_mode": "SKIP",
        }
    return mode


def _strip_client_destination() -> dict[str, Any]:
    # Must run before ext_proc: a route-level removal would run after it and drop the EPP's
    # header too, and on fail-open a client header would steer ORIGINAL_DST to its own choice.
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {
                "request_mutations": [
                    {"remove": DESTINATION_HEADER},
                    {"remove": SERVED_HEADER},
                ]
            },
        },
    }


def _ext_proc(opts: EnvoyOptions) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            # In full duplex these timeouts do not bound the stream (the route timeouts do);
            # they bound the header phases of the other modes.
            # The AI Gateway shape overrides the service per model route (ai_gateway.py).
            "grpc_service": {"envoy_grpc": {"cluster_name": opts.pools[0].epp_cluster if opts.pools else EPP_CLUSTER},
                             "timeout": "10s"},
            "message_timeout": "10s",
            "failure_mode_allow": opts.failure_mode_allow,
            "allow_mode_override": True,
            "processing_mode": _processing_mode(opts),
            "metadata_options": {
                "receiving_namespaces": {"untyped": [LB_NAMESPACE]},
                "forwarding_namespaces": {"untyped": [SUBSET_HINT_NAMESPACE, LB_NAMESPACE]},
            },
        },
    }


def _served_header_to_metadata() -> dict[str, Any]:
    # Listed after ext_proc so that on the response path (filters run in reverse) it turns the
    # route's served-endpoint header into envoy.lb metadata before ext_proc forwards it.
    return {
        "name": "envoy.filters.http.header_to_metadata",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.http.header_to_metadata.v3.Config",
            "response_rules": [
                {
                    "header": SERVED_HEADER,
                    "on_header_present": {
                        "metadata_namespace": LB_NAMESPACE,
                        "key": SERVED_HEADER,
                        "type": "STRING",
                    },
                    "remove": True,
                }
            ],
        },
    }


def _router() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
    }


def _http_filters(opts: EnvoyOptions) -> list[dict[str, Any]]:
    filters = [_strip_client_destination()]
    if opts.upstream_mode != "round_robin":
        filters.append(_ext_proc(opts))
    if opts.upstream_mode == "original_dst" and not opts.skip_response:
        filters.append(_served_header_to_metadata())
    filters.append(_router())
    return filters


def _route(opts: EnvoyOptions, cluster: str = UPSTREAM_CLUSTER) -> dict[str, Any]:
    action: dict[str, Any] = {
        "cluster": cluster,
        "timeout": _seconds(opts.route_timeout_s),
        "idle_timeout": _seconds(opts.idle_timeout_s),
        "retry_policy": {"retry_on": opts.retry_on, "num_retries": opts.num_retries},
    }
    route: dict[str, Any] = {"match": {"prefix": "/"}, "route": action}
    if opts.upstream_mode == "original_dst":
        if opts.fallback_endpoint is not None:
            # Route headers are added after ext_proc ran, so ADD_IF_ABSENT keeps the EPP's pick
            # and only fills in the destination when the EPP set none (fail-open).
            route["request_headers_to_add"] = [
                {
                    "header": {"key": DESTINATION_HEADER, "value": opts.fallback_endpoint},
                    "append_action": "ADD_IF_ABSENT",
                }
            ]
        if not opts.skip_response:
            route["response_headers_to_add"] = [
                {
                    "header": {"key": SERVED_HEADER, "value": "%UPSTREAM_REMOTE_ADDRESS%"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ]
    else:
        # Each retry takes the next address of the EPP's list; previous_hosts keeps the
        # fallback policy from picking a host that already failed once the list runs out.
        action["retry_policy"] |= {
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {
                        "@type": _TYPE
                        + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                    },
                }
            ],
            "host_selection_retry_max_attempts": 5,
        }
    return route


def _routes(opts: EnvoyOptions) -> list[dict[str, Any]]:
    if opts.pools:
        return model_routes(opts.pools, opts.model_header, lambda cluster: _route(opts, cluster))
    return [_route(opts)]


def _listener(opts: EnvoyOptions) -> dict[str, Any]:
    manager = {
        "@type": _TYPE
        + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "sluicegate",
        # AUTO serves HTTP/1.1 and cleartext HTTP/2 (h2c prior knowledge) on one port.
        "codec_type": "AUTO",
        "stream_idle_timeout": _seconds(opts.idle_timeout_s),
        "route_config": {
            "name": "inference",
            "virtual_hosts": [{"name": "inference", "domains": ["*"], "routes": _routes(opts)}],
        },
        "http_filters": _http_filters(opts),
    }
    return {
        "name": "inference",
        "address": _socket_address(opts.listen_address, opts.listen_port),
        "per_connection_buffer_limit_bytes": opts.buffer_limit_bytes,
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
                ]
            }
        ],
    }


def _http2_options() -> dict[str, Any]:
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }


def _tls_to_epp() -> dict[str, Any]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            # gRPC servers insist on ALPN h2; the EPP's self-signed certificate is not verified.
            "common_tls_context": {"alpn_protocols": ["h2"]},
        },
    }


def _plaintext_health_checks() -> dict[str, Any]:
    # Health checks pick this socket by criteria; streams keep the cluster's TLS socket.
    return {
        "name": "plaintext-health",
        "match": dict(_PLAINTEXT_HEALTH),
        "transport_socket": {
            "name": "envoy.transport_sockets.raw_buffer",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
            },
        },
    }


def _eject_on_connect_failure() -> dict[str, Any]:
    # A full-duplex stream whose EPP connection fails after the body started gets a 500 even
    # with fail-open; health checks alone leave up to one interval of those after an EPP crash
    # (37 requests measured). Ejecting on the first connect failure cut that to 1 when the EPP
    # was healthy from start-up, but Envoy did not apply the ejection when the EPP had first
    # turned healthy after start-up (measured), so the health check stays the guarantee.
    # Only connect failures count: EPP gRPC errors must not make Envoy bypass the EPP.
    return {
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 1,
        "enforcing_consecutive_local_origin_failure": 100,
        "enforcing_local_origin_success_rate": 0,
        "enforcing_consecutive_5xx": 0,
        "enforcing_consecutive_gateway_failure": 0,
        "enforcing_success_rate": 0,
        "interval": "1s",
        "base_ejection_time": "1s",
        "max_ejection_time": "5s",
        "max_ejection_percent": 100,
    }


def _epp_cluster(opts: EnvoyOptions, name: str = EPP_CLUSTER, host: str | None = None, port: int | None = None,
                 health_port: int | None = None) -> dict[str, Any]:
    """The EPP's cluster; name/host/ports default to the single-pool options."""
    host = host or opts.epp_host
    port = port or opts.epp_port
    health_port = health_port or (opts.health_port if port == opts.epp_port else port)
    hosts = [(host, port, health_port)]
    if name == EPP_CLUSTER:
        hosts += [(r.host, r.port, r.health_port or r.port) for r in opts.epp_replicas]
    lb_endpoints = []
    for h, p, hp in hosts:
        endpoint: dict[str, Any] = {"address": _socket_address(h, p)}
        if hp != p:
            endpoint["health_check_config"] = {"port_value": hp}
        lb_endpoints.append({"endpoint": endpoint})
    separate_health_port = any(hp != p for _, p, hp in hosts)
    health_check: dict[str, Any] = {
        "timeout": "1s",
        "interval": "1s",
        "no_traffic_interval": "1s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "grpc_health_check": {"service_name": EXT_PROC_SERVICE},
    }
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": _http2_options(),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": lb_endpoints}],
        },
        # Without active checks a dead EPP looks healthy and fail-open POSTs get 500; the
        # default 60 s no_traffic_interval would leave that blind spot after start-up.
        "health_checks": [health_check],
        # Panic routing would send streams to an EPP known to be down; fail open instead.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "outlier_detection": _eject_on_connect_failure(),
    }
    if opts.epp_tls:
        cluster["transport_socket"] = _tls_to_epp()
        if separate_health_port:
            cluster["transport_socket_matches"] = [_plaintext_health_checks()]
            health_check["transport_socket_match_criteria"] = dict(_PLAINTEXT_HEALTH)
    return cluster


def _lb_endpoints(addresses: list[str]) -> list[dict[str, Any]]:
    endpoints = []
    for i, address in enumerate(addresses):
        host, port = parse_endpoint(address, f"endpoints[{i}]")
        endpoints.append({"endpoint": {"address": _socket_address(host, port)}})
    return endpoints


def _override_host_policy() -> dict[str, Any]:
    destination = {"key": LB_NAMESPACE, "path": [{"key": DESTINATION_HEADER}]}
    return {
        "policies": [
            {
                "typed_extension_config": {
                    "name": "envoy.load_balancing_policies.override_host",
                    "typed_config": {
                        "@type": _TYPE
                        + "envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
                        "override_host_sources": [
                            {"header": DESTINATION_HEADER},
                            {"metadata": destination},
                        ],
                        # Reported back to the EPP (forwarded envoy.lb) on the response path.
                        "selected_host_key": {
                            "key": LB_NAMESPACE,
                            "path": [{"key": SERVED_HEADER}],
                        },
                        "fallback_policy": {
                            "policies": [
                                {
                                    "typed_extension_config": {
                                        "name": "envoy.load_balancing_policies.round_robin",
                                        "typed_config": {
                                            "@type": _TYPE
                                            + "envoy.extensions.load_balancing_policies"
                                            ".round_robin.v3.RoundRobin"
                                        },
                                    }
                                }
                            ]
                        },
                    },
                }
            }
        ]
    }


def _upstream_cluster(opts: EnvoyOptions, name: str = UPSTREAM_CLUSTER) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "connect_timeout": "2s",
        "per_connection_buffer_limit_bytes": opts.buffer_limit_bytes,
    }
    if opts.upstream_mode == "original_dst":
        cluster |= {
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "original_dst_lb_config": {
                "use_http_header": True,
                "http_header_name": DESTINATION_HEADER,
            },
        }
    else:
        cluster |= {
            "type": "STATIC",
            "load_assignment": {
                "cluster_name": UPSTREAM_CLUSTER,
                "endpoints": [{"lb_endpoints": _lb_endpoints(list(opts.endpoints))}],
            },
        }
        if opts.upstream_mode == "override_host":
            cluster["load_balancing_policy"] = _override_host_policy()
        else:
            cluster["lb_policy"] = "ROUND_ROBIN"
    if opts.upstream_http2:
        cluster["typed_extension_protocol_options"] = _http2_options()
    return cluster


def _circuit_breakers(limit: int) -> dict[str, Any]:
    # Envoy's default of 1024 concurrent requests per cluster would cap held streams, and with
    # ext_proc every request is also a gRPC stream on the EPP cluster.
    return {"thresholds": [{"priority": "DEFAULT", "max_connections": limit, "max_pending_requests": limit,
                            "max_requests": limit}]}


def _clusters(opts: EnvoyOptions) -> list[dict[str, Any]]:
    if opts.pools:
        clusters = []
        for pool in opts.pools:
            clusters += [_epp_cluster(opts, pool.epp_cluster, pool.epp_host, pool.epp_port, pool.epp_health_port),
                         _upstream_cluster(opts, pool.upstream_cluster)]
    elif opts.upstream_mode == "round_robin":
        clusters = [_upstream_cluster(opts)]  # no EPP to reach, so no cluster health-checking one
    else:
        clusters = [_epp_cluster(opts), _upstream_cluster(opts)]
    for cluster in clusters:
        cluster["circuit_breakers"] = _circuit_breakers(opts.max_concurrent_requests)
    return clusters


def envoy_bootstrap(opts: EnvoyOptions) -> dict[str, Any]:
    """The whole bootstrap for `opts`; ports must be real (non-zero) by now."""
    return {
        "admin": {"address": _socket_address("127.0.0.1", opts.admin_port)},
        "static_resources": {
            "listeners": [_listener(opts)],
            "clusters": _clusters(opts),
        },
    }


def bootstrap_yaml(opts: EnvoyOptions) -> str:
    return yaml.safe_dump(envoy_bootstrap(opts), sort_keys=False)
