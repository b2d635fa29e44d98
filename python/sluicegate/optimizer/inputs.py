"""The optimizer's inputs as frozen values: service classes, accelerator types, per-variant
performance profiles and state, and the observed load per model. Parsing from the
workload-variant-autoscaler's YAML shapes lives in `config`; nothing below it sees raw dicts."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sluicegate.errors import ConfigError

# The autoscaler falls back to this model's SLO when a model is listed in no class.
DEFAULT_MODEL = "default/default"


@dataclass(frozen=True)
class ModelSlo:
    model: str
    ttft_ms: float  # slo-ttft
    itl_ms: float  # slo-tpot


@dataclass(frozen=True)
class ServiceClass:
    name: str
    priority: int  # 1 is the highest
    slos: tuple[ModelSlo, ...]
    key: str = ""  # the data key of service-classes-config holding it (e.g. premium.yaml)

    def slo_for(self, model: str) -> ModelSlo | None:
        return next((s for s in self.slos if s.model == model), None)


@dataclass(frozen=True)
class Accelerator:
    name: str  # e.g. A100; what AcceleratorProfile.acc refers to
    device: str
    cost: float  # cents per hour per unit
    count: int | None = None  # units in the cluster; None = not limited


@dataclass(frozen=True)
class AcceleratorProfile:
    """How one replica of a model performs on `acc_count` units of accelerator `acc`."""

    acc: str
    acc_count: int
    alpha: float  # decodeParms: itl = alpha + beta * batch (ms)
    beta: float
    gamma: float  # prefillParms: prefill = gamma + delta * input_tokens * batch (ms)
    delta: float
    max_batch: int


@dataclass(frozen=True)
class ScaleTarget:
    kind: str
    name: str
    api_version: str = "apps/v1"


@dataclass(frozen=True)
class Variant:
    """A VariantAutoscaling: one model-server deployment whose size the optimizer picks."""

    name: str
    namespace: str
    model: str
    slo_class_ref: tuple[str, str]  # sloClassRef (name, key); ("", "") when absent
    profiles: tuple[AcceleratorProfile, ...]
    min_replicas: int = 0
    max_replicas: int | None = None
    scale_to_zero: bool | None = None  # None: decided by the scale-to-zero config
    variant_cost: float | None = None  # spec.variantCost, cents/hour per replica
    variant_id: str = ""
    scale_target: ScaleTarget | None = None
    current_replicas: int | None = None  # status.currentAlloc.numReplicas
    current_accelerator: str = ""  # status.desiredOptimizedAlloc.accelerator of the last run
    # status.conditions as (type, status, lastTransitionTime): a condition's time moves only
    # when its status does
    conditions: tuple[tuple[str, str, str], ...] = ()
    max_queue_per_batch: float = 10.0  # Q = this * max batch: vLLM's waiting-queue headroom

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ModelLoad:
    """Observed load on one model: from the EPP's request accounting or Prometheus."""

    model: str
    arrival_rps: float
    input_tokens: float
    output_tokens: float
    namespace: str = ""  # "" = the model in every namespace

    def __post_init__(self) -> None:
        for name in ("arrival_rps", "input_tokens"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"ModelLoad({self.model}).{name}={getattr(self, name)!r}: "
                                  "must be >= 0")
        if not self.output_tokens >= 1:
            raise ConfigError(f"ModelLoad({self.model}).output_tokens={self.output_tokens!r}: "
                              "must be >= 1")


@dataclass(frozen=True)
class ScaleToZeroRule:
    """One entry of wva-model-scale-to-zero-config: `model` "" is the default entry."""

    enabled: bool
    model: str = ""
    namespace: str = ""


class SaturationPolicy(str, Enum):
    """What to do with capacity left once every SLO that fits is met."""

    NONE = "none"  # nothing more
    PRIORITY_EXHAUSTIVE = "priority-exhaustive"  # unmet variants by priority, each fully
    PRIORITY_ROUND_ROBIN = "priority-round-robin"  # one replica at a time within a priority
    ROUND_ROBIN = "round-robin"  # one replica at a time across all unmet variants

    @classmethod
    def parse(cls, text: str) -> SaturationPolicy:
        # The workload-variant-autoscaler spells these None / PriorityExhaustive / ...
        folded = "".join(ch for ch in text.lower() if ch.isalpha())
        for policy in cls:
            if policy.value.replace("-", "") == folded:
                return policy
        raise ConfigError(f"saturationPolicy={text!r}: expected one of "
                          f"{', '.join(p.value for p in cls)}")


@dataclass(frozen=True)
class OptimizerInput:
    service_classes: tuple[ServiceClass, ...]
    accelerators: tuple[Accelerator, ...]
    variants: tuple[Variant, ...]
    loads: tuple[ModelLoad, ...]
    saturation_policy: SaturationPolicy = SaturationPolicy.NONE
    min_served_fraction: float = 0.99
    unlimited: bool = False  # ignore accelerator counts (capacity planning, cloud)
    switch_tolerance: float = 0.1  # keep the serving accelerator while within 10% of the best
    scale_to_zero: tuple[ScaleToZeroRule, ...] = ()

    def accelerator(self, name: str) -> Accelerator | None:
        return next((a for a in self.accelerators if a.name == name), None)

    def load_of(self, model: str, namespace: str) -> ModelLoad | None:
        exact = [x for x in self.loads if x.model == model and x.namespace == namespace]
        return (exact or [x for x in self.loads if x.model == model and not x.namespace]
                or [None])[0]

    def scale_to_zero_for(self, v: Variant) -> bool:
        """spec.scaleToZero, else the most specific scale-to-zero rule, else off."""
        if v.scale_to_zero is not None:
            return v.scale_to_zero
        ranked = sorted((r for r in self.scale_to_zero
                         if r.model in ("", v.model) and r.namespace in ("", v.namespace)),
                        key=lambda r: (r.model != "", r.namespace != ""), reverse=True)
        return ranked[0].enabled if ranked else False


@dataclass(frozen=True)
class MetricsStatus:
    """The MetricsAvailable condition of a model's variants: whether its servers' metrics
    could be read (reason MetricsFound, MetricsMissing, MetricsStale or PrometheusError)."""

    available: bool
    reason: str
    message: str


@dataclass(frozen=True)
class ModelObservation:
    """What the servers of one model report (Prometheus, or the EPP's and pods' /metrics):
    the load sized for, the mean TTFT and ITL they achieve, and whether metrics were there."""

    model: str
    namespace: str
    metrics: MetricsStatus
    load: ModelLoad | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
