"""The activator's settings, read from the InferencePool's `activator.llm-d.ai/*` annotations.

A pool without `target-name` has no activator. Anything present but unusable is a ConfigError
naming the annotation and its value; the caller reports it and leaves the pool unmanaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import ConfigError
from ..flowcontrol.config import _duration_ms

PREFIX = "activator.llm-d.ai/"
API_VERSION = PREFIX + "target-apiversion"
KIND = PREFIX + "target-kind"
NAME = PREFIX + "target-name"
GRACE = PREFIX + "scale-from-zero-grace-period"
DELAY = PREFIX + "scale-down-delay"

DEFAULT_API_VERSION = "apps/v1"
DEFAULT_KIND = "Deployment"
DEFAULT_GRACE_S = 60.0  # as upstream
DEFAULT_DELAY_S = 120.0  # as upstream


@dataclass(frozen=True)
class Target:
    """The workload behind the pool, scaled through its `scale` subresource."""

    api_version: str
    kind: str
    name: str

    @property
    def group_version(self) -> tuple[str, str]:
        group, _, version = self.api_version.rpartition("/")
        return group, version

    def __str__(self) -> str:
        return f"{self.kind} {self.name} ({self.api_version})"


@dataclass(frozen=True)
class ActivatorSpec:
    target: Target
    grace_s: float = DEFAULT_GRACE_S  # how long requests wait for the first ready endpoint
    scale_down_delay_s: float = DEFAULT_DELAY_S  # idle time before 1 → 0 (with --enable-scale-to-zero)


def parse_annotations(annotations: Mapping[str, str] | None) -> ActivatorSpec | None:
    """None when the pool does not ask for an activator (no activator.llm-d.ai/* annotation)."""
    ann = {k: v for k, v in (annotations or {}).items() if k.startswith(PREFIX)}
    if not ann:
        return None
    name = ann.get(NAME, "")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{NAME}: {name!r} is missing or empty; it names the workload to scale")
    api_version = _text(ann, API_VERSION, DEFAULT_API_VERSION)
    group, _, version = api_version.rpartition("/")
    if not version or "/" in group or (group == "" and "/" in api_version):
        raise ConfigError(f"{API_VERSION}: {api_version!r} is not an apiVersion like 'apps/v1'")
    kind = _text(ann, KIND, DEFAULT_KIND)
    if not kind[0].isupper() or not kind.isalnum():
        raise ConfigError(f"{KIND}: {kind!r} is not a kind like 'Deployment'")
    return ActivatorSpec(Target(api_version, kind, name.strip()), positive_seconds(ann, GRACE, DEFAULT_GRACE_S),
                         positive_seconds(ann, DELAY, DEFAULT_DELAY_S))


def _text(ann: Mapping[str, str], key: str, default: str) -> str:
    value = ann.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: {value!r} is empty")
    return value.strip()


def positive_seconds(m: Mapping[str, object], key: str, default: float, where: str = "") -> float:
    """m[key] as a Go duration ("60s", "2m") in seconds, > 0; `default` when absent."""
    if key not in m:
        return default
    name = f"{where}.{key}" if where else key
    ms = _duration_ms(m[key], name)
    if ms <= 0:
        raise ConfigError(f"{name}: {m[key]!r} must be longer than zero")
    return ms / 1000
