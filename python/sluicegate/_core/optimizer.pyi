"""The optimizer's sizing kernel ("step" queueing model + bisection), used by
sluicegate.optimizer.sizing; the numpy implementation there is its reference."""

def max_rates_step(
    max_batch: int,
    max_queue: int,
    alpha: list[float],
    beta: list[float],
    gamma: list[float],
    delta: list[float],
    input_tokens: list[float],
    output_tokens: list[float],
    ttft_ms: list[float],
    itl_ms: list[float],
    min_served_fraction: list[float],
) -> list[float]:
    """Largest arrival rate (req/s) per option that meets its SLO; 0 when a lone request
    misses it. One entry per option in every column."""

def evaluate_step(
    max_batch: int,
    max_queue: int,
    alpha: float,
    beta: float,
    gamma: float,
    delta: float,
    input_tokens: float,
    output_tokens: float,
    arrival_rps: float,
) -> tuple[float, float, float]:
    """(throughput req/s, mean TTFT ms, mean ITL ms) of one replica at `arrival_rps`."""

__all__ = [
    "evaluate_step",
    "max_rates_step",
]
