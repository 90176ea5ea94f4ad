"""Media tracking with a fake clock, the serial line framing, and the send loop's deadline ticks."""

from __future__ import annotations

import asyncio
import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.evidence.heartbeat.frame import Frame, FrameDecoder, FrameRefusedError, InstanceReport, Refusal
from arbiter.evidence.heartbeat.frame import encode_frame as encode
from arbiter.evidence.heartbeat.media import MediaTracker, MediumEvent
from arbiter.evidence.heartbeat.serial import MAX_LINE, LineFramer, encode_line
from arbiter.evidence.ticks import deadline_ticks
from arbiter.model import VrrpState

KEY = b"k" * 32
MEDIA = ("udp:eth0", "udp:eth1", "serial:/dev/ttyS1")


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def frame(seq: int, sent: float, incarnation: int = 1, node: str = "node-b", **kw: object) -> Frame:
    fields: dict[str, object] = {
        "cluster": "web",
        "node": node,
        "incarnation": incarnation,
        "sequence": seq,
        "sent_wall_ns": 0,
        "sent_mono_ns": int(sent * 1e9),
        "instances": (InstanceReport("VI_1", VrrpState.MASTER, True, 150, "node-b", 41),),
        "quorate": True,
        "highest_token": 41,
    }
    fields.update(kw)
    return Frame(**fields)  # type: ignore[arg-type]


def tracker(clock: FakeClock, events: list[MediumEvent]) -> MediaTracker:
    return MediaTracker(["node-b"], MEDIA, deadtime=0.3, clock=clock, on_event=events.append)


def test_alive_is_unknown_until_the_first_deadtime() -> None:
    clock, events = FakeClock(), []
    t = tracker(clock, events)
    assert t.alive("node-b") is None
    assert t.up("node-b", "udp:eth0") is None
    clock.now += 0.29
    assert t.check() == pytest.approx(100.3)  # the next moment anything can change
    assert t.alive("node-b") is None and events == []
    clock.now += 0.02
    t.check()
    assert t.alive("node-b") is False
    # Media never heard are announced down once, so an operator learns a cable was never plugged.
    assert sorted(e.medium for e in events) == sorted(MEDIA)
    assert all(not e.up for e in events)
    t.check()
    assert len(events) == 3


def test_up_down_and_back_with_events() -> None:
    clock, events = FakeClock(), []
    t = tracker(clock, events)
    t.accept(frame(1, 50.0), "udp:eth0")
    assert t.alive("node-b") is True  # heard before the first deadtime: known alive already
    assert events == [MediumEvent(100.0, "node-b", "udp:eth0", up=True)]
    for n in range(2, 6):
        clock.now += 0.1
        t.accept(frame(n, 50.0 + n / 10), "udp:eth0")
        t.accept(frame(n, 50.0 + n / 10), "serial:/dev/ttyS1")
    events.clear()
    clock.now += 0.3
    assert t.check() == pytest.approx(clock.now)  # the last frames are exactly deadtime old: still up, due now
    assert t.up("node-b", "udp:eth0") is True
    clock.now += 0.001
    t.check()
    assert {(e.medium, e.up) for e in events} == {
        ("udp:eth0", False),
        ("serial:/dev/ttyS1", False),
        ("udp:eth1", False),
    }
    assert t.alive("node-b") is False
    events.clear()
    clock.now += 5
    t.accept(frame(6, 56.0), "serial:/dev/ttyS1")
    assert events == [MediumEvent(clock.now, "node-b", "serial:/dev/ttyS1", up=True)]
    assert t.alive("node-b") is True
    assert t.up("node-b", "udp:eth0") is False


def test_peer_alive_while_any_medium_is_up() -> None:
    clock, events = FakeClock(), []
    t = tracker(clock, events)
    t.accept(frame(1, 1.0), "udp:eth0")
    t.accept(frame(1, 1.0), "udp:eth1")
    for n in range(2, 20):
        clock.now += 0.1
        t.accept(frame(n, 1.0 + n / 10), "udp:eth1")  # eth0 fell silent
        t.check()
    assert t.up("node-b", "udp:eth0") is False
    assert t.alive("node-b") is True
    assert [(e.medium, e.up) for e in events if not e.up] == [("udp:eth0", False), ("serial:/dev/ttyS1", False)]


