"""`Scheduler`: the Rust scheduler built from an EndpointPickerConfig, for tests and for embedding
in another gateway. Give it endpoints and their metrics, call `schedule(request)`, get a
`Result`; `explain=True` adds every profile's raw scores without changing any state."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._core import Router
from .config import EppConfig, load_config

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Endpoint:
    name: str
    address: str  # "ip:port"
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One inference request as the proxy hands it over: body, path, headers and hints."""

    body: bytes | Mapping[str, Any]
    path: str = CHAT_PATH
    headers: Mapping[str, str] | None = None
    subset: Sequence[str] | None = None  # the proxy's endpoint subset hint
    model_rewrite: str | None = None

    def body_bytes(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


@dataclass(frozen=True)
class ScorerScores:
    name: str
    weight: float
    scores: Mapping[str, float]  # endpoint address -> raw score


@dataclass(frozen=True)
class ProfileRun:
    """One profile's part in an explained decision."""

    name: str
    candidates: tuple[str, ...]  # after the filters
    scorers: tuple[ScorerScores, ...]
    totals: Mapping[str, float]  # weighted sum per candidate
    picked: tuple[str, ...]


@dataclass(frozen=True)
class Result:
    endpoints: tuple[str, ...]  # primary first, then fallbacks
    model: str | None
    target_model: str | None  # after rewrite; None when not rewritten
    body: bytes | None  # the rewritten body; None when not rewritten
    headers: Mapping[str, str]  # to add upstream, e.g. x-prefiller-host-port
    session_token: str | None
    profiles: tuple[ProfileRun, ...] = ()  # filled when explained
    held_tokens: int = 0  # estimated tokens held on the primary; give back with `release`

    @property
    def primary(self) -> str:
        return self.endpoints[0]


class Scheduler:
    def __init__(self, config: EppConfig | str | None = None) -> None:
        """`config`: a loaded EppConfig, EndpointPickerConfig YAML text, or None for upstream's
        defaults. Raises ConfigError naming the plugin and the field."""
        if not isinstance(config, EppConfig):
            config = load_config(text=config) if config is not None else load_config()
        self.config = config
        self.router = Router(config.router_json())

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        self.router.set_endpoints([(e.name, e.address, dict(e.labels)) for e in endpoints])

    def update_metrics(self, address: str, text: str | bytes, engine: str = "vllm") -> None:
        """Feed one /metrics scrape of `address` (Prometheus text, `engine`'s metric names)."""
        raw = text.encode() if isinstance(text, str) else text
        if not self.router.ingest_metrics(address, raw, engine):
            raise KeyError(f"no endpoint has address {address!r}")

    def schedule(self, request: Request, *, explain: bool = False) -> Result:
        """Pick endpoints for `request`. Counts one request in flight on the primary (give it
        back with `release`) unless `explain`, which changes nothing. Raises BadRequestError,
        NoEndpointsError."""
        body = request.body_bytes()
        subset = list(request.subset) if request.subset is not None else None
        headers = dict(request.headers) if request.headers else None
        if not explain:
            d = self.router.route(request.path, body, request.model_rewrite, subset, headers=headers)
            return _result(d)
        d, runs = self.router.explain(request.path, body, request.model_rewrite, subset, headers=headers)
        return _result(d, tuple(_profile_run(*run) for run in runs))

    def release(self, address: str, held_tokens: int = 0) -> None:
        self.router.release(address, held_tokens)


def _result(d: Any, profiles: tuple[ProfileRun, ...] = ()) -> Result:
    return Result(endpoints=tuple(d.endpoints.split(",")), model=d.model, target_model=d.target_model,
                  body=d.body, headers=d.headers or {}, session_token=d.session_token, profiles=profiles,
                  held_tokens=d.held_tokens)


def _profile_run(name: str, candidates: list[str], scores: list[tuple[str, float, list[float]]],
                 totals: list[float], picked: list[str]) -> ProfileRun:
    return ProfileRun(
        name=name, candidates=tuple(candidates),
        scorers=tuple(ScorerScores(s, w, dict(zip(candidates, raw))) for s, w, raw in scores),
        totals=dict(zip(candidates, totals)), picked=tuple(picked))
