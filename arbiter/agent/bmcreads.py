"""When the agent reads a peer's power through its BMC, as a pure function of what it knows (no IO, no clock).

Rule L4 lets a node keep a VIP whose lease a dead peer still holds once a power read taken after that peer's
newest heartbeat says OFF; that read must be back before keepalived's master-down timer fires (0.3 s at
VRRPv3/0.1 s), every time, not only on average. Hence:
- suspect: a peer silent for `silence` (two heartbeat intervals) is read at once, and again as soon as the
  previous read is back, until a read taken after its newest heartbeat says OFF. Such a reading is then
  re-read only when half of its validity (`fresh`, the deadtime) is gone: hammering the BMC every cycle
  during the failover only takes CPU from the keepalived that is taking over.
- idle: any peer whose last reading is older than `keep_warm` is read anyway. A BMC session left idle
  expires (pyghmi's after ~45 s), and the login it then needs (several round trips, a worker start after a
  failed call) would land on the failover path: the first suspect read after a real power loss must cost one
  round trip, as in a lab started a few seconds before its fault. It also checks the BMC still answers.
The caller keeps one read in flight per peer; fenced peers are re-read on their own schedule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from arbiter.model import Power


@dataclass(frozen=True)
class ReadSchedule:
    silence: float  # seconds without a heartbeat before a peer is a suspect (two heartbeat intervals)
    fresh: float  # how long an OFF reading counts (the policy's deadtime); re-read at half of it
    keep_warm: float  # longest time between two reads of any peer's BMC


def reads_due(
    now: float,
    peers: Iterable[str],
    heard: Mapping[str, float | None],
    readings: Mapping[str, tuple[Power, float]],
    started: Mapping[str, float],
    schedule: ReadSchedule,
) -> list[str]:
    """The peers whose power should be read now, in `peers` order.

    `heard[peer]`: when its newest heartbeat was received (None: never heard since start).
    `readings[peer]`: the newest power reading and when it came back (absent: none came back yet).
    `started[peer]`: when the latest read was started, answered or not (absent: never); the idle rule counts
    from it, so a BMC that fails every read is not asked again every cycle.
    """
    due = []
    for peer in peers:
        last_start = started.get(peer)
        if last_start is None or now - last_start >= schedule.keep_warm:
            due.append(peer)
            continue
        heard_at = heard.get(peer)
        if heard_at is None or now - heard_at <= schedule.silence:
            continue  # heard recently, or never heard since start (nothing to suspect yet)
        reading = readings.get(peer)
        proves_dead = (
            reading is not None
            and reading[0] is Power.OFF
            and reading[1] > heard_at
            and now - reading[1] < schedule.fresh / 2
        )
        if not proves_dead:
            due.append(peer)
    return due
