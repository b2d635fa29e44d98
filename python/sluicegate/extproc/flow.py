"""Flow control as the EPP runs it: inside the Rust ext_proc server (`FlowGate`). Python builds
it from the config, hands it to the server, and reads its counters at scrape time; the activator
sets the scale-from-zero grace period here. Nothing here runs per request."""

from __future__ import annotations

from typing import Any

from .._core.extproc import FlowGate
from .._core.scheduling import Router
from ..flowcontrol.config import FlowControlSettings


class EppFlowControl:
    """The server's gate: queueing (`flowControl` gate on) or legacy shedding only (off)."""

    def __init__(self, settings: FlowControlSettings, router: Router, *, queueing: bool = True) -> None:
        self.settings = settings
        self.queueing = queueing
        self.gate = FlowGate(router, settings.to_json(), queueing)

    def stats(self) -> dict[str, Any]:
        """As FlowController.stats(): submitted == dispatched + rejected + expired + cancelled + queued."""
        s = self.gate.stats()
        s["submitted"] = s["enqueued"] + s["rejected_capacity"]
        s["rejected"] = s["rejected_capacity"] + s["evicted"]
        s["expired"] = s["expired_ttl"] + s["expired_no_endpoints"]
        s["waiting_tasks"] = s["queued_requests"]
        return s

    def queue_durations(self) -> list:
        """Time in flow control per label set and outcome (histograms kept in Rust)."""
        return self.gate.queue_durations()

    def queue_totals(self) -> list[tuple[int, str, int]]:
        """(priority, outcome, requests) that left flow control."""
        return self.gate.queue_totals()

    def flow_metrics(self) -> tuple[list, list, Any]:
        """(queue gauges per flow and model, enqueue durations, dispatch-cycle durations)."""
        return self.gate.flow_metrics()

    def saturation(self) -> float:
        return self.gate.saturation()

    def notify(self) -> None:
        """Endpoints or metrics changed: requests waiting for them may go now."""
        self.gate.notify()

    def set_scale_from_zero(self, grace_s: float | None, message: str = "") -> None:
        self.gate.set_scale_from_zero(grace_s, message)

    def hold_counts(self) -> tuple[int, int, int]:
        """(held for the grace period now, held in total, failed at its end in total)."""
        return self.gate.hold_counts()

    def hold_fd(self) -> int:
        """Readable when a request was held while none was (the activator's event)."""
        return self.gate.hold_fd()

    def take_hold_signal(self) -> None:
        self.gate.take_hold_signal()

    def close(self) -> None:
        """Queued requests get 503 rejected-shutting-down; the dispatch thread stops."""
        self.gate.shutdown()
