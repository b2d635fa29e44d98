"""Seeded random optimizer inputs of a given size (models × accelerator types) with plausible
performance profiles, SLOs and loads: what the property tests and the solver benches run on."""

from __future__ import annotations

import random

from .inputs import (Accelerator, AcceleratorProfile, ModelLoad, ModelSlo, OptimizerInput,
                     SaturationPolicy, ServiceClass, Variant)


def random_input(seed: int, models: int, accelerators: int, *, scarcity: float = 0.6,
                 policy: SaturationPolicy = SaturationPolicy.NONE,
                 unlimited: bool = False, floors: bool = False) -> OptimizerInput:
    """`scarcity` scales capacity: ~1 fits every model on its cheapest type, lower is tighter;
    `floors` gives variants random minReplicas (0-4), some beyond what the cluster holds."""
    rng = random.Random(seed)
    accs = tuple(Accelerator(name=f"ACC{j}", device=f"device-{j}",
                             cost=round(rng.uniform(10, 120), 2), count=0)
                 for j in range(accelerators))
    classes = (ServiceClass(name="Premium", priority=1, slos=(), key="premium.yaml"),
               ServiceClass(name="Standard", priority=5, slos=(), key="standard.yaml"),
               ServiceClass(name="Batch", priority=10, slos=(), key="batch.yaml"))
    slos: dict[str, list[ModelSlo]] = {c.name: [] for c in classes}
    variants, loads = [], []
    for i in range(models):
        model = f"org/model-{i}"
        cls = classes[rng.randrange(len(classes))]
        slos[cls.name].append(ModelSlo(model=model, ttft_ms=rng.choice([500, 1000, 2000]),
                                       itl_ms=rng.choice([30.0, 60.0, 120.0])))
        size = rng.uniform(0.5, 3.0)  # how heavy the model is
        profiles = []
        for a in accs:
            speed = rng.uniform(0.6, 1.6)
            profiles.append(AcceleratorProfile(
                acc=a.name, acc_count=rng.choice([1, 1, 2, 4]),
                alpha=round(8 * size / speed, 3), beta=round(0.2 * size / speed, 4),
                gamma=round(6 * size / speed, 3), delta=round(0.02 * size / speed, 5),
                max_batch=rng.choice([16, 32, 64])))
        variants.append(Variant(name=f"model-{i}", namespace="bench", model=model,
                                slo_class_ref=("service-classes-config", cls.key),
                                profiles=tuple(profiles), max_replicas=64,
                                min_replicas=rng.choice([0, 0, 1, 2, 4]) if floors else 0))
        loads.append(ModelLoad(model=model, arrival_rps=round(rng.uniform(0.5, 30), 3),
                               input_tokens=rng.choice([128, 512, 1024]),
                               output_tokens=rng.choice([64, 128, 256])))
    classes = tuple(ServiceClass(name=c.name, priority=c.priority, slos=tuple(slos[c.name]),
                                 key=c.key) for c in classes)
    # Capacity: roughly what every model would need on a uniformly drawn type, scaled.
    per_acc = max(1, int(scarcity * models * 6 / max(accelerators, 1)))
    accs = tuple(Accelerator(name=a.name, device=a.device, cost=a.cost,
                             count=rng.randint(per_acc // 2, per_acc)) for a in accs)
    return OptimizerInput(service_classes=classes, accelerators=accs, variants=tuple(variants),
                          loads=tuple(loads), saturation_policy=policy, unlimited=unlimited)
