"""Accelerator capacity from the cluster's Nodes, as the autoscaler's inventory collector
reads it: each schedulable, Ready node offers its allocatable GPUs (nvidia.com/gpu,
amd.com/gpu) of the model its accelerator label names (nvidia.com/gpu.product from GPU feature
discovery, amd.com/gpu.product-name from AMD's node labeller), matched to an
accelerator-unit-costs entry by its `device` (or its name)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .inputs import Accelerator, OptimizerInput

# (allocatable resource, label naming the accelerator model) per vendor.
VENDORS: tuple[tuple[str, str], ...] = (
    ("nvidia.com/gpu", "nvidia.com/gpu.product"),
    ("amd.com/gpu", "amd.com/gpu.product-name"),
)


@dataclass(frozen=True)
class Inventory:
    counts: dict[str, int]  # accelerator-unit-costs name -> allocatable units
    unmatched: dict[str, int]  # node label value with no accelerator entry -> units

    def apply(self, inp: OptimizerInput) -> OptimizerInput:
        """`inp` with every accelerator type's count taken from the Nodes (0 when none)."""
        return replace(inp, accelerators=tuple(replace(a, count=self.counts.get(a.name, 0))
                                               for a in inp.accelerators))


def node_inventory(nodes: Iterable[Any], accelerators: Sequence[Accelerator],
                   vendors: Sequence[tuple[str, str]] = VENDORS) -> Inventory:
    """Units per accelerator type over `nodes` (kubernetes V1Node objects or their dicts)."""
    by_device = {a.device.lower(): a.name for a in accelerators if a.device}
    by_device.update({a.name.lower(): a.name for a in accelerators})
    counts: dict[str, int] = {}
    unmatched: dict[str, int] = {}
    for node in nodes:
        labels, allocatable, schedulable = _fields(node)
        if not schedulable:
            continue
        for resource, label in vendors:
            units = _quantity(allocatable.get(resource))
            product = labels.get(label, "")
            if units <= 0 or not product:
                continue
            name = by_device.get(product.lower())
            into = counts if name else unmatched
            key = name or product
            into[key] = into.get(key, 0) + units
    return Inventory(counts=counts, unmatched=unmatched)


def _fields(node: Any) -> tuple[Mapping[str, str], Mapping[str, str], bool]:
    if not isinstance(node, Mapping):
        node = node.to_dict()
    meta, spec, status = (node.get(k) or {} for k in ("metadata", "spec", "status"))
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    return (meta.get("labels") or {}, status.get("allocatable") or {},
            ready and not spec.get("unschedulable"))


def _quantity(value: Any) -> int:
    """A GPU count as the API gives it ("8"); device plugins advertise whole units."""
    if value is None:
        return 0
    try:
        return int(str(value))
    except ValueError:
        return 0


def read_nodes(api: Any) -> list[Any]:
    from kubernetes import client

    return client.CoreV1Api(api).list_node().items
