"""Kubernetes mode: InferencePool/Pod/InferenceObjective/InferenceModelRewrite watchers and Lease-based
leader election. Read-only towards the API apart from the Lease: the EPP writes no status."""

from .leader import LeaderElector
from .policies import RewriteTable
from .watcher import KubeOptions, PoolWatcher, api_client

__all__ = ["KubeOptions", "LeaderElector", "PoolWatcher", "RewriteTable", "api_client"]
