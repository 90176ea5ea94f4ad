"""Two heartbeat services in one process over real media: loopback UDP and a socat pty pair as the serial cable.

Short timings (50 ms interval, 300 ms deadtime) so the file runs in seconds; time bounds carry slack and only
check behaviour (down after about a deadtime, back up after the cable returns), never speed.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from arbiter.evidence.heartbeat import (
    HeartbeatService,
    HeartbeatTransport,
    InstanceReport,
    Refusal,
    SerialTransport,
    Snapshot,
    UdpTransport,
)
from arbiter.model import VrrpState

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="SO_BINDTODEVICE needs root"),
    pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat"),
]

INTERVAL, DEADTIME = 0.05, 0.3
MEDIA = ("udp:lo", "serial")
KEY = b"integration-test-key-0123456789"
BASE_PORT = 20000 + os.getpid() % 20000


@dataclass
class Cable:
    """A socat pty pair: `a` and `b` are the two ends' link paths; cut() kills socat by its PID."""

    a: Path
    b: Path
    proc: subprocess.Popen[bytes] | None = None

    def plug(self) -> None:
        argv = ["socat", "-d", "-d", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not (self.a.exists() and self.b.exists() and os.path.realpath(self.a) != os.path.realpath(self.b)):
            assert time.monotonic() < deadline, "socat did not create the pty pair"
            time.sleep(0.01)

    def cut(self) -> None:
        if self.proc is not None:
            # SIGKILL: the cable is pulled, socat has no chance to tidy its links.
            with suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
            self.proc = None


@pytest.fixture
def cable(tmp_path: Path) -> Iterator[Cable]:
    c = Cable(tmp_path / "ttyA", tmp_path / "ttyB")
    c.plug()
    try:
        yield c
    finally:
        c.cut()


def snapshot(node: str) -> Callable[[], Snapshot]:
    master = node == "node-a"
    report = InstanceReport("VI_1", VrrpState.MASTER if master else VrrpState.BACKUP, master, 100, "node-a", 7)
    return lambda: Snapshot((report,), quorate=True, highest_token=7)


def service(node: str, peer: str, port: int, peer_port: int, serial: Path | None = None) -> HeartbeatService:
    transports: list[HeartbeatTransport] = [UdpTransport("lo", port, [("127.0.0.1", peer_port)])]
    if serial is not None:
        transports.append(SerialTransport(serial, 115200, medium="serial", backoff_initial=0.02, backoff_cap=0.25))
    return HeartbeatService(
        cluster="web",
        node=node,
        key=KEY,
        peers=[peer],
        transports=transports,
        interval=INTERVAL,
        deadtime=DEADTIME,
        snapshot=snapshot(node),
    )


@asynccontextmanager
async def pair(cable: Cable | None = None) -> AsyncIterator[tuple[HeartbeatService, HeartbeatService]]:
    a = service("node-a", "node-b", BASE_PORT, BASE_PORT + 1, cable.a if cable else None)
    b = service("node-b", "node-a", BASE_PORT + 1, BASE_PORT, cable.b if cable else None)
    async with a, b:
        yield a, b


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def test_two_services_over_loopback_udp() -> None:
    async def scenario() -> None:
        async with pair() as (a, b):
            await wait_until(lambda: a.alive("node-b") is True and b.alive("node-a") is True, "both alive")
            view = b.peer_view("node-a", "VI_1")
            assert view.state is VrrpState.MASTER and view.vip_present and view.highest_token == 7
            got = b.newest("node-a")
            assert got is not None and got.sent_at <= got.received_at
            event = await asyncio.wait_for(b.events.get(), 1)
            assert (event.peer, event.medium, event.up) == ("node-a", "udp:lo", True)
            await asyncio.sleep(0.5)
            sent = a.stats()["media"]["udp:lo"]["sent"]
            assert 8 <= sent <= 25  # ~0.6 s at 20 Hz: neither silent nor bursting
            while not b.events.empty():
                b.events.get_nowait()
            await a.stop()  # node-a goes silent
            start = time.monotonic()
            event = await asyncio.wait_for(b.events.get(), DEADTIME + 0.5)
            took = time.monotonic() - start
            assert (event.peer, event.medium, event.up) == ("node-a", "udp:lo", False)
            assert DEADTIME * 0.8 <= took <= DEADTIME + 0.5
            assert b.alive("node-a") is False
            assert not b.stats()["media"]["udp:lo"]["refused"]

    asyncio.run(scenario())


def test_restarted_peer_is_accepted_and_its_old_frames_refused() -> None:
    async def scenario() -> None:
        async with pair() as (a, b):
            await wait_until(lambda: b.alive("node-a") is True, "node-a alive")
            first = b.newest("node-a")
            assert first is not None
            captured = first.frame
            await a.stop()
            a2 = service("node-a", "node-b", BASE_PORT, BASE_PORT + 1)
            async with a2:
                await wait_until(
                    lambda: (got := b.newest("node-a")) is not None and got.frame.incarnation == a2.incarnation,
                    "the restarted node-a heard",
                )
                assert b.receive_one(b"junk", "udp:lo") is None
                from arbiter.evidence.heartbeat import encode_frame  # noqa: PLC0415 - only this test re-signs

                assert b.receive_one(encode_frame(captured, KEY), "udp:lo") is None
                refused = b.tracker.refused
                assert refused[("udp:lo", Refusal.OLD_INCARNATION)] == 1
                assert refused[("udp:lo", Refusal.MALFORMED)] == 1
                assert b.alive("node-a") is True

    asyncio.run(scenario())


def test_serial_cable_noise_cut_and_replug(cable: Cable) -> None:
    async def scenario() -> None:
        async with pair(cable) as (a, b):
            await wait_until(
                lambda: all(
                    s.tracker.up(p, m) for s, p in ((a, "node-b"), (b, "node-a")) for m in ("udp:lo", "serial")
                ),
                "both media up both ways",
            )
            # Noise on the line: random bytes written into A's end between (and sometimes inside) A's frames.
            rng = random.Random(1)
            before = b.stats()["media"]["serial"]["accepted"]
            fd = os.open(cable.a, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                for _ in range(40):
                    noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
                    if rng.random() < 0.3:
                        noise += b"#" + bytes(rng.choice(b"QUJDRA==") for _ in range(20)) + b"\n"
                    with suppress(BlockingIOError):
                        os.write(fd, noise)
                    await asyncio.sleep(0.0125)
            finally:
                os.close(fd)
            await asyncio.sleep(0.1)
            stats = b.stats()["media"]["serial"]
            assert stats["accepted"] - before >= 6  # frames still get through the noise
            assert stats["garbled"] + sum(stats["refused"].values()) > 0  # and the noise was seen and refused
            assert b.tracker.up("node-a", "serial") is True

            # Cable pulled: serial goes down within about a deadtime, UDP keeps the peer alive.
            while not a.events.empty():
                a.events.get_nowait()
            cable.cut()
            took = await wait_until(lambda: a.tracker.up("node-b", "serial") is False, "serial down")
            assert took <= DEADTIME + 0.5
            event = await asyncio.wait_for(a.events.get(), DEADTIME + 0.5)
            assert (event.medium, event.up) == ("serial", False)
            assert a.alive("node-b") is True and a.tracker.up("node-b", "udp:lo") is True
            serial_a = next(t for t in a.transports if t.medium == "serial")
            assert isinstance(serial_a, SerialTransport)
            await wait_until(lambda: not serial_a.is_open, "A's port closed after the loss", timeout=2)
            assert serial_a.counters.lost >= 1

            # A new cable (new ptys behind the same links): both ends re-open and the medium comes back.
            cable.plug()
            await wait_until(
                lambda: a.tracker.up("node-b", "serial") is True and b.tracker.up("node-a", "serial") is True,
                "serial back up both ways",
            )
            assert serial_a.counters.reopened >= 1
            assert a.alive("node-b") is True

    asyncio.run(scenario())
