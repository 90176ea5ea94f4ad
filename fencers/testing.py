"""`FakeFencer`: a real in-memory driver for unit tests of everything that uses `Fencer`.

It keeps a power state per target, records every call, and can be told to fail, to hang past a deadline
(by raising the same FenceError a real deadline raises), to take effect late (OFF only after N more status
reads), or to be blind to power like SSH.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arbiter.model import Power
from fencers.base import FenceError


@dataclass
class FakeFencer:
    driver: str = "fake"
    device: str = "fake device"
    observes_power: bool = True
    power: dict[str, Power] = field(default_factory=dict)  # target → state; absent targets are ON
    fail_off: str | None = None  # message of the FenceError power_off raises
    fail_on: str | None = None
    fail_check: str | None = None
    status_unknown: bool = False  # status reads UNKNOWN (a dead BMC)
    off_after_reads: int = 0  # power_off takes effect only after this many further status reads
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, target) in call order
    _pending_off: dict[str, int] = field(default_factory=dict)

    def power_off(self, target: str) -> None:
        self.calls.append(("power_off", target))
        if self.fail_off is not None:
            raise FenceError(f"{self.device}: {self.fail_off}")
        if self.off_after_reads:
            self._pending_off[target] = self.off_after_reads
        else:
            self.power[target] = Power.OFF

    def power_on(self, target: str) -> None:
        self.calls.append(("power_on", target))
        if self.fail_on is not None:
            raise FenceError(f"{self.device}: {self.fail_on}")
        self._pending_off.pop(target, None)
        self.power[target] = Power.ON

    def status(self, target: str) -> Power:
        self.calls.append(("status", target))
        if target in self._pending_off:
            self._pending_off[target] -= 1
            if self._pending_off[target] <= 0:
                del self._pending_off[target]
                self.power[target] = Power.OFF
        if self.status_unknown or not self.observes_power:
            return Power.UNKNOWN
        return self.power.get(target, Power.ON)

    def check(self, target: str) -> str:
        self.calls.append(("check", target))
        if self.fail_check is not None:
            raise FenceError(f"{self.device}: {self.fail_check}")
        return f"{self.device}: logged in; {target} power {self.power.get(target, Power.ON).value}"
