"""`sluicegate run` takes the upstream EPP's flags as its chart renders them: Go value syntax,
klog verbosity, zap flags; what cannot be honoured is refused with the flag's name."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from sluicegate.cli import build_parser
from sluicegate.goflags import duration, normalize_verbosity, size_bytes
from sluicegate.runflags import check

CHART_ARGS = Path(__file__).parents[2] / "data" / "upstream_chart_args"
RENDERED = sorted(CHART_ARGS.glob("*.yaml"))
UPSTREAM_FLAGS = [line for line in (Path(__file__).parents[2] / "data" / "upstream_flags.txt").read_text().splitlines()
                  if line.startswith("--")]
README = Path(__file__).parents[3] / "README.md"


def chart_args(name: str) -> list[str]:
    return yaml.safe_load((CHART_ARGS / name).read_text())["args"]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *normalize_verbosity(list(argv))])


@pytest.mark.parametrize("name", [p.name for p in RENDERED if p.name != "default-plugins.yaml"])
def test_every_rendered_chart_argument_list_parses_and_passes_the_checks(name):
    args = parse(*chart_args(name))
    check(args)
    assert args.zap_encoder == "json" and args.tracing is False
    assert args.grpc_health_port == 9003 and args.config_file == "/config/default-plugins.yaml"


def test_the_every_flag_list_sets_each_value_as_upstream_reads_it():
    a = parse(*chart_args("every-flag.yaml"))
    assert (a.drain_timeout, a.refresh_metrics_interval, a.refresh_prometheus_metrics_interval) == (60.0, 0.05, 5.0)
    assert (a.grpc_max_recv_msg_size, a.grpc_max_send_msg_size) == (4194304, 10 * 2**20)
    assert (a.v, a.zap_log_level, a.zap_time_encoding, a.zap_devel) == (4, "debug", "rfc3339", False)
    assert a.health_checking and a.enable_grpc_stream_metrics and a.secure_serving
    assert not a.enable_pprof and not a.metrics_endpoint_auth
    assert check(a).min_version == "VersionTLS12"


@pytest.mark.parametrize("arg", UPSTREAM_FLAGS, ids=[a.split("=")[0] for a in UPSTREAM_FLAGS])
def test_every_upstream_flag_parses_in_upstreams_syntax_and_sets_its_value(arg):
    flag = arg.split("=")[0]
    dest = flag.removeprefix("--").replace("-", "_")
    default = getattr(parse(), dest)
    assert getattr(parse(arg), dest) not in (None, default), f"{arg} left {dest} at {default!r}"


def test_every_upstream_flag_has_its_status_in_the_readme_flag_table():
    lines = README.read_text().splitlines()
    start = lines.index("| upstream flag | here |")
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(re.split(r"(?<!\\)\|", line)[1])  # the flag column (an escaped \| is in a cell)
    flags = [a.split("=")[0] for a in UPSTREAM_FLAGS]
    missing = [f for f in flags if not any(f"`{f}`" in row or f"`{f} " in row for row in rows)]
    assert not missing, f"not in the README's flag table: {missing}"


@pytest.mark.parametrize("text, seconds", [("50ms", 0.05), ("30s", 30.0), ("1m", 60.0), ("1m30s", 90.0),
                                           ("1.5h", 5400.0), ("300us", 0.0003), ("2µs", 2e-6), ("0", 0.0),
                                           ("0.5", 0.5), ("-1s", -1.0)])
def test_go_durations(text, seconds):
    assert duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["s", "1x", "1s2", "ms5", "1 s"])
def test_bad_durations_are_refused_with_the_value(bad):
    with pytest.raises(argparse.ArgumentTypeError, match=f"'{bad}' is not a duration"):
        duration(bad)


@pytest.mark.parametrize("text, n", [("4194304", 4194304), ("10MiB", 10 * 2**20), ("25MB", 25_000_000),
                                     ("1Gi", 2**30), ("4e6", 4_000_000), ("512k", 512_000), ("1.5Ki", 1536)])
def test_message_sizes_take_kubernetes_quantities(text, n):
    assert size_bytes(text) == n


@pytest.mark.parametrize("argv, v", [(["--v=4"], 4), (["-v=2"], 2), (["-v", "5"], 5), (["-v3"], 3),
                                     (["-v"], 3), (["-vv"], 4), (["--verbose"], 3), ([], 2)])
def test_every_verbosity_spelling(argv, v):
    assert parse(*argv).v == v


@pytest.mark.parametrize("argv, value", [(["--health-checking"], True), (["--health-checking=false"], False),
                                         (["--health-checking", "true"], True), (["--health-checking=0"], False),
                                         (["--health-checking=T"], True), ([], False)])
def test_booleans_in_every_pflag_spelling(argv, value):
    assert parse(*argv).health_checking is value


def test_a_scrape_name_other_than_the_engines_own_is_refused_with_the_flag():
    with pytest.raises(ValueError, match="--total-queued-requests-metric=my_queue"):
        check(parse("--total-queued-requests-metric=my_queue"))
    check(parse("--total-queued-requests-metric=vllm:num_requests_waiting"))


def test_metrics_client_ca_needs_a_cert_dir(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ValueError, match="metrics-cert-dir"):
        check(parse(f"--metrics-client-ca-file={ca}"))
    with pytest.raises(ValueError, match="tls.crt"):
        check(parse(f"--metrics-cert-dir={tmp_path}"))


def test_unknown_flag_values_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        parse("--drain-timeout=soon")
    assert "--drain-timeout" in capsys.readouterr().err


def test_tracing_without_the_sdk_is_refused_naming_the_flag(tmp_path, capsys):
    pytest.importorskip("grpc")  # the EPP's own dependencies are installed; the OTel SDK is not
    try:
        import opentelemetry.sdk  # noqa: F401
        pytest.skip("the OpenTelemetry SDK is installed here")
    except ImportError:
        pass
    from sluicegate.cli import main

    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text("endpoints: []\n")
    assert main(["run", "--tracing=true", f"--endpoints-file={endpoints}", "--metrics-port=-1"]) == 1
    assert "--tracing=true: the OpenTelemetry SDK is not installed" in capsys.readouterr().err