def test_newest_frame_and_send_time_in_local_clock() -> None:
    clock, events = FakeClock(), []
    t = tracker(clock, events)
    # The peer's monotonic clock reads 1000 + x when ours reads 100 + x; delays vary from 2 to 40 ms.
    for seq, delay in enumerate([0.040, 0.002, 0.010, 0.030], start=1):
        sent_peer = 1000.0 + seq * 0.1
        clock.now = 100.0 + seq * 0.1 + delay
        t.accept(frame(seq, sent_peer), "udp:eth0")
        got = t.newest("node-b")
        assert got is not None and got.frame.sequence == seq
        true_send = 100.0 + seq * 0.1
        assert true_send - 1e-9 <= got.sent_at <= got.received_at
    got = t.newest("node-b")
    assert got is not None and abs(got.sent_at - (100.4 + 0.002)) < 1e-6  # bounded by the best delay seen
    # A late copy of an older frame on another medium counts for that medium but is not the newest.
    clock.now += 0.01
    t.accept(frame(3, 1000.3), "udp:eth1")
    assert t.newest("node-b") is got
    assert t.up("node-b", "udp:eth1") is True


def test_restart_replaces_newest_and_offsets() -> None:
    clock, events = FakeClock(), []
    t = tracker(clock, events)
    t.accept(frame(900, 1000.0), "udp:eth0")
    clock.now += 0.1
    t.accept(frame(1, 3.0, incarnation=2), "udp:eth0")  # restarted: new monotonic base, sequence from 1
    got = t.newest("node-b")
    assert got is not None and got.frame.incarnation == 2 and got.sent_at == clock.now


def test_peer_view_for_the_policy() -> None:
    clock, events = FakeClock(), []
    t = tracker(clock, events)
    empty = t.peer_view("node-b", "VI_1")
    assert empty.alive is None and empty.state is VrrpState.UNKNOWN and empty.heard_at is None
    t.accept(frame(1, 7.0), "udp:eth0")
    view = t.peer_view("node-b", "VI_1")
    assert view.alive is True and view.state is VrrpState.MASTER and view.vip_present
    assert view.priority == 150 and view.quorate is True and view.lease_holder == "node-b"
    assert view.highest_token == 41 and view.heard_at == clock.now
    other = t.peer_view("node-b", "VI_2")  # not in the frame: unknown, but the peer is alive
    assert other.alive is True and other.state is VrrpState.UNKNOWN


@pytest.mark.parametrize(
    ("report", "left"),
    [
        (InstanceReport("VI_1", VrrpState.FAULT, False, 150, None, None, False, "S0"), True),
        (InstanceReport("VI_1", VrrpState.FAULT, False, 150, None, None, True, "B2"), False),  # gate still open
        (InstanceReport("VI_1", VrrpState.MASTER, True, 150, None, None, False, "H2"), False),  # VIP still up
        (InstanceReport("VI_1", VrrpState.FAULT, False, 150, "node-b", 9, False, "S0"), False),  # lease not released
    ],
)
def test_a_peer_left_only_when_its_leaving_frame_says_gates_closed_and_nothing_held(
    report: InstanceReport, left: bool
) -> None:
    clock, events = FakeClock(), []
    t = tracker(clock, events)
    t.accept(frame(1, 7.0, instances=(report,), leaving=True), "udp:eth0")
    assert t.peer_view("node-b", "VI_1").left is left
    t.accept(frame(2, 7.1, instances=(report,)), "udp:eth0")  # the same without the leaving word
    assert t.peer_view("node-b", "VI_1").left is False


def test_refusals_are_counted_per_medium_and_reason() -> None:
    clock, events = FakeClock(), []
    t = tracker(clock, events)
    t.refuse("udp:eth0", Refusal.BAD_MAC)
    t.refuse("udp:eth0", Refusal.BAD_MAC)
    t.refuse("serial:/dev/ttyS1", Refusal.MALFORMED)
    assert t.refused == {("udp:eth0", Refusal.BAD_MAC): 2, ("serial:/dev/ttyS1", Refusal.MALFORMED): 1}


