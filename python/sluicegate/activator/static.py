"""Static mode (endpoints from a file): the activator section of the EndpointPickerConfig, and
commands that play the scale subresource's role.

    activator:
      scale-up-command: ["./start-model.sh"]      # or one string, run by /bin/sh
      scale-down-command: "./stop-model.sh"
      scale-from-zero-grace-period: 60s
      scale-down-delay: 120s

The commands get SLUICEGATE_POOL and SLUICEGATE_REPLICAS (1 or 0) in their environment; the
scale-up command should return once the model server is started (readiness is the endpoints
file's business). A command that fails or outlives its timeout counts as not scaled.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError
from .activator import Managed
from .annotations import DEFAULT_DELAY_S, DEFAULT_GRACE_S, positive_seconds

log = logging.getLogger(__name__)

FIELDS = {"scale-up-command", "scale-down-command", "scale-from-zero-grace-period", "scale-down-delay"}
DOWN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class StaticActivatorSettings:
    scale_up_command: tuple[str, ...]
    scale_down_command: tuple[str, ...] | None
    grace_s: float = DEFAULT_GRACE_S
    scale_down_delay_s: float = DEFAULT_DELAY_S


def parse_static_activator(raw: Any, source: str) -> StaticActivatorSettings | None:
    """The `activator:` section; None when absent. ConfigError names the field and value."""
    if raw is None:
        return None
    where = f"{source}: activator"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field '{unknown[0]}'")
    up = _command(raw.get("scale-up-command"), f"{where}.scale-up-command")
    if up is None:
        raise ConfigError(f"{where}.scale-up-command: required (the command that starts the model server)")
    return StaticActivatorSettings(up, _command(raw.get("scale-down-command"), f"{where}.scale-down-command"),
                                   positive_seconds(raw, "scale-from-zero-grace-period", DEFAULT_GRACE_S, where),
                                   positive_seconds(raw, "scale-down-delay", DEFAULT_DELAY_S, where))


def _command(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        return ("/bin/sh", "-c", value)
    if isinstance(value, list) and value and all(isinstance(a, str) and a for a in value):
        return tuple(value)
    raise ConfigError(f"{where}: {value!r} is not a command (a non-empty string or list of strings)")


class CommandActuator:
    """Runs the configured commands on the two edges. Static mode cannot read replicas, so it
    remembers its last edge: a scale-down runs once until a scale-up has run again, and only
    while the pool has endpoints (`serving`). A failed command raises RuntimeError."""

    def __init__(self, pool: str, settings: StaticActivatorSettings) -> None:
        self.pool = pool
        self.settings = settings
        self.serving: Callable[[], bool] = lambda: True
        # Called when a command has finished: the endpoints it changed are read at once.
        self.after_command: Callable[[], None] = lambda: None
        self._at_zero = False

    async def scale_up(self) -> bool:
        await self._run(self.settings.scale_up_command, 1, self.settings.grace_s)
        self._at_zero = False
        return True

    async def scale_down(self) -> bool:
        if self._at_zero or self.settings.scale_down_command is None or not self.serving():
            return False
        await self._run(self.settings.scale_down_command, 0, DOWN_TIMEOUT_S)
        self._at_zero = True
        return True

    async def _run(self, argv: tuple[str, ...], replicas: int, timeout: float) -> None:
        """Run one command to completion; RuntimeError naming it when it fails or overruns."""
        env = {**os.environ, "SLUICEGATE_POOL": self.pool, "SLUICEGATE_REPLICAS": str(replicas)}
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.CancelledError:
            proc.kill()
            raise
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"{argv[0]} did not finish within {timeout:g} s") from None
        self.after_command()
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {err.decode(errors='replace').strip()[-500:]}")


class StaticSource:
    """`Source` for static mode: the settings never change."""

    def __init__(self, pool: str, settings: StaticActivatorSettings) -> None:
        self.actuator = CommandActuator(pool, settings)
        self._managed = Managed(settings.grace_s, settings.scale_down_delay_s, self.actuator,
                                f"command {settings.scale_up_command[-1]!r}")

    async def current(self) -> Managed:
        return self._managed


def static_activator(pool: str, flow, router, settings: StaticActivatorSettings,
                     after_command: Callable[[], None] | None = None):
    """Static mode's activator; scales to zero only when a scale-down command is configured.
    `after_command` re-reads the endpoints once a scale command finished (file discovery's check)."""
    from .activator import Activator, servers_busy

    if flow is None:
        raise ConfigError("activator: needs flow control to hold requests while the pool is at zero; "
                          "add featureGates: [flowControl]")
    source = StaticSource(pool, settings)
    activator = Activator(pool, flow, source, scale_to_zero=settings.scale_down_command is not None,
                          servers_busy=servers_busy(router))
    source.actuator.serving = lambda: bool(activator.ready_endpoints)
    if after_command is not None:
        source.actuator.after_command = after_command
    return activator
