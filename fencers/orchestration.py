"""How a node is fenced, whatever the drivers: the workflow every driver shares (as fence-agents' library owns it).

- Levels are tried in order; a level succeeds only when *every* device of it succeeded (two PDUs of a node
  with two power supplies), otherwise the next level is tried.
- A device that already reads OFF is a success. Otherwise: send power-off, then poll status on a monotonic
  deadline (`fencing.power_timeout_ms` from the level's start). Success only on an observed OFF.
- A device that cannot read power (SSH) is confirmed by another level's device that can (status OFF), or by
  the configured weaker proof: the node silent on every heartbeat medium and to pings for `confirm_ms`. The
  event names the proof used.
- Without the lease token (Redis unreachable) the fence waits this node's race delay first and asks whether it
  is still wanted (still alive itself, peer still silent): of two partitioned nodes the one with the shorter
  delay powers the other off, and the other, powered off, never gets to act.
- A node fenced OFF is not fenced again within `hold_down_ms` unless it came back (heard again, or powered on
  by us); a fence already running for a node is joined, not started twice.
- Every device attempt is a `FenceAttempt` event: node, level, driver, device, token, duration, result, proof.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from arbiter.config import Config
from arbiter.model import FenceOutcome, Power
from fencers import registry
from fencers.base import FenceError, Fencer

log = logging.getLogger(__name__)

Level = Sequence[Fencer]
# Seconds the node has been silent on every heartbeat medium and to pings; None when nothing tells.
Silence = Callable[[str], float | None]
POLL_FIRST = 0.02  # a BMC usually switches at once: look again soon, then back off
POLL_MAX = 1.0


@dataclass(frozen=True)
class FenceAttempt:
    node: str
    level: int  # 1-based position in the node's level list
    driver: str
    device: str
    token: int | None
    started: float  # monotonic
    duration: float
    # off | already-off | failed | unconfirmed | aborted | held-down | on
    result: str
    proof: str = ""
    detail: str = ""


@dataclass(frozen=True)
class FenceReport:
    node: str
    outcome: FenceOutcome  # OFF (proven) or FAILED
    token: int | None
    reason: str
    proof: str = ""
    attempts: tuple[FenceAttempt, ...] = ()

    @property
    def off(self) -> bool:
        return self.outcome is FenceOutcome.OFF


@dataclass
class _NodeRecord:
    fenced_at: float | None = None  # last OFF proven, cleared when the node comes back
    report: FenceReport | None = None
    running: asyncio.Task[FenceReport] | None = field(default=None, repr=False)


class Orchestrator:
    def __init__(
        self,
        levels: Mapping[str, Sequence[Level]],
        *,
        power_timeout: float,
        race_delay: float = 0.0,
        hold_down: float = 60.0,
        confirm: float = 5.0,
        silence: Silence | None = None,
        on_event: Callable[[FenceAttempt], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.levels = {node: [list(level) for level in node_levels] for node, node_levels in levels.items()}
        self.power_timeout = power_timeout
        self.race_delay = race_delay
        self.hold_down = hold_down
        self.confirm = confirm
        self._silence = silence
        self._on_event = on_event
        self._clock = clock
        self._sleep = sleep
        self._records: dict[str, _NodeRecord] = {node: _NodeRecord() for node in self.levels}

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        *,
        drawn_delay_ms: int | None = None,
        silence: Silence | None = None,
        on_event: Callable[[FenceAttempt], None] | None = None,
    ) -> Orchestrator:
        """Drivers for every peer's levels; the random part of the race delay is drawn once, here or given."""
        if drawn_delay_ms is None:
            drawn_delay_ms = random.randint(0, cfg.fencing.random_delay_ms)
        timeout = cfg.fencing.power_timeout_ms / 1000
        levels = {
            peer.name: [[registry.build(device, timeout) for device in level] for level in peer.fence_levels()]
            for peer in cfg.peer
        }
        return cls(
            levels,
            power_timeout=timeout,
            race_delay=(cfg.fencing.delay_ms + drawn_delay_ms) / 1000,
            hold_down=cfg.fencing.hold_down_ms / 1000,
            confirm=cfg.fencing.confirm_ms / 1000,
            silence=silence,
            on_event=on_event,
        )

    # --- what the agent and the CLI call ------------------------------------------------------------------

    def close(self) -> None:
        """Release every device's resources (IPMI worker processes, SSH sessions); later calls reopen them."""
        for levels in self.levels.values():
            for level in levels:
                for fencer in level:
                    close = getattr(fencer, "close", None)
                    if close is not None:
                        close()

    def came_back(self, node: str) -> None:
        """The node was heard again (or powered on): a later fence is a new one, not held down."""
        self._record(node).fenced_at = None

    def last(self, node: str) -> FenceReport | None:
        return self._record(node).report

    async def fence(
        self, node: str, *, token: int | None, why: str, still_wanted: Callable[[], bool] | None = None
    ) -> FenceReport:
        record = self._record(node)
        if record.running is not None and not record.running.done():
            return await asyncio.shield(record.running)
        now = self._clock()
        if record.fenced_at is not None and now - record.fenced_at < self.hold_down and record.report is not None:
            held = self._event(node, 0, "-", "-", token, now, "held-down", record.report.proof, why)
            return FenceReport(
                node,
                FenceOutcome.OFF,
                token,
                f"fenced {now - record.fenced_at:.1f}s ago (hold-down {self.hold_down:g}s); not fencing again",
                record.report.proof,
                (held,),
            )
        record.running = asyncio.ensure_future(self._fence(node, token, why, still_wanted))
        try:
            report = await asyncio.shield(record.running)
        finally:
            if record.running.done():
                record.running = None
        record.report = report
        if report.off:
            record.fenced_at = self._clock()
        return report

    async def status(self, node: str) -> tuple[Power, str]:
        """The first definite power reading over the levels in order, and the device that gave it."""
        for level in self._levels(node):
            for fencer in level:
                if fencer.observes_power:
                    power = await asyncio.to_thread(fencer.status, node)
                    if power is not Power.UNKNOWN:
                        return power, fencer.device
        return Power.UNKNOWN, ""

    async def power_on(self, node: str) -> tuple[bool, str]:
        """Power on through the first level whose every device can; clears the hold-down."""
        problems = []
        for number, level in enumerate(self._levels(node), start=1):
            started = self._clock()
            try:
                await asyncio.gather(*(asyncio.to_thread(f.power_on, node) for f in level))
            except FenceError as exc:
                problems.append(f"level {number}: {exc}")
                continue
            for fencer in level:
                self._event(node, number, fencer.driver, fencer.device, None, started, "on", "", "power on")
            self.came_back(node)
            return True, f"powered on through level {number} ({', '.join(f.device for f in level)})"
        return False, "; ".join(problems) or f"no fence level configured for {node}"

    async def check(self, node: str) -> list[tuple[int, Fencer, bool, str]]:
        """Log in to every device of every level without touching power: (level, device, ok, summary)."""
        results = []
        for number, level in enumerate(self._levels(node), start=1):
            for fencer in level:
                try:
                    results.append((number, fencer, True, await asyncio.to_thread(fencer.check, node)))
                except FenceError as exc:
                    results.append((number, fencer, False, str(exc)))
        return results

    # --- the workflow -------------------------------------------------------------------------------------

    async def _fence(
        self, node: str, token: int | None, why: str, still_wanted: Callable[[], bool] | None
    ) -> FenceReport:
        levels = self._levels(node)
        attempts: list[FenceAttempt] = []
        if not levels:
            return FenceReport(node, FenceOutcome.FAILED, token, f"no fence level configured for {node}")
        if token is None and self.race_delay > 0:
            # Without the lease nothing orders the two sides: the race delay does.
            started = self._clock()
            await self._sleep(self.race_delay)
            if still_wanted is not None and not still_wanted():
                attempts.append(
                    self._event(node, 0, "-", "-", None, started, "aborted", "", "not wanted after race delay")
                )
                return FenceReport(
                    node,
                    FenceOutcome.FAILED,
                    None,
                    f"aborted after the race delay of {self.race_delay:g}s: no longer wanted",
                    attempts=tuple(attempts),
                )
        failures = []
        for number, level in enumerate(levels, start=1):
            if still_wanted is not None and not still_wanted():
                attempts.append(self._event(node, number, "-", "-", token, self._clock(), "aborted", "", why))
                return FenceReport(node, FenceOutcome.FAILED, token, "aborted: no longer wanted", "", tuple(attempts))
            ok, proof, level_attempts = await self._level(node, number, level, levels, token, why)
            attempts += level_attempts
            if ok:
                devices = ", ".join(f.device for f in level)
                reason = f"{node} is off: level {number} ({devices}); {proof}"
                log.warning("fenced %s (token %s, %s): %s", node, token, why, reason)
                return FenceReport(node, FenceOutcome.OFF, token, reason, proof, tuple(attempts))
            failures.append(f"level {number}: " + "; ".join(a.detail for a in level_attempts if a.detail))
        reason = f"fencing {node} failed on every level: " + " | ".join(failures)
        log.error("%s (token %s, %s)", reason, token, why)
        return FenceReport(node, FenceOutcome.FAILED, token, reason, "", tuple(attempts))

    async def _level(
        self, node: str, number: int, level: Level, levels: Sequence[Level], token: int | None, why: str
    ) -> tuple[bool, str, list[FenceAttempt]]:
        deadline = self._clock() + self.power_timeout
        results = await asyncio.gather(
            *(self._device(node, number, fencer, levels, token, why, deadline) for fencer in level)
        )
        attempts = [attempt for attempt, _ in results]
        ok = all(attempt.result in ("off", "already-off") for attempt in attempts)
        return ok, "; ".join(proof for _, proof in results if proof), attempts

    async def _device(
        self,
        node: str,
        number: int,
        fencer: Fencer,
        levels: Sequence[Level],
        token: int | None,
        why: str,
        deadline: float,
    ) -> tuple[FenceAttempt, str]:
        started = self._clock()

        def event(result: str, proof: str = "", detail: str = "") -> tuple[FenceAttempt, str]:
            attempt = self._event(node, number, fencer.driver, fencer.device, token, started, result, proof, detail)
            return attempt, proof

        if fencer.observes_power and await asyncio.to_thread(fencer.status, node) is Power.OFF:
            return event("already-off", f"status OFF read from {fencer.device} before any power-off")
        try:
            await asyncio.wait_for(asyncio.to_thread(fencer.power_off, node), max(0.0, deadline - self._clock()))
        except FenceError as exc:
            return event("failed", detail=str(exc))
        except TimeoutError:
            return event("failed", detail=f"{fencer.device}: power-off not accepted within {self.power_timeout:g}s")
        pause = POLL_FIRST
        while True:
            proof = await self._proof(node, fencer, levels)
            if proof:
                return event("off", proof)
            if self._clock() + pause > deadline:
                detail = f"{fencer.device}: power-off sent, OFF not confirmed within {self.power_timeout:g}s"
                return event("unconfirmed", detail=detail)
            await self._sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    async def _proof(self, node: str, fencer: Fencer, levels: Sequence[Level]) -> str:
        """Why the node is known OFF now, or "" if it is not (yet)."""
        if fencer.observes_power:
            if await asyncio.to_thread(fencer.status, node) is Power.OFF:
                return f"status OFF read from {fencer.device}"
            return ""
        # A blind device (SSH): any device of any level that reads power, then the weaker proof.
        for level in levels:
            for other in level:
                if other.observes_power and await asyncio.to_thread(other.status, node) is Power.OFF:
                    return f"status OFF read from {other.device} (another level)"
        silent = self._silence(node) if self._silence is not None else None
        if silent is not None and silent >= self.confirm:
            return f"silent on every heartbeat medium and to pings for {silent:.1f}s (confirm_ms {self.confirm:g}s)"
        return ""

    def _levels(self, node: str) -> list[list[Fencer]]:
        if node not in self.levels:
            raise FenceError(f"unknown node {node!r}; fenceable: {', '.join(sorted(self.levels)) or 'none'}")
        return self.levels[node]

    def _record(self, node: str) -> _NodeRecord:
        self._levels(node)
        return self._records[node]

    def _event(
        self,
        node: str,
        level: int,
        driver: str,
        device: str,
        token: int | None,
        started: float,
        result: str,
        proof: str,
        detail: str,
    ) -> FenceAttempt:
        attempt = FenceAttempt(
            node, level, driver, device, token, started, self._clock() - started, result, proof, detail
        )
        log.info(
            "fence %s level %d %s (%s): %s in %.3fs token=%s proof=%r %s",
            node,
            level,
            driver,
            device,
            result,
            attempt.duration,
            token,
            proof,
            detail,
        )
        if self._on_event is not None:
            self._on_event(attempt)
        return attempt
