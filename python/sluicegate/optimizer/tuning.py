"""Online tuning of one server type's performance profile from its model servers' vLLM
metrics: between two scrapes of a server, the mean ITL (vllm:inter_token_latency_seconds) at
the mean batch (vllm:num_requests_running) is one observation of alpha + beta · batch, and,
when nothing waited, the mean TTFT at the mean prompt length is one of gamma + delta · tokens ·
batch. Kalman filters (`fit.KalmanLinearFit`) started at the configured profile track them."""

from __future__ import annotations

from dataclasses import dataclass

from .fit import KalmanLinearFit, ProfileFit
from .inputs import AcceleratorProfile
from .observe import sum_samples

_FIELDS = {"vllm:inter_token_latency_seconds_sum": "itl_sum",
           "vllm:inter_token_latency_seconds_count": "itl_count",
           "vllm:time_to_first_token_seconds_sum": "ttft_sum",
           "vllm:time_to_first_token_seconds_count": "ttft_count",
           "vllm:num_requests_running": "running",
           "vllm:num_requests_waiting": "waiting"}


@dataclass(frozen=True)
class VllmSample:
    """One scrape of one model server (sums over its label sets)."""

    itl_sum: float = 0.0
    itl_count: float = 0.0
    ttft_sum: float = 0.0
    ttft_count: float = 0.0
    running: float = 0.0
    waiting: float = 0.0


def parse_vllm_metrics(text: str) -> VllmSample:
    return VllmSample(**sum_samples(text, _FIELDS).get("", {}))


class ProfileTuner:
    def __init__(self, prior: AcceleratorProfile, *, noise_ms: float = 2.0,
                 drift: float = 1e-3, min_tokens: int = 20, min_requests: int = 3) -> None:
        # Few observations per minute: the reported error forgets the start-up transient fast.
        self.decode = KalmanLinearFit(prior.alpha, prior.beta, noise_ms=noise_ms, drift=drift,
                                      decay=0.25)
        self.prefill = KalmanLinearFit(prior.gamma, prior.delta, noise_ms=noise_ms * 5,
                                       drift=drift, decay=0.25)
        self._min_tokens = min_tokens
        self._min_requests = min_requests

    def observe(self, prev: VllmSample, cur: VllmSample, input_tokens: float) -> None:
        """One server's change between two scrapes (a restart, counters going back, is
        skipped); `input_tokens` is the mean prompt length of the period."""
        batch = (prev.running + cur.running) / 2
        tokens = cur.itl_count - prev.itl_count
        if tokens >= self._min_tokens and batch >= 1:
            self.decode.update(batch, (cur.itl_sum - prev.itl_sum) / tokens * 1000.0)
        firsts = cur.ttft_count - prev.ttft_count
        if firsts >= self._min_requests and prev.waiting == 0 and cur.waiting == 0:
            ttft_ms = (cur.ttft_sum - prev.ttft_sum) / firsts * 1000.0
            self.prefill.update(input_tokens * max(batch, 1.0), ttft_ms)

    @property
    def fit(self) -> ProfileFit:
        return ProfileFit(decode=self.decode.fit, prefill=self.prefill.fit)
