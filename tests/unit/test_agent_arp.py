"""ARP frames as the agent builds and reads them (no socket)."""

from __future__ import annotations

import socket

from arbiter.agent import arp

MAC = bytes.fromhex("020000000001")
VIP = socket.inet_aton("10.0.0.100")


def test_gratuitous_request_is_42_bytes_broadcast_with_sender_equal_target() -> None:
    data = arp.frame(arp.OP_REQUEST, MAC, VIP, arp.ZERO_MAC, VIP, arp.BROADCAST)
    assert len(data) == 42
    assert data[:6] == arp.BROADCAST and data[6:12] == MAC and data[12:14] == b"\x08\x06"
    assert arp.parse(data) == (arp.OP_REQUEST, MAC, VIP, arp.ZERO_MAC, VIP)


def test_parse_ignores_other_frames() -> None:
    good = arp.frame(arp.OP_REPLY, MAC, VIP, MAC, arp.ANY, MAC)
    assert arp.parse(good + b"\x00" * 18) is not None  # padded to the Ethernet minimum
    assert arp.parse(good[:41]) is None
    assert arp.parse(good[:12] + b"\x08\x00" + good[14:]) is None  # IPv4, not ARP
    assert arp.parse(good[:16] + b"\x86\xdd" + good[18:]) is None  # protocol type not IPv4
    assert arp.mac_text(MAC) == "02:00:00:00:00:01"
