"""LoRA adapter slots on the simulated GPU: at most `max_loras` adapters resident, those with
running requests pinned, the least recently used idle one swapped out to load another."""

from __future__ import annotations

from collections import OrderedDict


class LoraSlots:
    def __init__(self, max_loras: int) -> None:
        self.max_loras = max_loras
        self._resident: OrderedDict[str, int] = OrderedDict()  # adapter -> running requests
        self.loads = 0

    def resident(self) -> list[str]:
        return list(self._resident)

    def acquire(self, adapter: str) -> bool | None:
        """Pin `adapter` for one running request. Returns False if it was resident, True if it
        had to be loaded (the caller charges the load time), None if no slot can be freed."""
        if adapter in self._resident:
            self._resident[adapter] += 1
            self._resident.move_to_end(adapter)
            return False
        if len(self._resident) >= self.max_loras:
            idle = next((a for a, n in self._resident.items() if n == 0), None)
            if idle is None:
                return None
            del self._resident[idle]
        self._resident[adapter] = 1
        self.loads += 1
        return True

    def release(self, adapter: str) -> None:
        self._resident[adapter] -= 1
