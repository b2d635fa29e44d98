"""Scale-from-zero and scale-to-zero for a pool, on top of flow control's queues."""

from .activator import Activator, ActivatorStats, Managed
from .annotations import ActivatorSpec, Target, parse_annotations
from .metrics import ActivatorCollector

__all__ = ["Activator", "ActivatorCollector", "ActivatorSpec", "ActivatorStats", "Managed",
           "Target", "parse_annotations"]
