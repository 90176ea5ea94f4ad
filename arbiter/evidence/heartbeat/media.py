"""Which heartbeat media are up, per peer: last-seen times, up/down events, the newest frame, refusal counts.

A (peer, medium) is up while a frame from that peer was accepted on that medium within `deadtime`; a peer is
alive while any of its media is up. All times are this node's monotonic seconds from an injectable clock, so
the tracker is driven by a fake clock in unit tests and by `time.monotonic` in the agent.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from arbiter.evidence.heartbeat.frame import Frame, Refusal
from arbiter.model import PeerView, Timings, VrrpState

# Frames over which the sender→receiver clock offset is estimated: ~6 s at 10 Hz, short enough that two
# monotonic clocks drifting apart by tens of ppm move the estimate by well under a millisecond.
OFFSET_WINDOW = 64


@dataclass(frozen=True)
class MediumEvent:
    at: float  # local monotonic time the change was noticed
    peer: str
    medium: str
    up: bool


@dataclass(frozen=True)
class Received:
    frame: Frame
    medium: str  # the medium its first copy arrived on
    received_at: float
    # The sender's send time in this node's clock: sender monotonic + the smallest (receive − send) seen over the
    # last frames. Never later than `received_at`, never earlier than the true send time (delays are ≥ 0).
    sent_at: float


class MediaTracker:
    def __init__(
        self,
        peers: Iterable[str],
        media: Iterable[str],
        deadtime: float,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[MediumEvent], None] | None = None,
    ) -> None:
        self.peers = tuple(peers)
        self.media = tuple(media)
        self.deadtime = deadtime
        self._clock = clock
        self._on_event = on_event
        self.started_at = clock()
        self._last_seen: dict[tuple[str, str], float] = {}
        # What the events last said per (peer, medium): None until the first event.
        self._announced: dict[tuple[str, str], bool | None] = {(p, m): None for p in self.peers for m in self.media}
        self._newest: dict[str, Received] = {}
        self._offsets: dict[str, deque[float]] = {}
        self.accepted: Counter[str] = Counter()  # medium → frames accepted
        self.refused: Counter[tuple[str, Refusal]] = Counter()  # (medium, reason) → frames refused

    def refuse(self, medium: str, reason: Refusal) -> None:
        self.refused[(medium, reason)] += 1

    def accept(self, frame: Frame, medium: str) -> None:
        """Record a frame the decoder accepted (its incarnation and sequence were already checked)."""
        now = self._clock()
        peer = frame.node
        self.accepted[medium] += 1
        self._last_seen[(peer, medium)] = now
        if self._announced.get((peer, medium)) is not True:
            self._announce(MediumEvent(now, peer, medium, up=True))
        newest = self._newest.get(peer)
        restarted = newest is not None and newest.frame.incarnation != frame.incarnation
        if restarted or peer not in self._offsets:
            self._offsets[peer] = deque(maxlen=OFFSET_WINDOW)
        offsets = self._offsets[peer]
        offsets.append(now - frame.sent_mono_ns / 1e9)
        if newest is None or restarted or frame.sequence > newest.frame.sequence:
            sent_at = frame.sent_mono_ns / 1e9 + min(offsets)
            self._newest[peer] = Received(frame, medium, now, sent_at)

    def check(self) -> float:
        """Announce media that went down (or never came up by the first deadtime); return the next time one could
        go down, so a watcher can sleep exactly that long."""
        now = self._clock()
        next_at = now + self.deadtime
        first_deadline = self.started_at + self.deadtime
        for key, said in list(self._announced.items()):
            last = self._last_seen.get(key)
            if last is not None and now - last <= self.deadtime:
                next_at = min(next_at, last + self.deadtime)
            elif said is True or (said is None and now >= first_deadline):
                self._announce(MediumEvent(now, key[0], key[1], up=False))
            elif said is None:
                next_at = min(next_at, first_deadline)
        return next_at

    def _announce(self, event: MediumEvent) -> None:
        self._announced[(event.peer, event.medium)] = event.up
        if self._on_event is not None:
            self._on_event(event)

    def up(self, peer: str, medium: str) -> bool | None:
        """Exact at the time of the call (events may follow a moment later); None before the first deadtime."""
        now = self._clock()
        last = self._last_seen.get((peer, medium))
        if last is not None and now - last <= self.deadtime:
            return True
        return None if now < self.started_at + self.deadtime else False

    def alive(self, peer: str) -> bool | None:
        """True while any medium is up; None when none is and the first deadtime since start has not passed."""
        states = [self.up(peer, m) for m in self.media_of(peer)]
        if True in states:
            return True
        return None if self._clock() < self.started_at + self.deadtime else False

    def media_of(self, peer: str) -> list[str]:
        heard = [m for p, m in self._last_seen if p == peer and m not in self.media]
        return [*self.media, *heard]

    def last_seen(self, peer: str, medium: str) -> float | None:
        return self._last_seen.get((peer, medium))

    def newest(self, peer: str) -> Received | None:
        return self._newest.get(peer)

    def peer_view(self, peer: str, instance: str) -> PeerView:
        """The heartbeat half of the policy's PeerView; the agent adds adverts, fencing and power."""
        got = self._newest.get(peer)
        alive = self.alive(peer)
        if got is None:
            return PeerView(name=peer, alive=alive)
        report = got.frame.instance(instance)
        sent = got.frame.timings
        advert_ms = report.advert_int_ms if report else None
        timings = None
        if sent is not None:
            timings = Timings(
                ttl=sent.ttl_ms / 1000,
                renew=sent.renew_ms / 1000,
                safety=sent.safety_ms / 1000,
                interval=sent.interval_ms / 1000,
                deadtime=sent.deadtime_ms / 1000,
                advert_int=None if advert_ms is None else advert_ms / 1000,
            )
        return PeerView(
            name=peer,
            alive=alive,
            heard_at=got.sent_at,
            state=report.state if report else VrrpState.UNKNOWN,
            vip_present=report.vip_present if report else False,
            priority=report.priority if report else 0,
            quorate=got.frame.quorate,
            lease_holder=report.lease_holder if report else None,
            highest_token=max(got.frame.highest_token, (report.lease_token or 0) if report else 0),
            left=got.frame.leaving
            and all(i.gate_open is False and not i.vip_present and i.lease_holder != peer for i in got.frame.instances),
            gate_open=report.gate_open if report else None,
            rule=report.rule if report else None,
            timings=timings,
        )
