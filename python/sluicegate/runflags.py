"""`sluicegate run`'s flags: every flag of the upstream EPP, spelled and valued as upstream's
(pflag: Go durations, `--flag=false`, `-v=N`, controller-runtime's `--zap-*`), plus sluicegate's
own. `check` turns them into the checked values the EPP starts with; a flag this runtime cannot
honour is refused with its name, or accepted with one log line saying what it does here."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass

from . import goflags
from .goflags import add_bool, duration

log = logging.getLogger("sluicegate.flags")

# Upstream's deprecated scrape-name flags and the vLLM series sluicegate reads by default.
METRIC_NAME_FLAGS = {
    "total_queued_requests_metric": ("--total-queued-requests-metric", "vllm:num_requests_waiting"),
    "total_running_requests_metric": ("--total-running-requests-metric", "vllm:num_requests_running"),
    "kv_cache_usage_percentage_metric": ("--kv-cache-usage-percentage-metric", "vllm:kv_cache_usage_perc"),
    "lora_info_metric": ("--lora-info-metric", "vllm:lora_requests_info"),
    "cache_info_metric": ("--cache-info-metric", "vllm:cache_config_info"),
}
TLS_VERSIONS = ("VersionTLS10", "VersionTLS11", "VersionTLS12", "VersionTLS13")


def add_upstream_flags(p: argparse.ArgumentParser) -> None:
    """The upstream EPP flags sluicegate's own set did not have (see the README's flag table)."""
    p.add_argument("--v", type=int, default=2, metavar="N",
                   help="log verbosity as upstream's klog -v: 0-3 info, 4 debug, 5+ trace (-v, -vv still work)")
    p.add_argument("--zap-encoder", choices=("json", "console"), help="log line encoding (default json)")
    p.add_argument("--zap-log-level", help="debug, info, error, panic, or a verbosity > 0; overrides -v")
    add_bool(p, "--zap-devel", None, "development logging: console lines, debug level, stack traces from warn")
    p.add_argument("--zap-stacktrace-level", help="info, error or panic: lines at or above carry a stacktrace")
    p.add_argument("--zap-time-encoding", help="epoch, millis, nano, iso8601, rfc3339 or rfc3339nano")
    add_bool(p, "--tracing", False, "export OpenTelemetry spans (OTEL_* environment; needs opentelemetry-sdk)")
    add_bool(p, "--health-checking", False, "also serve gRPC health on the ext_proc port")
    add_bool(p, "--enable-pprof", True, "profiling endpoints under /debug/pprof/ on the metrics port")
    add_bool(p, "--enable-cert-reload", False, "re-read --cert-path's tls.crt/tls.key when they change")
    p.add_argument("--tls-min-version", choices=TLS_VERSIONS, help="lowest TLS version for secure serving")
    p.add_argument("--tls-cipher-suites", help="comma-separated Go names of TLS 1.2 cipher suites")
    add_bool(p, "--metrics-endpoint-auth", True,
             "Kubernetes mode: /metrics needs a bearer token the API server authenticates and authorizes")
    p.add_argument("--metrics-cert-dir", help="folder with tls.crt and tls.key: serve metrics over HTTPS")
    p.add_argument("--metrics-client-ca-file", help="PEM CA: metrics clients must present a certificate it signed")
    p.add_argument("--grpc-max-recv-msg-size", type=goflags.size_bytes, help="largest gRPC message received")
    p.add_argument("--grpc-max-send-msg-size", type=goflags.size_bytes, help="largest gRPC message sent")
    p.add_argument("--refresh-prometheus-metrics-interval", type=duration, default=None,
                   help="accepted; pool gauges are computed at each scrape here")
    add_bool(p, "--allow-experimental-plugins", False, "allow plugins marked experimental")
    add_bool(p, "--disable-endpoint-subset-filter", False, "ignore the proxy's endpoint subset hint")
    add_bool(p, "--emit-endpoint-scores", False, "send the primary profile's weighted scores per endpoint in envoy.lb metadata "
             "x-gateway-destination-endpoint-scores")
    add_bool(p, "--enable-grpc-stream-metrics", False, "extproc_streams_* and extproc_stream_duration_seconds")
    for dest, (flag, default) in METRIC_NAME_FLAGS.items():
        p.add_argument(flag, dest=dest, default=None, help=f"deprecated upstream; only {default} is read")


@dataclass(frozen=True)
class TlsPolicy:
    min_version: str | None
    cipher_suites: tuple[str, ...]
    reload: bool


def check(args: argparse.Namespace) -> TlsPolicy:
    """Refuse what cannot be honoured (errors name the flag and value); log what applies differently."""
    for dest, (flag, default) in METRIC_NAME_FLAGS.items():
        value = getattr(args, dest)
        if value is not None and value != default:
            raise ValueError(f"{flag}={value}: sluicegate reads each engine's own series (chosen by the "
                             f"llm-d.ai/engine-type label; vLLM: {default}); other names cannot be configured")
    if args.metrics_client_ca_file and not args.metrics_cert_dir:
        raise ValueError('"metrics-client-ca-file" requires "metrics-cert-dir"')
    for path in ([args.metrics_client_ca_file] if args.metrics_client_ca_file else []) + (
            [os.path.join(args.metrics_cert_dir, n) for n in ("tls.crt", "tls.key")] if args.metrics_cert_dir else []):
        if not os.path.isfile(path):
            raise ValueError(f"metrics TLS file unreadable: {path}")
    if args.enable_cert_reload and not args.cert_path:
        log.info("--enable-cert-reload: no --cert-path, the self-signed certificate is never reloaded")
    suites = tuple(s.strip() for s in (args.tls_cipher_suites or "").split(",") if s.strip())
    if args.tls_min_version in ("VersionTLS10", "VersionTLS11"):
        log.info("--tls-min-version=%s: the ext_proc server speaks TLS 1.2 and 1.3 only", args.tls_min_version)
    if args.refresh_prometheus_metrics_interval is not None:
        log.info("--refresh-prometheus-metrics-interval: pool gauges are computed at each scrape; nothing to refresh")
    if args.allow_experimental_plugins:
        log.info("--allow-experimental-plugins: no sluicegate plugin is marked experimental; nothing changes")
    return TlsPolicy(args.tls_min_version, suites, args.enable_cert_reload)
