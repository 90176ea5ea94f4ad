"""Reference-IP quorum: can this node still reach the network it serves?

Each round pings every `reference.addresses` once (icmplib `async_multiping`, bounded by `timeout_ms`) and
counts the addresses that *replied*. icmplib reports `packet_loss == 0.0` when sending failed (no route, no
interface), so a round is decided on `packets_received`, never on `packet_loss`. k of n replies (`quorum`) is
a good round; the quorum flips only after `rise` good or `fall` bad rounds in a row, so one lost echo does not
make a node step down. The first round decides on its own: before it the quorum is unknown (None), and the
policy treats unknown as "not yet", not as lost.

Rounds run on a monotonic-deadline loop (`run`), not on APScheduler's wall-clock triggers: a round every
`interval_ms` whatever the wall clock does.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import icmplib

from arbiter.config import ReferenceConfig
from arbiter.evidence.ticks import deadline_ticks

log = logging.getLogger(__name__)

# One round's pinger: addresses and a timeout in seconds → address → replied. Real one: `icmp_round`.
Pinger = Callable[[Sequence[str], float], Awaitable[Mapping[str, bool]]]


async def icmp_round(addresses: Sequence[str], timeout: float) -> Mapping[str, bool]:
    """One echo per address, all at once; an address replied only if an echo reply came back in time."""
    hosts = await icmplib.async_multiping(
        list(addresses), count=1, timeout=timeout, concurrent_tasks=len(addresses), privileged=True
    )
    return {host.address: host.packets_received > 0 for host in hosts}


@dataclass(frozen=True)
class Round:
    at: float  # monotonic time the round started
    replies: Mapping[str, bool]
    duration: float
    error: str = ""  # the pinger failed as a whole (e.g. no CAP_NET_RAW): every address counts as silent

    @property
    def replied(self) -> int:
        return sum(self.replies.values())


class Change(enum.Enum):
    GAINED = "gained"
    LOST = "lost"


@dataclass
class Hysteresis:
    """k-of-n quorum with rise/fall counting; pure (no IO, no clock): feed it reply counts."""

    quorum: int
    rise: int
    fall: int
    quorate: bool | None = None
    _streak: int = field(default=0, repr=False)  # consecutive rounds disagreeing with `quorate`

    def observe(self, replied: int) -> Change | None:
        good = replied >= self.quorum
        if self.quorate is None:
            self.quorate = good
            return Change.GAINED if good else Change.LOST
        if good == self.quorate:
            self._streak = 0
            return None
        self._streak += 1
        if self._streak < (self.rise if good else self.fall):
            return None
        self.quorate, self._streak = good, 0
        return Change.GAINED if good else Change.LOST


class ReferenceQuorum:
    """Runs reference rounds and keeps the quorum; `quorate` is what the policy reads."""

    def __init__(
        self,
        addresses: Sequence[str],
        quorum: int,
        interval: float,
        timeout: float,
        rise: int = 2,
        fall: int = 2,
        pinger: Pinger = icmp_round,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not addresses:
            raise ValueError("reference quorum needs at least one address")
        if not 1 <= quorum <= len(addresses):
            raise ValueError(f"quorum must be between 1 and {len(addresses)} (got {quorum})")
        self.addresses = tuple(addresses)
        self.interval = interval
        self.timeout = timeout
        self.hysteresis = Hysteresis(quorum, rise, fall)
        self.last: Round | None = None
        self.rounds = 0
        self.replies_total: dict[str, int] = dict.fromkeys(self.addresses, 0)
        self._pinger = pinger
        self._clock = clock

    @classmethod
    def from_config(cls, cfg: ReferenceConfig, pinger: Pinger = icmp_round) -> ReferenceQuorum:
        return cls(
            [str(a) for a in cfg.addresses],
            cfg.quorum,
            cfg.interval_ms / 1000,
            cfg.timeout_ms / 1000,
            cfg.rise,
            cfg.fall,
            pinger,
        )

    @property
    def quorate(self) -> bool | None:
        return self.hysteresis.quorate

    async def round(self) -> tuple[Round, Change | None]:
        started = self._clock()
        error = ""
        try:
            # The pinger's own timeout bounds each echo; this bounds the whole round (socket set-up included).
            async with asyncio.timeout(self.timeout + 0.05):
                replies = dict(await self._pinger(self.addresses, self.timeout))
        except TimeoutError:
            replies, error = {}, f"round took longer than {self.timeout:g}s"
        except (OSError, icmplib.ICMPLibError) as exc:
            replies, error = {}, f"{type(exc).__name__}: {exc}"
        # Only the configured addresses count, each at most once, whatever the pinger returned.
        replies = {a: bool(replies.get(a, False)) for a in self.addresses}
        done = Round(started, replies, self._clock() - started, error)
        for address, ok in replies.items():
            self.replies_total[address] += ok
        self.rounds += 1
        self.last = done
        change = self.hysteresis.observe(done.replied)
        if error:
            log.warning("reference round failed: %s", error)
        if change is not None:
            log.info(
                "reference quorum %s: %d of %d replied (quorum %d)",
                change.value,
                done.replied,
                len(self.addresses),
                self.hysteresis.quorum,
            )
        return done, change

    async def run(self, on_change: Callable[[Round, Change], None] | None = None) -> None:
        """Round after round on a monotonic schedule until cancelled; a slow round skips ticks, never bursts."""
        async for _ in deadline_ticks(self.interval, self._clock):
            done, change = await self.round()
            if change is not None and on_change is not None:
                on_change(done, change)
