"""Endpoint state: discovery (file or Kubernetes) and model-server metrics."""
