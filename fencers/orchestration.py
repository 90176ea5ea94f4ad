"""How a node is fenced, whatever the drivers: the workflow every driver shares (as fence-agents' library owns it).

- Levels are tried in order; a level succeeds only when *every* device of it succeeded (two PDUs of a node
  with two power supplies), otherwise the next level is tried.
- A device that already reads OFF is a success. Otherwise: send power-off, then poll status. Success only on an
  observed OFF.
- One deadline per level: every call of the level (status pre-check, power-off, confirming polls, and inside
  the drivers the wait for a per-BMC lock) runs under the one monotonic deadline `fencing.power_timeout_ms`
  from the level's start; each driver call gets what is left as its `timeout` and is *stopped* there (worker
  or agent killed). Calls are awaited, never abandoned, so nothing reaches a device after the fence has been
  reported. With the lease token, `lease_holds(token)` is asked right before each power-off; a token no longer
  held here sends nothing ("aborted").
- A device that cannot read power (SSH) is confirmed by another level's device that can (status OFF), or by
  the configured weaker proof: the node silent on every heartbeat medium and to pings for `confirm_ms`. The
  event names the proof used.
- Without the lease token (Redis unreachable) the fence waits this node's race delay first and asks whether it
  is still wanted (still alive itself, peer still silent): of two partitioned nodes the one with the shorter
  delay powers the other off, and the other, powered off, never gets to act.
- Hold-down: a node fenced OFF is not *power-cycled* again within `hold_down_ms` unless it came back (heard
  again, or powered on by us). It is never *assumed* OFF either: each request inside the hold-down reads power
  afresh through the devices that observe it (the level that fenced it first), under one deadline. OFF: the
  answer is OFF, its proof that read. UNKNOWN: FAILED (power unreadable, and no second power-off). ON: the
  fence was ineffective (`FenceReport.ineffective`); the levels after the one that fenced it are tried, and
  without one that works the answer is FAILED. A node with only blind levels (SSH) keeps the silence proof.
- Held-down answers are counted, not logged: the first one of a hold-down and any whose outcome changed are
  logged and emitted; repeats only count (`repeats(node)`, `FenceReport.repeats`).
- A fence already running for a node is joined, not started twice.
- Every device attempt is a `FenceAttempt` event: node, level, driver, device, token, duration, result, proof.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from arbiter.config import Config
from arbiter.model import FenceOutcome, Power
from fencers import registry
from fencers.base import FenceError, Fencer

log = logging.getLogger(__name__)

Level = Sequence[Fencer]
# Seconds the node has been silent on every heartbeat medium and to pings; None when nothing tells.
Silence = Callable[[str], float | None]
# Whether this node still holds the lease under this fencing token (asked right before each power-off).
LeaseHolds = Callable[[int], Awaitable[bool]]
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
    # off | already-off | failed | unconfirmed | aborted | held-down | ineffective | on
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
    # The node read ON again inside the hold-down after a fence had proven it OFF (an `ineffective` attempt).
    ineffective: bool = False
    # Held-down answers like the last one logged, counted instead of logged, in this hold-down so far.
    repeats: int = 0

    @property
    def off(self) -> bool:
        return self.outcome is FenceOutcome.OFF

    @property
    def read_off(self) -> bool:
        """OFF proven by a power status read made for this fence (not by silence alone, as for SSH)."""
        return self.off and self.proof.startswith("status OFF read")


@dataclass
class _NodeRecord:
    fenced_at: float | None = None  # last OFF proven by a fence, cleared when the node comes back
    fenced_level: int = 1  # the level that proved it OFF then
    report: FenceReport | None = None
    held: str | None = None  # outcome of the last held-down answer logged in this hold-down: off | unknown | on
    repeats: int = 0  # held-down answers not logged since (same outcome as `held`)
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
        record = self._record(node)
        record.fenced_at = None
        self._new_fence(record)

    def last(self, node: str) -> FenceReport | None:
        return self._record(node).report

    def repeats(self, node: str) -> int:
        """Held-down answers counted instead of logged since the node's last fence (or its return)."""
        return self._record(node).repeats

    async def fence(
        self,
        node: str,
        *,
        token: int | None,
        why: str,
        still_wanted: Callable[[], bool] | None = None,
        lease_holds: LeaseHolds | None = None,
    ) -> FenceReport:
        """Fence `node` (or, inside its hold-down, read its power afresh); a request already running is joined."""
        record = self._record(node)
        if record.running is not None and not record.running.done():
            return await asyncio.shield(record.running)
        record.running = asyncio.ensure_future(self._request(node, record, token, why, still_wanted, lease_holds))
        try:
            return await asyncio.shield(record.running)
        finally:
            if record.running is not None and record.running.done():
                record.running = None

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

    async def _request(
        self,
        node: str,
        record: _NodeRecord,
        token: int | None,
        why: str,
        still_wanted: Callable[[], bool] | None,
        lease_holds: LeaseHolds | None,
    ) -> FenceReport:
        if record.fenced_at is not None and self._clock() - record.fenced_at < self.hold_down:
            report = await self._held_down(node, record, token, why, still_wanted, lease_holds)
        else:
            self._new_fence(record)
            report = await self._fence(node, token, why, still_wanted, lease_holds)
            self._settle(record, report)
        record.report = report
        return report

    async def _held_down(
        self,
        node: str,
        record: _NodeRecord,
        token: int | None,
        why: str,
        still_wanted: Callable[[], bool] | None,
        lease_holds: LeaseHolds | None,
    ) -> FenceReport:
        """Inside the hold-down: no second power-cycle through the level that fenced the node, and no OFF
        without a power reading made for this request (or, with blind levels only, the silence proof)."""
        assert record.fenced_at is not None
        started = self._clock()
        ago = started - record.fenced_at
        held = f"fenced {ago:.1f}s ago; hold-down {self.hold_down:g}s: not power-cycled again"
        levels = self._levels(node)
        if not any(fencer.observes_power for level in levels for fencer in level):
            proof = self._silence_proof(node)
            if proof:
                attempt = self._held_event(record, "off", node, 0, "-", "-", token, started, "held-down", proof, why)
                return self._held_report(
                    record, node, FenceOutcome.OFF, token, f"{node} is off: {proof} ({held})", proof, attempt
                )
            reason = (
                f"{node} cannot be proven off: no device of it reads power, and it has not been silent on every "
                f"medium for confirm_ms {self.confirm:g}s ({held})"
            )
            attempt = self._held_event(record, "unknown", node, 0, "-", "-", token, started, "held-down", "", reason)
            return self._held_report(record, node, FenceOutcome.FAILED, token, reason, "", attempt)

        power, number, read = await self._read_power(node, record.fenced_level, started + self.power_timeout)
        driver = read[0].driver if read else "-"
        devices = ", ".join(fencer.device for fencer in read) or "-"
        if power is Power.OFF:
            proof = f"status OFF read from {devices} for this request ({held})"
            attempt = self._held_event(
                record, "off", node, number, driver, devices, token, started, "held-down", proof, why
            )
            return self._held_report(record, node, FenceOutcome.OFF, token, f"{node} is off: {proof}", proof, attempt)
        if power is Power.UNKNOWN:
            reason = (
                f"{node}: power could not be read through any device within {self.power_timeout:g}s; fenced "
                f"{ago:.1f}s ago, the hold-down ({self.hold_down:g}s) forbids power-cycling it again"
            )
            attempt = self._held_event(record, "unknown", node, 0, "-", "-", token, started, "held-down", "", reason)
            return self._held_report(record, node, FenceOutcome.FAILED, token, reason, "", attempt)

        # ON: the fence did not hold (powered on again by someone, a power restore).
        what = (
            f"{node} reads ON again {ago:.1f}s after it was fenced (hold-down {self.hold_down:g}s: not "
            f"power-cycled again through level {record.fenced_level})"
        )
        if record.fenced_level >= len(levels):
            reason = f"{what}; no further level"
            attempt = self._held_event(
                record, "on", node, number, driver, devices, token, started, "ineffective", "", reason, logging.ERROR
            )
            report = self._held_report(record, node, FenceOutcome.FAILED, token, reason, "", attempt)
            return replace(report, ineffective=True)
        # Escalate: a new fence through the levels after the one that did not hold.
        self._new_fence(record)
        attempt = self._event(
            node, number, driver, devices, token, started, "ineffective", "", what, severity=logging.WARNING
        )
        report = await self._fence(node, token, why, still_wanted, lease_holds, first=record.fenced_level + 1)
        report = replace(
            report, reason=f"{what}; {report.reason}", attempts=(attempt, *report.attempts), ineffective=True
        )
        self._settle(record, report)
        return report

    async def _fence(
        self,
        node: str,
        token: int | None,
        why: str,
        still_wanted: Callable[[], bool] | None,
        lease_holds: LeaseHolds | None,
        first: int = 1,
    ) -> FenceReport:
        """The levels from `first` on, in order, until one proves the node OFF."""
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
            if number < first:
                continue
            if still_wanted is not None and not still_wanted():
                attempts.append(self._event(node, number, "-", "-", token, self._clock(), "aborted", "", why))
                return FenceReport(node, FenceOutcome.FAILED, token, "aborted: no longer wanted", "", tuple(attempts))
            ok, proof, level_attempts = await self._level(node, number, level, levels, token, why, lease_holds)
            # An aborted attempt goes last: the agent reads the last attempt to tell an abort from a failure.
            attempts += sorted(level_attempts, key=lambda attempt: attempt.result == "aborted")
            if ok:
                devices = ", ".join(f.device for f in level)
                reason = f"{node} is off: level {number} ({devices}); {proof}"
                log.warning("fenced %s (token %s, %s): %s", node, token, why, reason)
                return FenceReport(node, FenceOutcome.OFF, token, reason, proof, tuple(attempts))
            aborted = [attempt.detail for attempt in level_attempts if attempt.result == "aborted"]
            if aborted:
                log.warning("fence of %s aborted (token %s, %s): %s", node, token, why, aborted[0])
                return FenceReport(node, FenceOutcome.FAILED, token, aborted[0], "", tuple(attempts))
            failures.append(f"level {number}: " + "; ".join(a.detail for a in level_attempts if a.detail))
        which = "every level" if first == 1 else f"every level from {first} on"
        reason = f"fencing {node} failed on {which}: " + " | ".join(failures)
        log.error("%s (token %s, %s)", reason, token, why)
        return FenceReport(node, FenceOutcome.FAILED, token, reason, "", tuple(attempts))

    async def _level(
        self,
        node: str,
        number: int,
        level: Level,
        levels: Sequence[Level],
        token: int | None,
        why: str,
        lease_holds: LeaseHolds | None,
    ) -> tuple[bool, str, list[FenceAttempt]]:
        deadline = self._clock() + self.power_timeout  # the one deadline of every call of this level
        results = await asyncio.gather(
            *(self._device(node, number, fencer, levels, token, why, deadline, lease_holds) for fencer in level)
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
        lease_holds: LeaseHolds | None,
    ) -> tuple[FenceAttempt, str]:
        started = self._clock()

        def event(result: str, proof: str = "", detail: str = "") -> tuple[FenceAttempt, str]:
            attempt = self._event(node, number, fencer.driver, fencer.device, token, started, result, proof, detail)
            return attempt, proof

        if fencer.observes_power and await self._status(fencer, node, deadline) is Power.OFF:
            return event("already-off", f"status OFF read from {fencer.device} before any power-off")
        if token is not None and lease_holds is not None:
            lost = await self._lease_lost(lease_holds, token, deadline)
            if lost:
                return event("aborted", detail=lost)
        left = deadline - self._clock()
        if left <= 0:
            detail = f"{fencer.device}: power-off not sent: the level's deadline of {self.power_timeout:g}s passed"
            return event("failed", detail=detail)
        try:
            await asyncio.to_thread(fencer.power_off, node, timeout=left)
        except FenceError as exc:
            return event("failed", detail=str(exc))
        pause = POLL_FIRST
        while True:
            proof = await self._proof(node, fencer, levels, deadline)
            if proof:
                return event("off", proof)
            if self._clock() + pause > deadline:
                detail = f"{fencer.device}: power-off sent, OFF not confirmed within {self.power_timeout:g}s"
                return event("unconfirmed", detail=detail)
            await self._sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    async def _proof(self, node: str, fencer: Fencer, levels: Sequence[Level], deadline: float) -> str:
        """Why the node is known OFF now, or "" if it is not (yet)."""
        if fencer.observes_power:
            if await self._status(fencer, node, deadline) is Power.OFF:
                return f"status OFF read from {fencer.device}"
            return ""
        # A blind device (SSH): any device of any level that reads power, then the weaker proof.
        for level in levels:
            for other in level:
                if other.observes_power and await self._status(other, node, deadline) is Power.OFF:
                    return f"status OFF read from {other.device} (another level)"
        return self._silence_proof(node)

    def _silence_proof(self, node: str) -> str:
        silent = self._silence(node) if self._silence is not None else None
        if silent is not None and silent >= self.confirm:
            return f"silent on every heartbeat medium and to pings for {silent:.1f}s (confirm_ms {self.confirm:g}s)"
        return ""

    async def _status(self, fencer: Fencer, node: str, deadline: float) -> Power:
        """One status read bounded by what is left of `deadline` (UNKNOWN, unsent, once it has passed)."""
        left = deadline - self._clock()
        if left <= 0:
            return Power.UNKNOWN
        return await asyncio.to_thread(fencer.status, node, timeout=left)

    async def _read_power(self, node: str, fenced_level: int, deadline: float) -> tuple[Power, int, list[Fencer]]:
        """Power as read now, level by level (the one that fenced the node first), and the level and devices
        that read it. A level reads ON if any of its devices does, OFF only if all that observe power do."""
        levels = self._levels(node)
        order = sorted(range(len(levels)), key=lambda index: index != fenced_level - 1)
        for index in order:
            observers = [fencer for fencer in levels[index] if fencer.observes_power]
            if not observers:
                continue
            powers = await asyncio.gather(*(self._status(fencer, node, deadline) for fencer in observers))
            on = [fencer for fencer, power in zip(observers, powers, strict=True) if power is Power.ON]
            if on:
                return Power.ON, index + 1, on
            if all(power is Power.OFF for power in powers):
                return Power.OFF, index + 1, observers
        return Power.UNKNOWN, 0, []

    async def _lease_lost(self, lease_holds: LeaseHolds, token: int, deadline: float) -> str:
        """Why no power-off may be sent under `token` now, or "" while the lease is still held here."""
        try:
            holds = await asyncio.wait_for(lease_holds(token), max(0.0, deadline - self._clock()))
        except TimeoutError:
            return f"lease token {token} could not be confirmed before the deadline: no power-off sent"
        except Exception as exc:  # any failure to confirm the lease means: do not send
            return f"lease token {token} could not be confirmed ({type(exc).__name__}: {exc}): no power-off sent"
        return "" if holds else f"lease token {token} no longer held here: no power-off sent"

    def _new_fence(self, record: _NodeRecord) -> None:
        """A new fence (or the node's return) starts a new hold-down count."""
        record.held = None
        record.repeats = 0

    def _settle(self, record: _NodeRecord, report: FenceReport) -> None:
        """A proven OFF starts the hold-down and remembers the level that proved it."""
        if report.off:
            record.fenced_at = self._clock()
            record.fenced_level = report.attempts[-1].level if report.attempts else 1

    def _held_event(
        self,
        record: _NodeRecord,
        outcome: str,
        node: str,
        level: int,
        driver: str,
        device: str,
        token: int | None,
        started: float,
        result: str,
        proof: str,
        detail: str,
        severity: int = logging.INFO,
    ) -> FenceAttempt:
        """A held-down answer: logged and emitted the first time in the hold-down and when its outcome changed;
        otherwise only counted."""
        quiet = record.held == outcome
        # Counted since the answer last logged: a changed outcome is logged (and reported with 0 repeats).
        record.repeats = record.repeats + 1 if quiet else 0
        record.held = outcome
        return self._event(
            node, level, driver, device, token, started, result, proof, detail, quiet=quiet, severity=severity
        )

    def _held_report(
        self,
        record: _NodeRecord,
        node: str,
        outcome: FenceOutcome,
        token: int | None,
        reason: str,
        proof: str,
        attempt: FenceAttempt,
    ) -> FenceReport:
        return FenceReport(node, outcome, token, reason, proof, (attempt,), repeats=record.repeats)

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
        *,
        quiet: bool = False,
        severity: int = logging.INFO,
    ) -> FenceAttempt:
        attempt = FenceAttempt(
            node, level, driver, device, token, started, self._clock() - started, result, proof, detail
        )
        if quiet:
            return attempt
        log.log(
            severity,
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