# --- serial line framing ------------------------------------------------------------------------------------


def wires(n: int) -> list[bytes]:
    return [encode(frame(seq, float(seq)), KEY) for seq in range(1, n + 1)]


def test_framing_survives_one_byte_reads() -> None:
    framer = LineFramer()
    stream = b"".join(encode_line(w) for w in wires(3))
    got = [f for b in stream for f in framer.feed(bytes([b]))]
    assert got == wires(3)


def test_framing_resyncs_after_noise_and_drops_over_long_lines() -> None:
    framer = LineFramer()
    a, b, c = wires(3)
    half = encode_line(a)[:40]  # a frame cut mid-write (cable pulled), then the next frame
    got = framer.feed(b"\x00\xff garbage\n" + half + encode_line(b) + b"#***\n" + b"x" * (3 * MAX_LINE))
    assert got == [b]
    assert framer.garbled == 1 and framer.dropped == 1
    assert framer.feed(b"#" + b"Q" * (MAX_LINE + 10) + b"\n" + encode_line(c)) == [c]
    assert framer.dropped == 2


def test_noise_inside_a_frame_never_yields_an_accepted_forgery() -> None:
    rng = random.Random(7)
    decoder = FrameDecoder(KEY, "web", "node-a", ["node-b"])
    accepted, refused = 0, 0
    for seq, wire in enumerate(wires(200), start=1):
        line = bytearray(encode_line(wire))
        if seq % 2:
            at = rng.randrange(1, len(line) - 1)
            line[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        for payload in LineFramer().feed(bytes(line)):
            try:
                got = decoder.decode(payload, "serial:/dev/ttyS1")
            except FrameRefusedError:
                refused += 1
            else:
                assert got.sequence == seq and seq % 2 == 0
                accepted += 1
    assert accepted == 100


@settings(max_examples=500, deadline=None)
@given(
    noise=st.lists(st.binary(max_size=300), min_size=4, max_size=4),
    cuts=st.lists(st.integers(1, 400), max_size=30),
)
def test_framing_recovers_every_frame_between_noise(noise: list[bytes], cuts: list[int]) -> None:
    frames = wires(3)
    # Noise sits between whole lines (a writer emits a line in one write); each noise burst ends the line it
    # may have started so it cannot glue onto the next frame's marker.
    stream = noise[0] + b"\n" + b"".join(encode_line(f) + n + b"\n" for f, n in zip(frames, noise[1:], strict=True))
    framer, got, at = LineFramer(), [], 0
    for size in [*cuts, len(stream)]:
        got += framer.feed(stream[at : at + size])
        at += size
    assert [f for f in got if f in frames] == frames
    # Whatever else came out is noise that happened to look like base64; the decoder refuses it.
    decoder = FrameDecoder(KEY, "web", "node-a")
    for extra in (f for f in got if f not in frames):
        try:
            decoder.decode(extra, "serial")
        except FrameRefusedError:
            continue
        raise AssertionError(f"noise accepted as a frame: {base64.b64encode(extra)!r}")


# --- the send loop's schedule -------------------------------------------------------------------------------


def test_deadline_ticks_skip_missed_ticks_instead_of_bursting() -> None:
    clock = FakeClock(0.0)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        clock.now += seconds

    async def run() -> list[tuple[int, float]]:
        seen: list[tuple[int, float]] = []
        async for k in deadline_ticks(0.1, clock, sleep):
            seen.append((k, round(clock.now, 6)))
            if k == 2:
                clock.now += 0.35  # the loop was blocked for 3.5 intervals
            else:
                clock.now += 0.01  # sending takes a moment; the next tick stays on the grid
            if len(seen) == 5:
                return seen
        return seen

    seen = asyncio.run(run())
    assert seen == [(0, 0.0), (1, 0.1), (2, 0.2), (6, 0.6), (7, 0.7)]
    assert slept == [0.09, 0.09, 0.05, 0.09]
