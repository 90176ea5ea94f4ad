"""ARP for a VIP over a veth pair between two namespaces the test creates: the probe finds the node that holds
the VIP (and not this one), and gratuitous ARP arrives on the other side as sent."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from arbiter.agent import arp
from arbiter.lab.netns import run
from tests.integration.agent_netns import NsThread, NsWorker, namespaces

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, AF_PACKET)")]

A_IP, B_IP, VIP = "10.96.0.1", "10.96.0.2", "10.96.0.100"


def mac_of(ns: str, dev: str) -> str:
    return str(json.loads(run(["ip", "-j", "link", "show", dev], ns=ns).stdout)[0]["address"])


def test_probe_finds_the_holder_and_garp_arrives() -> None:
    with namespaces("aa", "ab") as (a, b):
        run(["ip", "link", "add", "a0", "netns", a, "type", "veth", "peer", "name", "b0", "netns", b])
        for ns, dev, ip in ((a, "a0", A_IP), (b, "b0", B_IP)):
            run(["ip", "addr", "add", f"{ip}/24", "dev", dev], ns=ns)
            run(["ip", "link", "set", dev, "up"], ns=ns)
        mac_a, mac_b = mac_of(a, "a0"), mac_of(b, "b0")
        with NsThread(a) as loop_a, NsWorker(a) as in_a, NsWorker(b) as in_b:
            assert loop_a.run(arp.probe("a0", VIP, 0.2)) == set()

            run(["ip", "addr", "add", f"{VIP}/24", "dev", "b0"], ns=b)
            started = time.monotonic()
            assert loop_a.run(arp.probe("a0", VIP, 0.2)) == {mac_b}
            print(f"\nprobe answered, {time.monotonic() - started:.3f} s with timeout 0.2 s")

            # Both hold it: the probe from a reports only b, never a's own MAC.
            run(["ip", "addr", "add", f"{VIP}/24", "dev", "a0"], ns=a)
            assert loop_a.run(arp.probe("a0", VIP, 0.2)) == {mac_b}
            run(["ip", "addr", "del", f"{VIP}/24", "dev", "b0"], ns=b)
            assert loop_a.run(arp.probe("a0", VIP, 0.2)) == set()

            # GARP from a, read in b with a packet socket of its own.
            def listen() -> socket.socket:
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(arp.ETH_P_ARP))
                sock.bind(("b0", arp.ETH_P_ARP))
                sock.settimeout(2)
                return sock

            listener = in_b.call(listen)
            try:
                in_a.call(arp.send_garp, "a0", VIP, 2)
                received = [in_b.call(listener.recv, 128) for _ in range(2)]
            finally:
                in_b.call(listener.close)
            vip = socket.inet_aton(VIP)
            mac = bytes.fromhex(mac_a.replace(":", ""))
            for data in received:
                assert data[:6] == b"\xff" * 6 and data[6:12] == mac
                assert arp.parse(data) == (arp.OP_REQUEST, mac, vip, b"\x00" * 6, vip)
