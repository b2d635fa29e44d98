"""Scheduling façade: the Rust Router (endpoint snapshot + scheduler + scraper) and its config.

The rest of sluicegate imports scheduling from here, never from `sluicegate._core`.
"""

from .._core import (
    Decision,
    EndpointMetrics,
    EndpointStatus,
    ParsedRequest,
    RequestStats,
    Router,
    SeriesSnapshot,
    Tokens,
    find_usage,
    parse_metrics,
    parse_request,
    prefix_block_hashes,
    replace_model_in_chunk,
    request_block_hashes,
    rewrite_model,
)
from .scheduler import Endpoint, ProfileRun, Request, Result, Scheduler, ScorerScores

__all__ = [
    "Decision",
    "Endpoint",
    "ProfileRun",
    "Request",
    "Result",
    "Scheduler",
    "ScorerScores",
    "EndpointMetrics",
    "EndpointStatus",
    "ParsedRequest",
    "RequestStats",
    "Router",
    "SeriesSnapshot",
    "Tokens",
    "find_usage",
    "parse_metrics",
    "parse_request",
    "prefix_block_hashes",
    "replace_model_in_chunk",
    "request_block_hashes",
    "rewrite_model",
]
