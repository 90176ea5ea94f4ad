"""VipWatch against the kernel: addresses added and removed in a namespace the test creates.

The watcher runs on an asyncio loop in a thread inside the namespace; another thread in the same namespace
changes addresses through pyroute2, so the measured latency (request sent → event seen by the watcher) has no
process start-up in it. Latency is printed, never asserted: only behaviour is.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from arbiter.agent import netlink
from arbiter.agent.netlink import VipWatch
from arbiter.lab.netns import run
from tests.integration.agent_netns import NsThread, NsWorker, namespaces

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns)")]

VIP4, VIP6, OTHER = "10.99.0.10", "fd00:99::10", "10.99.0.20"


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, bool, float]] = []
        self.called_at: list[float] = []
        self._cond = threading.Condition()

    def __call__(self, instance: str, present: bool, at: float) -> None:
        with self._cond:
            self.called_at.append(time.monotonic())
            self.items.append((instance, present, at))
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[str, bool, float]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= count, timeout), f"events so far: {self.items}"
            return list(self.items)


@pytest.fixture
def ns() -> Iterator[str]:
    with namespaces("nl") as (name,):
        for dev in ("vip0", "other0"):
            # veth, not dummy: this kernel has no dummy module; the peer end just stays in the namespace.
            run(["ip", "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p"], ns=name)
            run(["ip", "link", "set", dev, "up"], ns=name)
        yield name


def settle() -> None:
    time.sleep(0.05)  # room for an event that should not come


def test_events_and_presence(ns: str) -> None:
    run(["ip", "addr", "add", f"{OTHER}/24", "dev", "vip0"], ns=ns)  # there before start: state, not an event
    events = Events()
    instances = {"VI_1": ("vip0", [VIP4, VIP6]), "VI_2": ("vip0", [OTHER]), "VI_3": ("other0", [VIP4])}
    watch = VipWatch(instances, on_change=events)
    with NsThread(ns) as watcher, NsWorker(ns) as actor:
        watcher.run(watch.start())
        try:
            assert (watch.present("VI_1"), watch.present("VI_2"), watch.present("VI_3")) == (False, True, False)
            ipr = actor.call(IPRoute)
            try:
                vip0 = actor.call(lambda: ipr.link_lookup(ifname="vip0")[0])
                other0 = actor.call(lambda: ipr.link_lookup(ifname="other0")[0])
                latencies, delivered = [], []
                for round_ in range(20):
                    sent = time.monotonic()
                    actor.call(lambda: ipr.addr("add", index=vip0, address=VIP4, prefixlen=32))
                    instance, present, at = events.wait(2 * round_ + 1)[-1]
                    latencies.append(at - sent)
                    delivered.append(events.called_at[-1] - sent)
                    assert (instance, present) == ("VI_1", True)
                    assert watch.present("VI_1") and watch.addresses("VI_1") == {VIP4}
                    actor.call(lambda: ipr.addr("del", index=vip0, address=VIP4, prefixlen=32))
                    assert events.wait(2 * round_ + 2)[-1][:2] == ("VI_1", False)
                    assert not watch.present("VI_1")
                ms, cb = sorted(x * 1000 for x in latencies), sorted(x * 1000 for x in delivered)
                print(
                    f"\nnetlink: address request sent → event read, {len(ms)} adds: p50 {statistics.median(ms):.3f} ms,"
                    f" max {ms[-1]:.3f} ms; → on_change called: p50 {statistics.median(cb):.3f} ms, max {cb[-1]:.3f} ms"
                )
                seen = len(events.items)

                # ANY VIP = holding: the second VIP and the removal of the first change nothing.
                run(["ip", "addr", "add", f"{VIP4}/24", "dev", "vip0"], ns=ns)
                events.wait(seen + 1)
                run(["ip", "addr", "add", f"{VIP6}/64", "dev", "vip0", "nodad"], ns=ns)
                run(["ip", "addr", "del", f"{VIP4}/24", "dev", "vip0"], ns=ns)
                settle()
                assert len(events.items) == seen + 1 and watch.present("VI_1")
                assert watch.addresses("VI_1") == {VIP6}
                run(["ip", "addr", "del", f"{VIP6}/64", "dev", "vip0"], ns=ns)
                assert events.wait(seen + 2)[-1][:2] == ("VI_1", False)

                # Same address on another interface: only that interface's instance holds.
                actor.call(lambda: ipr.addr("add", index=other0, address=VIP4, prefixlen=24))
                assert events.wait(seen + 3)[-1][:2] == ("VI_3", True)
                assert not watch.present("VI_1")
                # The interface vanishes: its addresses go with it, and so does the holding.
                run(["ip", "link", "del", "other0"], ns=ns)
                assert events.wait(seen + 4)[-1][:2] == ("VI_3", False)
                settle()
                assert [e[0] for e in events.items[seen:]] == ["VI_1", "VI_1", "VI_3", "VI_3"]
                assert watch.present("VI_2")
            finally:
                actor.call(ipr.close)
        finally:
            watcher.call(watch.stop)


def test_lost_events_are_recovered_by_a_fresh_dump(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny receive buffer and a watcher too busy to read: the kernel drops events (ENOBUFS).
    monkeypatch.setattr(netlink, "RCVBUF", 4096)
    events = Events()
    watch = VipWatch({"VI_1": ("vip0", [VIP4])}, on_change=events)
    batch = "".join(f"addr add 10.98.{i // 250}.{i % 250 + 1}/32 dev vip0\n" for i in range(300))
    with NsThread(ns) as watcher:
        watcher.run(watch.start())
        try:
            # The watcher's loop sleeps (blocked) while 300 addresses and then the VIP are added.
            busy = threading.Thread(target=watcher.call, args=(time.sleep, 1.0))
            busy.start()
            time.sleep(0.1)
            run(["ip", "-batch", "-"], ns=ns, input_text=batch + f"addr add {VIP4}/32 dev vip0\n")
            busy.join()
            assert events.wait(1)[-1][:2] == ("VI_1", True)
            assert watch.resyncs >= 1
            assert watch.present("VI_1")
        finally:
            watcher.call(watch.stop)
