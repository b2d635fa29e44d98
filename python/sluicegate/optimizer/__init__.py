"""Optimizer: picks an accelerator type and replica count per model from a queueing model of
the model server, the models' SLO classes, accelerator costs and cluster capacity, in the
workload-variant-autoscaler's input shapes (see `config`)."""

from pathlib import Path


def samples_dir() -> Path:
    """Example inputs in the autoscaler's shapes (`sluicegate optimize --config` takes the
    directory)."""
    return Path(__file__).parent / "samples"
