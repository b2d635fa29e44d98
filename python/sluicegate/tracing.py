"""--tracing: OpenTelemetry set up from the standard OTEL_* environment, as upstream does it
(exporter `OTEL_TRACES_EXPORTER` otlp or console, sampler parentbased_traceidratio with
`OTEL_TRACES_SAMPLER_ARG`, default 0.1, resource from `OTEL_RESOURCE_ATTRIBUTES`). The EPP's
control path records spans (start-up, endpoint changes); requests are served in Rust and are not
traced. Without the SDK installed the flag is refused, never ignored."""

from __future__ import annotations

import logging
import os
from typing import Callable

from .errors import ConfigError

log = logging.getLogger(__name__)

SERVICE_NAME = "sluicegate-epp"
_INSTALL = "pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc"


def start_tracing() -> Callable[[], None]:
    """Install the global tracer provider; returns its shutdown (flushes pending spans)."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as e:
        raise ConfigError(f"--tracing=true: the OpenTelemetry SDK is not installed ({e.name}); "
                          f"{_INSTALL}, or pass --tracing=false") from None
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "console")
    if kind == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(f"--tracing=true with OTEL_TRACES_EXPORTER=otlp: the OTLP exporter is not "
                              f"installed; {_INSTALL}") from None
        exporter = OTLPSpanExporter()  # endpoint, headers, TLS from OTEL_EXPORTER_OTLP_*
    elif kind == "console":
        exporter = ConsoleSpanExporter()
    else:
        raise ConfigError(f"--tracing=true: OTEL_TRACES_EXPORTER={kind!r} is not otlp or console")
    sampler_kind = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    try:
        ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "0.1"))
    except ValueError:
        ratio = 0.1
    if sampler_kind != "parentbased_traceidratio":
        log.warning("--tracing: OTEL_TRACES_SAMPLER=%s is not supported; parentbased_traceidratio %g is used",
                    sampler_kind, ratio)
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)})
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("--tracing: exporting spans (%s exporter, sample ratio %g)", kind, ratio)
    return provider.shutdown


def span(name: str):
    """A span on the EPP's tracer when tracing is on, else a no-op context manager."""
    try:
        from opentelemetry import trace
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return trace.get_tracer("sluicegate").start_as_current_span(name)
