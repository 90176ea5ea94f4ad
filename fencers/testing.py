"""`FakeFencer`: a real in-memory driver for unit tests of everything that uses `Fencer`.

It keeps a power state per target, records every call, and can be told to fail, to hang past a deadline
(by raising the same FenceError a real deadline raises), to take effect late (OFF only after N more status
reads), or to be blind to power like SSH.

It can also be slow, as a BMC that answers late: each call takes `delay` seconds and/or waits until the test sets
`answer` (a real wait in the calling thread). Like the real drivers, a call is bounded by its `timeout` (the
caller's, else `self.timeout`) and *stopped* there: it then does nothing (status reads UNKNOWN, power calls raise
FenceError), so it never acts after its caller gave up. `sent` records when each call really acted on the
device (monotonic time), so a test can tell whether anything acted after a fence was reported.
"""

from __future__ import annotations

import threading
import time
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
    timeout: float = 5.0  # a call's bound when its caller gives none (a real driver's own timeout)
    delay: float = 0.0  # seconds every call takes before the device acts (a slow BMC)
    answer: threading.Event | None = None  # when given, every call waits until it is set (a BMC that hangs)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, target) in call order
    timeouts: list[float | None] = field(default_factory=list)  # the `timeout` each call got, in call order
    sent: list[tuple[str, str, float]] = field(default_factory=list)  # (method, target, monotonic) when it acted
    _pending_off: dict[str, int] = field(default_factory=dict)
    _busy: int = 0
    _idle: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def power_off(self, target: str, timeout: float | None = None) -> None:
        self._called("power_off", target, timeout)
        try:
            if self.fail_off is not None:
                raise FenceError(f"{self.device}: {self.fail_off}")
            self._go("power_off", target, timeout)
            if self.off_after_reads:
                self._pending_off[target] = self.off_after_reads
            else:
                self.power[target] = Power.OFF
        finally:
            self._done()

    def power_on(self, target: str, timeout: float | None = None) -> None:
        self._called("power_on", target, timeout)
        try:
            if self.fail_on is not None:
                raise FenceError(f"{self.device}: {self.fail_on}")
            self._go("power_on", target, timeout)
            self._pending_off.pop(target, None)
            self.power[target] = Power.ON
        finally:
            self._done()

    def status(self, target: str, timeout: float | None = None) -> Power:
        self._called("status", target, timeout)
        try:
            self._go("status", target, timeout)
        except FenceError:
            return Power.UNKNOWN
        finally:
            self._done()
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

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no call is running in any thread; False if one still is after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def _called(self, method: str, target: str, timeout: float | None) -> None:
        self.calls.append((method, target))
        self.timeouts.append(timeout)
        with self._idle:
            self._busy += 1

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def _go(self, method: str, target: str, timeout: float | None) -> None:
        """Wait as a slow device does, within the call's bound; record the call as sent, or stop it there."""
        bound = max(0.0, self.timeout if timeout is None else timeout)
        give_up = time.monotonic() + bound
        stopped = FenceError(f"{self.device} {method}: no answer within {bound:.3g}s (call stopped)")
        if self.delay > bound:
            time.sleep(bound)
            raise stopped
        if self.delay:
            time.sleep(self.delay)
        if self.answer is not None and not self.answer.wait(max(0.0, give_up - time.monotonic())):
            raise stopped
        self.sent.append((method, target, time.monotonic()))
