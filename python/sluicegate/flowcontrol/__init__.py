"""Flow control for any asyncio gateway: hold requests while the backends are saturated and
let them through by priority, fairness across flows and each flow's own order.

    controller = FlowController(max_concurrency=8)
    async with controller.admit(flow="tenant-a", priority=1, size=len(body)) as ticket:
        ...  # forward the request; the place is freed on exit

`example_proxy.py` puts it in front of a plain aiohttp reverse proxy (runnable).
"""

from .config import Band, FlowControlSettings, parse_flow_control
from .controller import FlowController, Ticket

__all__ = ["Band", "FlowControlSettings", "FlowController", "Ticket", "parse_flow_control"]
