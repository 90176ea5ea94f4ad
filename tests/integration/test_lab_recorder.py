"""The lab's recorders against real namespaces: a node and a client joined by a veth pair (root only)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from arbiter.lab.events import ARP, VIP_ADD, VIP_DEL, VRRP_STATE, Event, Timeline
from arbiter.lab.netns import LabError
from arbiter.lab.recorder import AddressWatch, ArpWatch, KeepalivedStateWatch, Recorder

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]

VIP = "10.0.0.100"
NODE_MAC = "02:6b:72:65:63:01"
CLIENT_MAC = "02:6b:72:65:63:50"


@dataclass
class Pair:
    node_ns: str
    client_ns: str
    timeline: Timeline
    recorder: Recorder

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.node_ns, *args], check=True, capture_output=True, timeout=10)

    def events(self, *kinds: str) -> list[Event]:
        return [e for e in self.timeline.sorted() if e.kind in kinds]


def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=10)


def _delete_namespace(ns: str) -> None:
    if not os.path.exists(f"/run/netns/{ns}"):
        return
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def pair() -> Iterator[Pair]:
    prefix = f"krec{os.getpid()}"
    node_ns, client_ns = f"{prefix}n", f"{prefix}c"
    recorder = Recorder()
    try:
        for ns in (node_ns, client_ns):
            _delete_namespace(ns)
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh(
            "ip", "link", "add", "eth0", "netns", node_ns, "address", NODE_MAC,
            "type", "veth", "peer", "name", "eth0", "netns", client_ns, "address", CLIENT_MAC,
        )  # fmt: skip
        for ns, cidr in ((node_ns, "10.0.0.1/24"), (client_ns, "10.0.0.50/24")):
            _sh("ip", "-n", ns, "addr", "add", cidr, "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
        yield Pair(node_ns, client_ns, Timeline(), recorder)
    finally:
        recorder.stop()  # every helper process, by PID
        for ns in (node_ns, client_ns):
            _delete_namespace(ns)


def test_vip_add_and_delete_in_order(pair: Pair) -> None:
    watch = pair.recorder.add(AddressWatch(pair.timeline, "node", pair.node_ns, [VIP]))
    pair.recorder.start()
    assert pair.events(VIP_ADD, VIP_DEL) == []

    before = time.monotonic()
    pair.ip("addr", "add", f"{VIP}/24", "dev", "eth0")
    pair.ip("addr", "add", "10.0.0.7/24", "dev", "eth0")  # not watched
    wait_for(lambda: len(pair.events(VIP_ADD)) == 1, "VIP_ADD")
    pair.ip("addr", "del", f"{VIP}/24", "dev", "eth0")
    wait_for(lambda: len(pair.events(VIP_DEL)) == 1, "VIP_DEL")

    # The interface going down does not stop the watch: an address added on a down link is seen.
    pair.ip("link", "set", "eth0", "down")
    pair.ip("addr", "add", f"{VIP}/32", "dev", "eth0")
    wait_for(lambda: len(pair.events(VIP_ADD)) == 2, "VIP_ADD on a down link")
    events = pair.events(VIP_ADD, VIP_DEL)
    assert [(e.kind, e.node, e.detail) for e in events] == [
        (VIP_ADD, "node", VIP),
        (VIP_DEL, "node", VIP),
        (VIP_ADD, "node", VIP),
    ]
    assert before <= events[0].t <= events[1].t <= events[2].t <= time.monotonic()
    assert watch.pids() and watch.running()


def test_preexisting_vip_is_reported_at_start_and_a_killed_monitor_is_relaunched(pair: Pair) -> None:
    pair.ip("addr", "add", f"{VIP}/24", "dev", "eth0")
    watch = pair.recorder.add(AddressWatch(pair.timeline, "node", pair.node_ns, [VIP], restart_delay=0.05))
    pair.recorder.start()
    # start() returns with the current state known: no waiting.
    assert [(e.kind, e.detail) for e in pair.events(VIP_ADD, VIP_DEL)] == [(VIP_ADD, VIP)]
    assert watch.holds(VIP)

    # A power-off kills every process in the namespace, the monitor included: the watch comes back and catches up.
    (first,) = watch.pids()
    os.kill(first, signal.SIGKILL)
    pair.ip("addr", "del", f"{VIP}/24", "dev", "eth0")
    wait_for(lambda: len(pair.events(VIP_DEL)) == 1, "VIP_DEL after the monitor was killed")
    wait_for(lambda: watch.restarts == 1 and watch.pids() != [first], "a relaunched monitor")
    pair.ip("addr", "add", f"{VIP}/24", "dev", "eth0")
    wait_for(lambda: len(pair.events(VIP_ADD)) == 2, "VIP_ADD seen by the relaunched monitor")


def test_address_watch_ends_when_its_namespace_is_deleted(pair: Pair) -> None:
    watch = pair.recorder.add(AddressWatch(pair.timeline, "node", pair.node_ns, [VIP]))
    pair.recorder.start()
    (pid,) = watch.pids()
    subprocess.run(["ip", "netns", "delete", pair.node_ns], check=True, capture_output=True)
    # The monitor must not keep the deleted namespace (and its links) alive.
    wait_for(lambda: not watch.running(), "the reader to end")
    assert not os.path.exists(f"/proc/{pid}")
    assert pair.recorder.stop() == []


def test_arp_watch_reports_changes_only(pair: Pair) -> None:
    watch = ArpWatch(pair.timeline, pair.client_ns, "eth0", [VIP], {NODE_MAC.upper(): "node"}, interval=0.02)
    pair.recorder.add(watch)
    pair.recorder.start()
    # start() returns after the first round: the client's view is known (nobody answers yet).
    assert [(e.node, e.detail) for e in pair.events(ARP)] == [("", f"{VIP} - -")]

    added_at = time.monotonic()
    pair.ip("addr", "add", f"{VIP}/24", "dev", "eth0")
    wait_for(lambda: len(pair.events(ARP)) == 2, "the node's MAC answering")
    answer = pair.events(ARP)[1]
    assert (answer.node, answer.detail) == ("node", f"{VIP} {NODE_MAC} {NODE_MAC}")
    assert added_at <= answer.t <= time.monotonic()  # the child's own monotonic stamp

    rounds = watch.rounds
    wait_for(lambda: watch.rounds >= rounds + 10, "ten more rounds")
    assert len(pair.events(ARP)) == 2  # same answer, no event

    removed_at = time.monotonic()
    pair.ip("addr", "del", f"{VIP}/24", "dev", "eth0")
    wait_for(lambda: len(pair.events(ARP)) == 3, "no reply after the VIP left")
    gone = pair.events(ARP)[2]
    assert (gone.node, gone.detail) == ("", f"{VIP} - -")
    assert gone.t >= removed_at
    assert watch.pids() and watch.running()


def test_arp_watch_names_an_unknown_mac(pair: Pair) -> None:
    pair.ip("addr", "add", f"{VIP}/24", "dev", "eth0")
    watch = pair.recorder.add(ArpWatch(pair.timeline, pair.client_ns, "eth0", [VIP], {}))
    pair.recorder.start()
    assert [(e.node, e.detail) for e in pair.events(ARP)] == [("?", f"{VIP} {NODE_MAC} {NODE_MAC}")]
    assert watch.pids()


def test_arp_watch_refuses_a_slow_interval_and_reports_a_failed_child(pair: Pair) -> None:
    with pytest.raises(ValueError, match="interval"):
        ArpWatch(pair.timeline, pair.client_ns, "eth0", [VIP], {}, interval=0.1)
    broken = ArpWatch(pair.timeline, pair.client_ns, "nosuchif", [VIP], {})
    with pytest.raises(LabError, match="nosuchif"):
        broken.start()
    assert broken.pids() == []


def test_keepalived_state_watch_reads_the_fifo(pair: Pair, tmp_path: Path) -> None:
    fifo = tmp_path / "notify.fifo"
    os.mkfifo(fifo)
    watch = pair.recorder.add(KeepalivedStateWatch(pair.timeline, "node", fifo))
    pair.recorder.start()

    with open(fifo, "w") as writer:  # does not block: the watch holds the FIFO open
        writer.write('INSTANCE "VI_1" BACKUP 150\nINSTANCE "VI_1" MAS')
        writer.flush()
        time.sleep(0.05)  # the rest of the line arrives in a second write
        writer.write('TER 150\nGROUP "G1" MASTER\nINSTANCE "VI_1" MASTER_RX_LOWER_PRI 150\n')
    # keepalived restarted: a new writer, same FIFO.
    with open(fifo, "w") as writer:
        writer.write('INSTANCE "VI_1" FAULT 150\n')
    wait_for(lambda: len(pair.events(VRRP_STATE)) == 3, "three state lines")
    assert [(e.node, e.detail) for e in pair.events(VRRP_STATE)] == [
        ("node", "VI_1 BACKUP"),
        ("node", "VI_1 MASTER"),
        ("node", "VI_1 FAULT"),
    ]

    started = time.monotonic()
    watch.stop()
    assert time.monotonic() - started < 1.0


def test_keepalived_state_watch_refuses_a_plain_file(pair: Pair, tmp_path: Path) -> None:
    plain = tmp_path / "notify.fifo"
    plain.write_text("")
    with pytest.raises(LabError, match="not a FIFO"):
        KeepalivedStateWatch(pair.timeline, "node", plain).start()


def test_recorder_start_failure_stops_what_started_and_stop_is_idempotent(pair: Pair) -> None:
    good = pair.recorder.add(AddressWatch(pair.timeline, "node", pair.node_ns, [VIP]))
    pair.recorder.add(AddressWatch(pair.timeline, "ghost", f"{pair.node_ns}-missing", [VIP]))
    with pytest.raises(LabError):
        pair.recorder.start()
    assert good.pids() == [] and not good.running()
    assert pair.recorder.stop() == []
    assert pair.recorder.stop() == []
