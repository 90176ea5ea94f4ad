"""Reference quorum against real ICMP inside a network namespace this test creates.

The namespace has two addresses on its loopback (both answer), an nft rule that drops echo requests to one of
them (a silent reference: the round must end at the timeout), and an address with no route at all (icmplib
then reports packet_loss 0.0; the round must still count it as silent). Pings run in a thread that joined the
namespace with setns(2), so nothing leaves it. The namespace (and its nft table with it) is removed by name.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from arbiter.evidence.reference import Change, ReferenceQuorum, icmp_round

pytestmark = pytest.mark.integration

NS = f"kref{os.getpid()}"
UP, DROPPED, NO_ROUTE = "10.77.0.1", "10.77.0.2", "10.78.0.1"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root and nft to create a network namespace")
    _ip("netns", "add", NS)
    try:
        _ip("-n", NS, "link", "set", "lo", "up")
        for addr in (UP, DROPPED):
            _ip("-n", NS, "addr", "add", f"{addr}/32", "dev", "lo")
        rules = (
            "add table inet kref\n"
            "add chain inet kref input { type filter hook input priority 0; }\n"
            f"add rule inet kref input ip daddr {DROPPED} icmp type echo-request drop\n"
        )
        subprocess.run(["ip", "netns", "exec", NS, "nft", "-f", "-"], input=rules, text=True, check=True, timeout=10)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "delete", NS], check=False, capture_output=True, timeout=10)


def in_netns(ns: str, job: Callable[[], T]) -> T:
    """Run `job` in a fresh thread that joined `ns`: sockets it opens live there, the test's own thread stays."""
    box: dict[str, T | BaseException] = {}

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            box["result"] = job()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(30)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def test_replies_are_counted_and_silence_is_not(netns: str) -> None:
    replies = in_netns(netns, lambda: asyncio.run(icmp_round([UP, DROPPED, NO_ROUTE], 0.3)))
    assert replies == {UP: True, DROPPED: False, NO_ROUTE: False}


def test_round_is_bounded_by_the_timeout_and_quorum_follows(netns: str) -> None:
    ref = ReferenceQuorum([UP, DROPPED, NO_ROUTE], quorum=2, interval=1.0, timeout=0.25, rise=1, fall=1)

    def one_round() -> tuple[float, int, Change | None]:
        started = time.monotonic()
        done, change = asyncio.run(ref.round())
        return time.monotonic() - started, done.replied, change

    elapsed, replied, change = in_netns(netns, one_round)
    assert replied == 1
    assert change is Change.LOST
    # Behavioural bound, not a benchmark: the dropped echo must not hold the round past its timeout (+ slack).
    assert elapsed < 0.25 + 0.2


def test_quorum_of_one_with_one_live_reference(netns: str) -> None:
    ref = ReferenceQuorum([DROPPED, UP], quorum=1, interval=1.0, timeout=0.2, rise=1, fall=1)
    done, change = in_netns(netns, lambda: asyncio.run(ref.round()))
    assert (done.replied, change, ref.quorate) == (1, Change.GAINED, True)
