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
