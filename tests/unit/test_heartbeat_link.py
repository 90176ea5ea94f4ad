"""Opening a heartbeat medium that is not there: LinkKeeper's backoff and retries, the link state status shows,
and the service's link events (a medium down at start is news, one open at start is not)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable

import pytest
from redis.backoff import ExponentialBackoff

from arbiter import statusview
from arbiter.evidence.heartbeat import HeartbeatService, Link, LinkKeeper, MediumCounters
from tests.unit.test_status_metrics import SNAPSHOT, scrape


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Device:
    """An attempt that fails with `why` until `present` is set; each attempt advances the fake clock by 1 s so
    every link state it leaves behind can be read against a known `now`."""

    def __init__(self, clock: FakeClock, why: str = "could not open port /dev/ttyS9: No such file") -> None:
        self.clock = clock
        self.why = why
        self.present = False
        self.attempts: list[float] = []
        self.keeper: LinkKeeper | None = None
        self.links: list[Link] = []  # the link state just before each attempt

    def __call__(self) -> str | None:
        self.clock.now += 1.0
        self.attempts.append(self.clock.now)
        if self.keeper is not None:
            self.links.append(self.keeper.link)
        return None if self.present else self.why


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


def test_a_missing_medium_is_retried_with_capped_exponential_backoff() -> None:
    clock = FakeClock()
    device = Device(clock)
    keeper = LinkKeeper("serial:/dev/ttyS9", device, ExponentialBackoff(cap=0.04, base=0.005), clock)
    device.keeper = keeper

    async def scenario() -> None:
        assert keeper.start() is False  # the first attempt is immediate and fails: no exception, a medium down
        link = keeper.link
        assert (link.open, link.failures, link.reason) == (False, 1, device.why)
        assert link.next_retry_at == pytest.approx(clock.now + 0.005)
        assert link.as_dict(clock.now) == {
            "open": False,
            "reason": device.why,
            "failures": 1,
            "since_age_s": 1.0,  # since the keeper was made (the attempt moved the clock 1 s)
            "next_retry_in_s": 0.005,
        }
        await until(lambda: len(device.attempts) >= 6)
        # Each failure waits base × 2^(n−1), capped: 5, 10, 20, 40, 40 ms.
        waits = [
            round((link.next_retry_at or 0.0) - at, 6)
            for link, at in zip(device.links[1:], device.attempts, strict=False)
        ]
        assert waits[:5] == [0.005, 0.01, 0.02, 0.04, 0.04]
        device.present = True
        await until(lambda: keeper.link.open)
        assert keeper.link == Link(open=True, since=clock.now)
        attempts = len(device.attempts)
        await asyncio.sleep(0.05)
        assert len(device.attempts) == attempts  # open: no more attempts
        keeper.cancel()

    asyncio.run(scenario())


def test_a_lost_medium_is_down_with_the_reason_and_reopened() -> None:
    clock = FakeClock()
    device = Device(clock)
    device.present = True
    keeper = LinkKeeper("serial:/dev/ttyS9", device, ExponentialBackoff(cap=0.02, base=0.005), clock)

    async def scenario() -> None:
        assert keeper.start() is True
        device.present = False
        keeper.lost("readable but no data: device disconnected")
        assert keeper.link.open is False
        assert keeper.link.reason == "readable but no data: device disconnected"
        await until(lambda: keeper.link.failures >= 3)  # retried at once, then with backoff
        assert keeper.link.reason == device.why
        device.present = True
        await until(lambda: keeper.link.open)
        keeper.cancel()

    asyncio.run(scenario())


class FakeMedium:
    """A transport whose link state the test sets; sends are counted, nothing is ever received."""

    def __init__(self, medium: str, link: Link) -> None:
        self._medium = medium
        self.link = link
        self.counters = MediumCounters()

    @property
    def medium(self) -> str:
        return self._medium

    async def open(self) -> None:
        pass

    def send(self, frame: bytes) -> None:
        self.counters.sent += 1

    async def receive(self) -> bytes:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def close(self) -> None:
        pass


def test_service_reports_a_medium_down_at_start_once_and_its_opening_once() -> None:
    serial = FakeMedium("serial:/dev/ttyS9", Link(open=False, reason="no such device", failures=1))
    udp = FakeMedium("udp:eth1", Link(open=True))
    hb = HeartbeatService(
        cluster="web",
        node="node-a",
        key=b"k" * 32,
        peers=["node-b"],
        transports=[serial, udp],
        interval=0.1,
        deadtime=1,
    )

    async def scenario() -> None:
        hb.check_links()
        hb.check_links()
        events = [hb.link_events.get_nowait() for _ in range(hb.link_events.qsize())]
        assert [(e.medium, e.link.open, e.link.reason) for e in events] == [
            ("serial:/dev/ttyS9", False, "no such device")
        ]
        assert hb.stats()["media"]["serial:/dev/ttyS9"]["link"]["reason"] == "no such device"
        serial.link = Link(open=True)
        hb.check_links()
        hb.check_links()
        events = [hb.link_events.get_nowait() for _ in range(hb.link_events.qsize())]
        assert [(e.medium, e.link.open) for e in events] == [("serial:/dev/ttyS9", True)]

    asyncio.run(scenario())


def test_status_text_and_metrics_show_a_medium_down_here_with_its_reason() -> None:
    status = copy.deepcopy(SNAPSHOT)
    status["heartbeat"]["media"] = {
        "udp:eth0": Link(open=True, since=90.0).as_dict(100.0),
        "serial:/dev/ttyS0": Link(
            open=False, reason="could not open port /dev/ttyS0", failures=7, since=40.0, next_retry_at=101.5
        ).as_dict(100.0),
    }
    status["instances"][0]["lease"].update(status="unknown", holder=None, token=None, ttl_ms=None, error="Timeout")
    text = statusview.render(status)
    assert (
        "Heartbeat serial:/dev/ttyS0 DOWN on this node: could not open port /dev/ttyS0 "
        "(7 attempt(s) failed, retry in 1.5s)"
    ) in text
    assert "udp:eth0 DOWN on this node" not in text
    assert "unknown (Timeout)" in text
    metrics = scrape(status)
    assert 'keepalived_arbiter_heartbeat_medium_open{medium="serial:/dev/ttyS0"} 0.0' in metrics
    assert 'keepalived_arbiter_heartbeat_medium_open{medium="udp:eth0"} 1.0' in metrics
