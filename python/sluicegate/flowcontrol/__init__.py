"""Flow control for any asyncio gateway: hold requests while the backends are saturated and
let them through by priority, fairness across flows and each flow's own order."""

from .config import Band, FlowControlSettings, parse_flow_control
from .controller import FlowController, Ticket

__all__ = ["Band", "FlowControlSettings", "FlowController", "Ticket", "parse_flow_control"]
