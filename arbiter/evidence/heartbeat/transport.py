"""The one interface every heartbeat medium implements, and the counters each keeps.

A transport moves opaque signed frames; it never parses or trusts them (that is `frame.FrameDecoder`'s job).
`send` never blocks and never raises: a medium that cannot send counts why, and the others carry on.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

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


class HeartbeatTransport(Protocol):
    @property
    def medium(self) -> str:
        """The medium's name in counters, events and logs: `udp:eth0`, `serial:/dev/ttyS1`."""
        ...

    counters: MediumCounters

    async def open(self) -> None:
        """Start; a serial line that is not there yet keeps retrying in the background instead of failing."""
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
