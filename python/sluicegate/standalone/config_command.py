"""`sluicegate envoy-config`: print the Envoy bootstrap for a standalone Envoy in front of the EPP.

cli.py wires it: `add_arguments(subparser)` then `print_config(args)` as the handler.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from sluicegate.errors import ConfigError
from sluicegate.standalone.ai_gateway import parse_pool
from sluicegate.standalone.binary import validate_bootstrap
from sluicegate.standalone.bootstrap import envoy_bootstrap
from sluicegate.standalone.options import PROCESSING_MODES, UPSTREAM_MODES, EnvoyOptions

_DEFAULTS = EnvoyOptions()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--listen-port", type=int, default=_DEFAULTS.listen_port)
    a("--listen-address", default=_DEFAULTS.listen_address)
    a("--admin-port", type=int, default=_DEFAULTS.admin_port, help="admin on 127.0.0.1")
    a("--epp-host", default=_DEFAULTS.epp_host, help="IP of the EPP's ext_proc server")
    a("--epp-port", type=int, default=_DEFAULTS.epp_port)
    a("--epp-health-port", type=int, default=_DEFAULTS.epp_health_port,
      help="the EPP's --grpc-health-port (0: same as --epp-port)")
    a("--epp-plaintext", action="store_true",
      help="the EPP runs with --secure-serving=false (default: TLS to the EPP)")
    a("--upstream-mode", choices=UPSTREAM_MODES, default=_DEFAULTS.upstream_mode)
    a("--endpoint", dest="endpoints", action="append", default=[], metavar="IP:PORT",
      help="a model server Envoy knows (override_host mode); repeat for each")
    a("--fail-closed", action="store_true", help="refuse requests while the EPP is unreachable")
    a("--fallback-endpoint", metavar="IP:PORT",
      help="original_dst mode: destination when the EPP set none (fail-open)")
    a("--processing-mode", choices=PROCESSING_MODES, default=_DEFAULTS.processing_mode)
    a("--skip-response", action="store_true", help="do not send responses to the EPP")
    a("--upstream-http2", action="store_true",
      help="model servers speak cleartext HTTP/2 (gRPC servers: vllmgrpc-parser, vertexai-parser)")
    a("--route-timeout", type=float, default=_DEFAULTS.route_timeout_s, help="seconds")
    a("--idle-timeout", type=float, default=_DEFAULTS.idle_timeout_s, help="seconds")
    a("--num-retries", type=int, default=_DEFAULTS.num_retries)
    a("--pool", dest="pools", action="append", default=[], metavar="name=N;epp=IP:PORT[;health-port=P];models=M1,M2",
      help="AI Gateway shape: route requests whose model header names one of the models to this pool's EPP; "
           "repeat per pool (replaces --epp-host/--epp-port)")
    a("--model-header", default=_DEFAULTS.model_header, help="header the AI Gateway shape routes on")
    a("--format", choices=("yaml", "json"), default="yaml")
    a("--validate", action="store_true", help="also check the result with `envoy --mode validate`")


def options_from_args(args: argparse.Namespace) -> EnvoyOptions:
    return EnvoyOptions(
        listen_port=args.listen_port,
        listen_address=args.listen_address,
        admin_port=args.admin_port,
        epp_host=args.epp_host,
        epp_port=args.epp_port,
        epp_health_port=args.epp_health_port or None,
        epp_tls=not args.epp_plaintext,
        upstream_mode=args.upstream_mode,
        endpoints=tuple(args.endpoints),
        failure_mode_allow=not args.fail_closed,
        fallback_endpoint=args.fallback_endpoint,
        processing_mode=args.processing_mode,
        skip_response=args.skip_response,
        upstream_http2=args.upstream_http2,
        route_timeout_s=args.route_timeout,
        idle_timeout_s=args.idle_timeout,
        num_retries=args.num_retries,
        pools=tuple(parse_pool(p) for p in args.pools),
        model_header=args.model_header,
    )


def print_config(args: argparse.Namespace) -> int:
    """Print the bootstrap to stdout; 1 with the reason on stderr if the options are bad."""
    try:
        bootstrap = envoy_bootstrap(options_from_args(args))
        if args.validate:
            validate_bootstrap(bootstrap)
    except ConfigError as exc:
        print(f"sluicegate envoy-config: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(bootstrap, indent=2))
    else:
        print(yaml.safe_dump(bootstrap, sort_keys=False), end="")
    return 0
