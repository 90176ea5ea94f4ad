"""A node that boots with a heartbeat medium missing: the service runs, the medium is down here with its reason
and next retry, and it comes up by itself when the device appears (issue 12 item 9).

Real media only: a serial cable is a socat pty pair plugged after the services started; a NIC that appears
later is a veth end moved into a namespace this test creates, after the service inside it started.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from redis.backoff import ExponentialBackoff

from arbiter.evidence.heartbeat import HeartbeatService, HeartbeatTransport, SerialTransport, UdpTransport
from tests.integration.agent_netns import NsThread, namespaces
from tests.integration.test_heartbeat_transport import DEADTIME, INTERVAL, KEY, Cable, snapshot, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="SO_BINDTODEVICE and namespaces need root"),
    pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat"),
]

PORT = 20000 + (os.getpid() + 7) % 20000


def service(node: str, peer: str, transports: list[HeartbeatTransport]) -> HeartbeatService:
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


def test_serial_device_missing_at_start_is_a_medium_down_until_the_cable_appears(tmp_path: Path) -> None:
    cable = Cable(tmp_path / "ttyA", tmp_path / "ttyB")  # not plugged: neither device exists yet

    def serial(path: Path) -> SerialTransport:
        return SerialTransport(path, 115200, medium="serial", backoff_initial=0.02, backoff_cap=0.25)

    async def scenario() -> None:
        a = service("node-a", "node-b", [UdpTransport("lo", PORT, [("127.0.0.1", PORT + 1)]), serial(cable.a)])
        b = service("node-b", "node-a", [UdpTransport("lo", PORT + 1, [("127.0.0.1", PORT)]), serial(cable.b)])
        async with a, b:
            await wait_until(lambda: a.alive("node-b") is True and b.alive("node-a") is True, "alive over UDP")
            link = a.stats()["media"]["serial"]["link"]
            assert link["open"] is False
            assert str(cable.a) in link["reason"] and "No such file" in link["reason"]
            assert link["failures"] >= 1 and link["next_retry_in_s"] is not None
            assert link["next_retry_in_s"] <= 0.25  # the cap
            event = await asyncio.wait_for(a.link_events.get(), 1)
            assert (event.medium, event.link.open) == ("serial", False)
            assert a.stats()["media"]["udp:lo"]["link"]["open"] is True

            cable.plug()  # the cable appears (socat started after the services)
            took = await wait_until(
                lambda: a.tracker.up("node-b", "serial") is True and b.tracker.up("node-a", "serial") is True,
                "serial up both ways after the cable appeared",
                timeout=3,
            )
            assert took < 1.0  # the retry caps at 0.25 s here
            assert a.stats()["media"]["serial"]["link"]["open"] is True
            assert a.stats()["media"]["serial"]["link"]["reason"] is None
            event = await asyncio.wait_for(a.link_events.get(), 1)
            assert (event.medium, event.link.open) == ("serial", True)

    try:
        asyncio.run(scenario())
    finally:
        cable.cut()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def test_udp_medium_whose_nic_appears_after_start(tmp_path: Path) -> None:
    """Node A's heartbeat NIC `hb0` does not exist when its service starts; it appears (a veth end moved into
    A's namespace and renamed), and the medium comes up without restarting anything."""
    with namespaces("a", "b") as (ns_a, ns_b):
        ip("-n", ns_b, "link", "add", "hb0", "type", "veth", "peer", "name", "spare0")
        ip("-n", ns_b, "addr", "add", "10.77.0.2/24", "dev", "hb0")
        ip("-n", ns_b, "link", "set", "hb0", "up")
        fast = ExponentialBackoff(cap=0.2, base=0.02)
        with NsThread(ns_a) as in_a, NsThread(ns_b) as in_b:

            async def make(node: str, peer: str, address: str) -> HeartbeatService:
                hb = service(node, peer, [UdpTransport("hb0", PORT, [(address, PORT)], backoff=fast)])
                await hb.start()
                return hb

            a = in_a.run(make("node-a", "node-b", "10.77.0.2"))
            b = in_b.run(make("node-b", "node-a", "10.77.0.1"))
            try:
                time.sleep(DEADTIME + 0.2)
                link = in_a.call(lambda: a.stats()["media"]["udp:hb0"]["link"])
                assert link["open"] is False
                assert "ENODEV" in link["reason"] and "'hb0'" in link["reason"]
                assert in_a.call(lambda: a.alive("node-b")) is False
                assert in_a.call(lambda: a.stats()["media"]["udp:hb0"]["send_errors"].get("closed", 0)) > 0

                # The NIC appears: moved into A's namespace, renamed, addressed, up.
                ip("-n", ns_b, "link", "set", "spare0", "netns", ns_a)
                ip("-n", ns_a, "link", "set", "spare0", "name", "hb0")
                ip("-n", ns_a, "addr", "add", "10.77.0.1/24", "dev", "hb0")
                ip("-n", ns_a, "link", "set", "hb0", "up")
                deadline = time.monotonic() + 3
                while not (in_a.call(lambda: a.alive("node-b")) and in_b.call(lambda: b.alive("node-a"))):
                    assert time.monotonic() < deadline, "udp:hb0 did not come up after the NIC appeared"
                    time.sleep(0.02)
                assert in_a.call(lambda: a.stats()["media"]["udp:hb0"]["link"]["open"]) is True
            finally:
                in_a.run(a.stop())
                in_b.run(b.stop())


def test_udp_medium_whose_listen_address_is_assigned_after_start() -> None:
    """A listen address not (yet) on the node: bind fails with EADDRNOTAVAIL, the medium is down with that reason,
    and it opens once the address is assigned."""
    with namespaces("addr") as (ns,):
        fast = ExponentialBackoff(cap=0.2, base=0.02)
        with NsThread(ns) as inside:

            async def make() -> UdpTransport:
                udp = UdpTransport("lo", PORT, [("10.77.1.2", PORT)], listen_address="10.77.1.1", backoff=fast)
                await udp.open()
                return udp

            udp = inside.run(make())
            try:
                link = inside.call(lambda: udp.link)
                assert link.open is False and "EADDRNOTAVAIL" in link.reason and "10.77.1.1" in link.reason
                ip("-n", ns, "addr", "add", "10.77.1.1/32", "dev", "lo")
                deadline = time.monotonic() + 3
                while not inside.call(lambda: udp.link.open):
                    assert time.monotonic() < deadline, "the medium did not open after the address was assigned"
                    time.sleep(0.02)
            finally:
                inside.call(udp.close)
