"""GPU inventory from Node objects: allocatable GPUs of schedulable, Ready nodes, matched to
accelerator types by the vendor's product label; capacity taken from it."""

from __future__ import annotations

from sluicegate.optimizer.inputs import Accelerator
from sluicegate.optimizer.inventory import node_inventory

ACCS = (Accelerator(name="A100", device="NVIDIA-A100-PCIE-80GB", cost=40.0),
        Accelerator(name="MI300X", device="AMD-MI300X-192GB", cost=65.0),
        Accelerator(name="L40S", device="NVIDIA-L40S", cost=32.0))


def _node(labels: dict, allocatable: dict, ready: bool = True, cordoned: bool = False) -> dict:
    return {"metadata": {"labels": labels}, "spec": {"unschedulable": cordoned},
            "status": {"allocatable": allocatable,
                       "conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_units_are_summed_per_accelerator_type_by_product_label() -> None:
    nodes = [
        _node({"nvidia.com/gpu.product": "NVIDIA-A100-PCIE-80GB"}, {"nvidia.com/gpu": "8"}),
        _node({"nvidia.com/gpu.product": "nvidia-a100-pcie-80gb"}, {"nvidia.com/gpu": "4"}),
        _node({"amd.com/gpu.product-name": "AMD-MI300X-192GB"}, {"amd.com/gpu": "8"}),
        _node({"nvidia.com/gpu.product": "NVIDIA-H200"}, {"nvidia.com/gpu": "8"}),
        _node({}, {"cpu": "64"}),
    ]
    inv = node_inventory(nodes, ACCS)
    assert inv.counts == {"A100": 12, "MI300X": 8}
    assert inv.unmatched == {"NVIDIA-H200": 8}


def test_cordoned_and_not_ready_nodes_offer_nothing() -> None:
    label = {"nvidia.com/gpu.product": "NVIDIA-L40S"}
    nodes = [_node(label, {"nvidia.com/gpu": "2"}, cordoned=True),
             _node(label, {"nvidia.com/gpu": "2"}, ready=False),
             _node(label, {"nvidia.com/gpu": "2"})]
    assert node_inventory(nodes, ACCS).counts == {"L40S": 2}
