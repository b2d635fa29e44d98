"""Structured logs: one JSON object per line with the request id, levels as upstream's -v."""

from __future__ import annotations

import json
import logging

import pytest

from sluicegate.logs import JsonFormatter, level_for, setup_logging


def test_json_lines_carry_extra_fields_and_errors():
    fmt = JsonFormatter()
    rec = logging.LogRecord("sluicegate.extproc", logging.DEBUG, __file__, 1, "routed %s", ("x",), None)
    rec.request_id = "abc-123"
    rec.endpoints = ["10.0.0.1:8000"]
    line = json.loads(fmt.format(rec))
    assert line["msg"] == "routed x" and line["level"] == "debug" and line["logger"] == "sluicegate.extproc"
    assert line["request_id"] == "abc-123" and line["endpoints"] == "['10.0.0.1:8000']"
    assert line["ts"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(fmt.format(rec))["error"]


@pytest.mark.parametrize("v, level", [(0, logging.WARNING), (1, logging.INFO), (2, logging.DEBUG), (5, logging.DEBUG)])
def test_verbosity_maps_to_levels(v, level):
    assert level_for(v) == level


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="--log-format"):
        setup_logging(0, "xml")


# `sluicegate run`: upstream's klog verbosity and controller-runtime's zap flags.
from sluicegate.logs import TRACE, ConsoleFormatter, LogOptions  # noqa: E402


@pytest.mark.parametrize("v, level", [(0, logging.INFO), (2, logging.INFO), (3, logging.INFO), (4, logging.DEBUG),
                                      (5, TRACE), (9, TRACE)])
def test_klog_verbosity_maps_to_upstreams_level_names(v, level):
    assert LogOptions(verbosity=v).resolve()[1] == level


def test_zap_log_level_overrides_the_verbosity():
    assert LogOptions(verbosity=4, level="error").resolve()[1] == logging.ERROR
    assert LogOptions(verbosity=2, level="5").resolve()[1] == TRACE
    with pytest.raises(ValueError, match="--zap-log-level: 'loud'"):
        LogOptions(level="loud").resolve()


def test_zap_devel_means_console_debug_and_stack_traces_from_warn():
    assert LogOptions(devel=True).resolve()[:3] == ("console", logging.DEBUG, logging.WARNING)
    assert LogOptions(devel=True, encoder="json", verbosity=3).resolve()[:2] == ("json", logging.INFO)
    assert LogOptions().resolve()[:3] == ("json", logging.INFO, logging.ERROR)


@pytest.mark.parametrize("flag, value", [("encoder", "xml"), ("time_encoding", "unix"), ("stacktrace_level", "debug")])
def test_bad_zap_values_name_the_flag(flag, value):
    with pytest.raises(ValueError, match=f"--zap-{flag.replace('_', '-')}: '{value}'"):
        LogOptions(**{flag: value}).resolve()


def _record(level=logging.INFO, msg="hello") -> logging.LogRecord:
    rec = logging.LogRecord("sluicegate.x", level, __file__, 1, msg, (), None)
    rec.created = 1700000000.25
    return rec


@pytest.mark.parametrize("encoding, ts", [("epoch", 1700000000.25), ("millis", 1700000000250.0),
                                          ("nano", 1700000000250000000), ("rfc3339", "2023-11-14T22:13:20Z"),
                                          ("iso8601", "2023-11-14T22:13:20.250Z")])
def test_time_encodings(encoding, ts):
    assert json.loads(JsonFormatter(encoding).format(_record()))["ts"] == ts


def test_lines_at_the_stacktrace_level_carry_the_call_site():
    fmt = JsonFormatter(stacktrace_level=logging.ERROR)
    assert "stacktrace" not in json.loads(fmt.format(_record(logging.WARNING)))
    assert "test_logs.py" in json.loads(fmt.format(_record(logging.ERROR)))["stacktrace"]


def test_console_lines_are_tab_separated_with_fields_as_json():
    rec = _record(msg="routed")
    rec.request_id = "r1"
    line = ConsoleFormatter("rfc3339").format(rec)
    assert line.split("\t") == ["2023-11-14T22:13:20Z", "INFO", "sluicegate.x", "routed", '{"request_id": "r1"}']
