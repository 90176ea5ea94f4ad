"""The one interface every heartbeat medium implements, and the counters each keeps.

A transport moves opaque signed frames; it never parses or trusts them (that is `frame.FrameDecoder`'s job).
`send` never blocks and never raises: a medium that cannot send counts why, and the others carry on.
`open` never fails either: a medium that cannot be opened (serial device missing, NIC not there yet) is a medium
down, kept in `link` with the reason and the next retry, and `LinkKeeper` retries it with capped exponential
backoff until it opens. A missing medium at boot is never a reason for the agent not to run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.backoff import AbstractBackoff, ExponentialBackoff

log = logging.getLogger(__name__)

# Frames waiting for the receive loop; beyond this the medium is flooded and the newest are dropped (counted).
RECEIVE_QUEUE = 256


@dataclass
class MediumCounters:
    sent: int = 0  # frames handed to the medium (per destination for UDP)
    send_errors: Counter[str] = field(default_factory=Counter)  # errno name (or "closed", "overflow") → count
    received: int = 0  # frames delivered to the receive loop
    dropped: int = 0  # frames lost to a full receive queue or over-long lines
    garbled: int = 0  # serial lines with a start marker whose payload was not valid base64
    reopened: int = 0  # serial: times the device was opened again after a loss
    lost: int = 0  # serial: times the device vanished or failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "send_errors": dict(self.send_errors),
            "received": self.received,
            "dropped": self.dropped,
            "garbled": self.garbled,
            "reopened": self.reopened,
            "lost": self.lost,
        }


# Retrying a medium that cannot be opened: 50 ms, 100 ms, … up to 2 s between attempts (a device that appears is
# picked up within 2 s, and a missing one costs one failed open(2) per 2 s).
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0


def default_backoff(base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> AbstractBackoff:
    return ExponentialBackoff(cap=cap, base=base)


@dataclass(frozen=True)
class Link:
    """Whether this node has the medium open, and if not why and when it tries again (monotonic seconds)."""

    open: bool
    reason: str = ""  # why it is not open: the last error
    failures: int = 0  # attempts failed in a row since it was last open
    since: float = 0.0  # when it last became open or not open
    next_retry_at: float | None = None

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "open": self.open,
            "reason": self.reason or None,
            "failures": self.failures,
            "since_age_s": round(max(0.0, now - self.since), 3),
            "next_retry_in_s": None if self.next_retry_at is None else round(max(0.0, self.next_retry_at - now), 3),
        }


# One attempt to open a medium: None when it is open now, else why not (shown in status and alerts).
Attempt = Callable[[], str | None]


class LinkKeeper:
    """Opens one medium and keeps it open: a failed attempt (or a loss reported with `lost`) schedules the next
    attempt after `backoff.compute(failures)`, until one succeeds. `link` is the state status shows."""

    def __init__(
        self,
        medium: str,
        attempt: Attempt,
        backoff: AbstractBackoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.medium = medium
        self._attempt = attempt
        self.backoff = backoff or default_backoff()
        self._clock = clock
        self.link = Link(open=False, reason="not opened yet", since=clock())
        self._task: asyncio.Task[None] | None = None

    def start(self) -> bool:
        """Try once now; on failure keep trying in the background. True when the medium is open."""
        if self._try():
            return True
        self._retry_later()
        return False

    def lost(self, reason: str) -> None:
        """The open medium failed (device gone, NIC removed): it is down now, and reopened with backoff."""
        self.link = Link(open=False, reason=reason, since=self._clock())
        log.warning("heartbeat %s lost: %s; reopening", self.medium, reason)
        self._retry_later()

    def _try(self) -> bool:
        was = self.link
        why = self._attempt()
        now = self._clock()
        if why is None:
            if not was.open and was.failures:
                log.info("heartbeat %s open after %d failed attempt(s)", self.medium, was.failures)
            self.link = Link(open=True, since=now)
            return True
        failures = was.failures + 1
        next_at = now + self.backoff.compute(failures - 1)  # the first retry waits `base`
        if failures == 1 or why != was.reason:
            log.warning("heartbeat %s cannot be opened: %s; retrying with backoff", self.medium, why)
        since = was.since if not was.open else now
        self.link = Link(open=False, reason=why, failures=failures, since=since, next_retry_at=next_at)
        return False

    def _retry_later(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._retry(), name=f"open {self.medium}")

    async def _retry(self) -> None:
        while not self.link.open:
            if self.link.next_retry_at is None:  # lost just now: first attempt at once
                if self._try():
                    return
                continue
            await asyncio.sleep(max(0.0, self.link.next_retry_at - self._clock()))
            self._try()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


class HeartbeatTransport(Protocol):
    @property
    def medium(self) -> str:
        """The medium's name in counters, events and logs: `udp:eth0`, `serial:/dev/ttyS1`."""
        ...

    counters: MediumCounters

    @property
    def link(self) -> Link:
        """Open, or down with the reason and the next retry."""
        ...

    async def open(self) -> None:
        """Start; never raises: a medium that cannot be opened yet keeps retrying in the background."""
        ...

    def send(self, frame: bytes) -> None: ...

    async def receive(self) -> bytes:
        """The next frame's bytes as received (unverified)."""
        ...

    def close(self) -> None: ...


class FrameQueue:
    """The receive side every transport shares: a bounded queue filled from loop callbacks."""

    def __init__(self, counters: MediumCounters) -> None:
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(RECEIVE_QUEUE)
        self._counters = counters

    def put(self, frame: bytes) -> None:
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._counters.dropped += 1
        else:
            self._counters.received += 1

    async def get(self) -> bytes:
        return await self._queue.get()
