"""Monotonic-deadline ticks for the evidence loops (heartbeat sending, reference rounds).

Not APScheduler: its triggers follow the wall clock and jitter under load; these follow `time.monotonic`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable


async def deadline_ticks(
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncIterator[int]:
    """Yield tick numbers k at start + k × interval; after a late wake-up, continue at the next future tick."""
    start = clock()
    k = 0
    while True:
        yield k
        now = clock()
        k = max(k + 1, math.floor((now - start) / interval) + 1)
        await sleep(max(0.0, start + k * interval - clock()))
