"""`sluicegate run | demo | sim | loadgen | envoy-config | check-config | optimize` — one entry point."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .goflags import add_bool, duration, normalize_verbosity
from .runflags import add_upstream_flags


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the EPP (static endpoints, or Kubernetes with --pool-name)")
    p.add_argument("--grpc-host", default="0.0.0.0")
    p.add_argument("--grpc-port", type=int, default=9002)
    p.add_argument("--grpc-health-port", type=int, default=9003)
    p.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics, /healthz, /readyz; -1: off")
    p.add_argument("--metrics-token-file", help="require `Authorization: Bearer <file contents>` on /metrics")
    p.add_argument("--config-file")
    p.add_argument("--config-text")
    p.add_argument("--endpoints-file", help="static endpoints (upstream file-discovery shape)")
    p.add_argument("--pool-name")
    p.add_argument("--pool-namespace", default=None, help="default: $NAMESPACE, then 'default'")
    p.add_argument("--dns-server", help="ip[:port] of the DNS server for hostname endpoints (default: the system resolver)")
    p.add_argument("--dns-refresh-interval", type=float, default=30.0,
                   help="seconds between resolutions of a hostname endpoint (sooner when its TTL is shorter)")
    p.add_argument("--model-allow-list", metavar="MODEL[,MODEL]",
                   help="serve only these models; others get 404 naming the model and the pool (default: any)")
    p.add_argument("--static-pool-name", help="without Kubernetes: the pool's name in metrics and 404s (default: 'default')")
    _add_kube_flags(p)
    add_bool(p, "--secure-serving", True)
    p.add_argument("--cert-path")
    p.add_argument("--refresh-metrics-interval", type=duration, default=0.05, help="Go duration (50ms) or seconds")
    p.add_argument("--metrics-staleness-threshold", type=duration, default=2.0, help="Go duration or seconds")
    p.add_argument("--drain-timeout", type=duration, default=30.0, help="Go duration (30s) or seconds")
    p.add_argument("--ext-proc-impl", choices=("auto", "python", "rust"), default=None,
                   help="deprecated, ignored: every mode is served by the Rust ext_proc server")
    p.add_argument("--max-request-body-bytes", type=_positive_int, default=64 * 1024 * 1024,
                   help="request bodies above this get 413 as soon as they cross it (default 64 MiB)")
    add_bool(p, "--skip-response-processing", False,
             "close the ext_proc stream after routing when the response needs no rewrite")
    p.add_argument("--log-format", choices=("json", "text"), default=None, help="json (default) or text (console)")
    add_upstream_flags(p)
    p.set_defaults(func=_run)


def _add_kube_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool-group", default="inference.networking.k8s.io",
                   help="API group of the InferencePool (inference.networking.x-k8s.io for the older one)")
    p.add_argument("--kubeconfig", help="default: in-cluster, then $KUBECONFIG / ~/.kube/config")
    p.add_argument("--endpoint-selector", help="without CRDs: pods matching k=v[,k=v] are the pool")
    p.add_argument("--endpoint-target-ports", help="without CRDs: the pool's ports, comma-separated")
    add_bool(p, "--ha-enable-leader-election", False)
    add_bool(p, "--enable-scale-to-zero", False,
             "activator: scale the pool's workload to 0 after its activator.llm-d.ai/scale-down-delay idle")
    p.add_argument("--ha-lease-duration", type=duration, default=15.0, help=argparse.SUPPRESS)
    p.add_argument("--ha-renew-deadline", type=duration, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--ha-retry-period", type=duration, default=2.0, help=argparse.SUPPRESS)


def _models(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(m.strip() for m in value.split(",") if m.strip())


def _kube_options(args: argparse.Namespace) -> dict:
    if not (args.pool_name or args.endpoint_selector) or _file_discovery(args):
        return {}
    from .kube.mode import LeaseOptions
    from .kube.watcher import KubeOptions

    kube = KubeOptions(pool_name=args.pool_name, pool_namespace=args.pool_namespace, pool_group=args.pool_group,
                       kubeconfig=args.kubeconfig, endpoint_selector=args.endpoint_selector,
                       endpoint_target_ports=args.endpoint_target_ports)
    lease = None
    if args.ha_enable_leader_election:
        lease = LeaseOptions(args.ha_lease_duration, args.ha_renew_deadline, args.ha_retry_period)
    return {"kube": kube, "leader_election": lease, "scale_to_zero": args.enable_scale_to_zero}


def _file_discovery(args: argparse.Namespace) -> bool:
    """As upstream: a config whose data layer names a discovery plugin runs on file discovery, even
    when the chart also passes --pool-name or --endpoint-selector."""
    import logging

    from .scheduling.config import load_config

    if args.endpoints_file is None and not (args.config_file or args.config_text):
        return False
    if args.endpoints_file is None and load_config(path=args.config_file, text=args.config_text).endpoints_file is None:
        return False
    logging.getLogger("sluicegate.flags").info(
        "endpoints come from the file-discovery data layer; --pool-name / --endpoint-selector serve as labels only")
    return True


def _run(args: argparse.Namespace) -> int:
    from .app import EppOptions, run_until
    from .errors import ConfigError
    from .runflags import check

    try:
        tls = check(args)
    except ValueError as e:
        print(f"sluicegate: {e}", file=sys.stderr)
        return 1
    opts = EppOptions(
        grpc_host=args.grpc_host,
        grpc_port=args.grpc_port,
        grpc_health_port=args.grpc_health_port,
        config_file=args.config_file,
        config_text=args.config_text,
        endpoints_file=args.endpoints_file,
        secure_serving=args.secure_serving,
        cert_path=args.cert_path,
        refresh_metrics_interval_ms=max(1, int(args.refresh_metrics_interval * 1000)),
        metrics_staleness_ms=max(1, int(args.metrics_staleness_threshold * 1000)),
        drain_timeout_s=args.drain_timeout,
        skip_response=args.skip_response_processing,
        ext_proc_impl=args.ext_proc_impl,
        pool_name=args.pool_name or args.static_pool_name,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        metrics_token_file=args.metrics_token_file,
        max_request_body_bytes=args.max_request_body_bytes,
        health_checking=args.health_checking,
        grpc_max_recv_msg_bytes=args.grpc_max_recv_msg_size,
        grpc_max_send_msg_bytes=args.grpc_max_send_msg_size,
        tls_min_version=tls.min_version,
        tls_cipher_suites=tls.cipher_suites,
        cert_reload=tls.reload,
        enable_pprof=args.enable_pprof,
        metrics_endpoint_auth=args.metrics_endpoint_auth,
        metrics_cert_dir=args.metrics_cert_dir,
        metrics_client_ca_file=args.metrics_client_ca_file,
        tracing=args.tracing,
        emit_endpoint_scores=args.emit_endpoint_scores,
        disable_endpoint_subset_filter=args.disable_endpoint_subset_filter,
        grpc_stream_metrics=args.enable_grpc_stream_metrics,
        dns_server=args.dns_server,
        dns_refresh_s=args.dns_refresh_interval,
        allowed_models=_models(args.model_allow_list),
        **_kube_options(args),
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_until(opts, stop)

    shutdown_tracing = None
    try:
        if args.tracing:
            from .tracing import start_tracing

            shutdown_tracing = start_tracing()
        _run_loop(main())
    except ConfigError as e:
        print(f"sluicegate: {e}", file=sys.stderr)
        return 1
    finally:
        if shutdown_tracing is not None:
            shutdown_tracing()
    return 0


def _add_check_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate an EndpointPickerConfig file and print the resolved profile")
    p.add_argument("file")
    p.set_defaults(func=_check_config)


def _check_config(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .scheduling.config import load_config

    try:
        cfg = load_config(path=args.file)
    except ConfigError as e:
        print(f"sluicegate: {e}", file=sys.stderr)
        return 1
    print(cfg.describe())
    return 0


def _add_sim(sub: argparse._SubParsersAction) -> None:
    from .sim import cli as sim_cli

    p = sub.add_parser("sim", help="run simulated vLLM model servers (OpenAI API + /metrics)")
    sim_cli.add_arguments(p)
    p.set_defaults(func=lambda args: _serve(sim_cli.run_from_args(args)))


def _add_loadgen(sub: argparse._SubParsersAction) -> None:
    from .loadgen import cli as loadgen_cli

    p = sub.add_parser("loadgen", help="send an open-loop OpenAI load and print its report as JSON")
    loadgen_cli.add_arguments(p)
    p.set_defaults(func=lambda args: _serve(loadgen_cli.run_from_args(args)))


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from . import demo

    p = sub.add_parser("demo", help="EPP vs round-robin through Envoy over simulated servers, no Kubernetes")
    demo.add_arguments(p)
    p.set_defaults(func=demo.run_from_args)


def _add_envoy_config(sub: argparse._SubParsersAction) -> None:
    from .standalone import config_command

    p = sub.add_parser("envoy-config", help="print the Envoy bootstrap for running your own Envoy")
    config_command.add_arguments(p)
    p.set_defaults(func=config_command.print_config)


def _add_optimize(sub: argparse._SubParsersAction) -> None:
    from .optimizer import cli as optimizer_cli

    p = sub.add_parser("optimize", help="one offline optimizer solve: accelerator and replicas per variant")
    optimizer_cli.add_arguments(p)
    p.set_defaults(func=optimizer_cli.run_from_args)


def _serve(coro) -> int:
    try:
        _run_loop(coro)
    except KeyboardInterrupt:
        pass
    return 0


def _run_loop(coro) -> None:
    import uvloop

    uvloop.run(coro)


def _setup_logging(args: argparse.Namespace) -> None:
    from .logs import LogOptions, configure, setup_logging

    if args.command != "run":
        setup_logging(getattr(args, "verbose", 0), getattr(args, "log_format", "text"))
        return
    encoder = args.zap_encoder or {"text": "console", "json": "json", None: None}[args.log_format]
    configure(LogOptions(verbosity=args.v, encoder=encoder, level=args.zap_log_level, devel=args.zap_devel,
                         stacktrace_level=args.zap_stacktrace_level, time_encoding=args.zap_time_encoding))


def _add_top(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("top", help="live terminal view of an EPP from its /metrics")
    p.add_argument("--url", default="http://127.0.0.1:9090/metrics")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--token-file", help="bearer token for an EPP started with --metrics-token-file")
    p.set_defaults(func=_top)


def _top(args: argparse.Namespace) -> int:
    from urllib.error import URLError

    from .top import run

    token = open(args.token_file).read().strip() if args.token_file else None
    try:
        return run(args.url, args.interval, args.once, token)
    except (URLError, OSError) as e:
        print(f"sluicegate top: cannot read {args.url}: {e}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluicegate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_check_config(sub)
    _add_sim(sub)
    _add_loadgen(sub)
    _add_demo(sub)
    _add_envoy_config(sub)
    _add_top(sub)
    _add_optimize(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["optimize"]:  # run every interval by controllers: skip the other
        parser = argparse.ArgumentParser(prog="sluicegate")  # commands' imports (Rust core,
        _add_optimize(parser.add_subparsers(dest="command", required=True))  # aiohttp, grpc)
    else:
        if argv[:1] == ["run"]:  # upstream's klog spellings: -v=4, -v 4, --v=4
            argv = ["run", *normalize_verbosity(argv[1:])]
        parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _setup_logging(args)
    except ValueError as e:
        print(f"sluicegate: {e}", file=sys.stderr)
        return 1
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
