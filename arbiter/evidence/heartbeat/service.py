"""The heartbeat service: sends this node's frame on every medium each interval, receives and checks peers'
frames, and keeps the media tracker current.

Three kinds of loops, all on the monotonic clock: the send loop (deadline ticks `start + k × interval`; a late
wake-up skips the missed ticks instead of sending a burst), one receive loop per medium, and a watch loop that
sleeps until the next moment a medium could go down so that down events come out on time. What a frame says is
asked from the agent each time (`snapshot`), so it is never older than one interval.

A medium this node cannot open (a serial device or NIC missing at boot) does not stop the service: it is down
here with its reason (`stats()["media"][m]["link"]`), retried with backoff by its transport, and each change of
it comes out once in `link_events` (the agent alerts on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from arbiter.config import Config
from arbiter.evidence.heartbeat.frame import (
    VERSION,
    Frame,
    FrameDecoder,
    FrameRefusedError,
    InstanceReport,
    NodeTimings,
    Refusal,
    encode_frame,
    load_key,
)
from arbiter.evidence.heartbeat.media import MediaTracker, MediumEvent, Received
from arbiter.evidence.heartbeat.serial import SerialTransport
from arbiter.evidence.heartbeat.transport import HeartbeatTransport, Link
from arbiter.evidence.heartbeat.udp import UdpTransport
from arbiter.evidence.ticks import deadline_ticks
from arbiter.model import PeerView

log = logging.getLogger(__name__)

EVENT_QUEUE = 1024  # up/down changes kept for a reader that fell behind


@dataclass(frozen=True)
class Snapshot:
    """What this node reports in its next frame; built by the agent from its current evidence."""

    instances: tuple[InstanceReport, ...] = ()
    quorate: bool | None = None
    highest_token: int = 0
    leaving: bool = False


@dataclass(frozen=True)
class LinkEvent:
    """A medium this node opened, or lost or could not open (with the reason and the next retry in `link`)."""

    at: float
    medium: str
    link: Link


class HeartbeatService:
    def __init__(
        self,
        *,
        cluster: str,
        node: str,
        key: bytes,
        peers: Sequence[str],
        transports: Sequence[HeartbeatTransport],
        interval: float,
        deadtime: float,
        snapshot: Callable[[], Snapshot] = Snapshot,
        clock: Callable[[], float] = time.monotonic,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        wall_ns: Callable[[], int] = time.time_ns,
        timings: NodeTimings | None = None,
    ) -> None:
        if deadtime <= 2 * interval:
            raise ValueError(f"heartbeat deadtime {deadtime:g}s must exceed 2 × interval {interval:g}s")
        self.cluster = cluster
        self.node = node
        self._key = key
        self.peers = tuple(peers)
        self.transports = tuple(transports)
        self.interval = interval
        self.deadtime = deadtime
        self._snapshot = snapshot
        self._clock = clock
        self._clock_ns = clock_ns
        self._wall_ns = wall_ns
        self.timings = timings  # sent in every frame (version 3): peers judge this node by its own timings
        self.incarnation = secrets.randbits(64)
        self._sequence = 0
        self.events: asyncio.Queue[MediumEvent] = asyncio.Queue(EVENT_QUEUE)
        self.decoder = FrameDecoder(key, cluster, node, peers)
        self.tracker = MediaTracker(self.peers, [t.medium for t in self.transports], deadtime, clock, self._event)
        self._tasks: list[asyncio.Task[None]] = []
        self.send_failures = 0
        self.link_events: asyncio.Queue[LinkEvent] = asyncio.Queue(EVENT_QUEUE)
        self._link_open: dict[str, bool] = {}  # medium → open, as link_events last said
        # Called with the peer's name when its frame reports another instance state than its previous one (VRRP
        # state, VIP, gate, rule, lease holder, leaving): the agent decides at once instead of at its next tick.
        self.on_news: Callable[[str], None] | None = None

    @classmethod
    def from_config(cls, cfg: Config, snapshot: Callable[[], Snapshot] = Snapshot) -> HeartbeatService:
        """One UDP transport per `heartbeat.udp` interface, one serial transport per `heartbeat.serial` line."""
        hb = cfg.heartbeat
        addresses = [(str(a), hb.port) for p in cfg.peer for a in p.heartbeat_addresses]
        transports: list[HeartbeatTransport] = [UdpTransport(u.interface, hb.port, addresses) for u in hb.udp]
        transports += [SerialTransport(s.device, s.baud) for s in hb.serial]
        return cls(
            cluster=cfg.node.cluster,
            node=cfg.node.name,
            key=load_key(hb.key_file),
            peers=[p.name for p in cfg.peer],
            transports=transports,
            interval=hb.interval_ms / 1000,
            deadtime=hb.deadtime_ms / 1000,
            snapshot=snapshot,
            timings=NodeTimings(
                cfg.lease.ttl_ms, cfg.lease.renew_ms, cfg.lease.safety_ms, hb.interval_ms, hb.deadtime_ms
            ),
        )

    # --- what the agent reads -----------------------------------------------------------------------------

    def alive(self, peer: str) -> bool | None:
        return self.tracker.alive(peer)

    def newest(self, peer: str) -> Received | None:
        return self.tracker.newest(peer)

    def peer_view(self, peer: str, instance: str) -> PeerView:
        return self.tracker.peer_view(peer, instance)

    def stats(self) -> dict[str, Any]:
        """Per medium: what was sent, received, accepted and refused (by reason); per peer: media up."""
        media: dict[str, Any] = {}
        for t in self.transports:
            refused = {
                r.value: n for (m, r), n in self.tracker.refused.items() if m == t.medium and r is not Refusal.DUPLICATE
            }
            media[t.medium] = {
                **t.counters.as_dict(),
                "accepted": self.tracker.accepted[t.medium],
                "duplicates": self.tracker.refused[(t.medium, Refusal.DUPLICATE)],
                "refused": refused,
                "link": t.link.as_dict(self._clock()),
            }
        peers = {p: {m: self.tracker.up(p, m) for m in self.tracker.media_of(p)} for p in self.peers}
        return {
            "node": self.node,
            "incarnation": self.incarnation,
            "sequence": self._sequence,
            "media": media,
            "peers": peers,
            "send_failures": self.send_failures,
        }

    # --- running --------------------------------------------------------------------------------------------

    def _event(self, event: MediumEvent) -> None:
        log.info("heartbeat: %s on %s %s", event.peer, event.medium, "up" if event.up else "down")
        if self.events.full():
            self.events.get_nowait()  # nobody is reading: keep the newest changes, drop the oldest
        self.events.put_nowait(event)

    def next_frame(self) -> Frame:
        snap = self._snapshot()
        self._sequence += 1
        return Frame(
            cluster=self.cluster,
            node=self.node,
            incarnation=self.incarnation,
            sequence=self._sequence,
            sent_wall_ns=self._wall_ns(),
            sent_mono_ns=self._clock_ns(),
            instances=snap.instances,
            quorate=snap.quorate,
            highest_token=snap.highest_token,
            leaving=snap.leaving,
            version=self.version(),
            timings=self.timings,
        )

    def version(self) -> int:
        """The frame version to send: the lowest among the peers' newest frames (a peer still running an older
        agent refuses newer frames and would take this node for silent); the newest before any is heard."""
        heard = [got.frame.version for peer in self.peers if (got := self.tracker.newest(peer)) is not None]
        return min([VERSION, *heard])

    def send_now(self) -> None:
        """Send a frame outside the schedule (the agent calls it on a VRRP transition so peers hear at once)."""
        try:
            wire = encode_frame(self.next_frame(), self._key)
        except Exception:
            # A bad snapshot must not stop the heartbeat loop; it is counted and logged, and retried next tick.
            self.send_failures += 1
            log.exception("heartbeat: cannot build a frame")
            return
        for transport in self.transports:
            transport.send(wire)

    def receive_one(self, data: bytes, medium: str) -> Frame | None:
        try:
            frame = self.decoder.decode(data, medium)
        except FrameRefusedError as refused:
            self.tracker.refuse(medium, refused.reason)
            log.debug("heartbeat refused on %s: %s", medium, refused)
            return None
        before = self.tracker.newest(frame.node)
        self.tracker.accept(frame, medium)
        if self.on_news is not None and (before is None or _news(before.frame, frame)):
            self.on_news(frame.node)
        return frame

    def check_links(self) -> None:
        """Put a `LinkEvent` out for each medium whose open/down changed; a medium down at start is news too."""
        for t in self.transports:
            link = t.link
            previous = self._link_open.get(t.medium)
            self._link_open[t.medium] = link.open
            if previous == link.open or (previous is None and link.open):
                continue  # unchanged, or open from the start: not news
            if link.open:
                log.info("heartbeat: %s open", t.medium)
            else:
                log.warning("heartbeat: %s down here: %s", t.medium, link.reason)
            if self.link_events.full():
                self.link_events.get_nowait()
            self.link_events.put_nowait(LinkEvent(self._clock(), t.medium, link))

    async def _send_loop(self) -> None:
        async for _ in deadline_ticks(self.interval, self._clock):
            self.check_links()
            self.send_now()

    async def _receive_loop(self, transport: HeartbeatTransport) -> None:
        while True:
            self.receive_one(await transport.receive(), transport.medium)

    async def _watch_loop(self) -> None:
        while True:
            next_at = self.tracker.check()
            await asyncio.sleep(max(0.001, next_at - self._clock()))

    async def start(self) -> None:
        for transport in self.transports:
            await transport.open()
        self._tasks = [asyncio.create_task(self._send_loop(), name="heartbeat send")]
        for t in self.transports:
            self._tasks.append(asyncio.create_task(self._receive_loop(t), name=f"heartbeat {t.medium}"))
        self._tasks.append(asyncio.create_task(self._watch_loop(), name="heartbeat watch"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for transport in self.transports:
            transport.close()

    async def __aenter__(self) -> HeartbeatService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def refusals(self) -> dict[tuple[str, Refusal], int]:
        return dict(self.tracker.refused)


def _news(old: Frame, new: Frame) -> bool:
    """What a decision may turn on changed between two frames of one peer (sequence and send time aside)."""
    return (old.instances, old.quorate, old.leaving, old.incarnation) != (
        new.instances,
        new.quorate,
        new.leaving,
        new.incarnation,
    )
