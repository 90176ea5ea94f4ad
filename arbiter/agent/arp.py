"""ARP for a VIP on one interface: gratuitous announcements after taking it, and probes for anyone else holding it.

This module owns the two frames and the reading of the answers. `send_garp` re-announces this node's MAC for
the VIP (keepalived sends its own GARPs on becoming MASTER; the agent repeats them after arbitration, e.g. once
a peer has been fenced, so that clients and switches forget the loser's MAC). `probe` asks who has the VIP and
returns the MACs of every *other* node that answers: another node answering for the VIP is direct evidence of a
dual master, seen the way clients see it.

Both use an AF_PACKET socket and a hand-built frame: the frame is 42 bytes (Ethernet header + one ARP packet),
scapy is not a dependency and would cost its import time, and a raw frame is what lets the probe choose its
sender fields. The probe's sender address is 0.0.0.0 (an RFC 5227 probe): it teaches nobody's ARP cache
anything, and Linux answers it with a unicast reply to our MAC. Besides replies, an announcement for the VIP
by another MAC during the probe (a GARP: sender = target = VIP) also counts as an answer: it is a claim too.
Needs CAP_NET_RAW.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ANY = b"\x00" * 4
OP_REQUEST, OP_REPLY = 1, 2
PACKET_OUTGOING = 4  # sockaddr_ll pkttype of a frame this host sent (AF_PACKET sees those too)


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def frame(op: int, sender_mac: bytes, sender_ip: bytes, target_mac: bytes, target_ip: bytes, dest: bytes) -> bytes:
    """An Ethernet frame carrying one IPv4-over-Ethernet ARP packet (42 bytes; the kernel pads it to 60)."""
    ether = dest + sender_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sender_mac, sender_ip, target_mac, target_ip)
    return ether + arp


def parse(data: bytes) -> tuple[int, bytes, bytes, bytes, bytes] | None:
    """(op, sender MAC, sender IP, target MAC, target IP) of an IPv4 ARP frame; None for anything else."""
    if len(data) < 42 or data[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack("!HHBBH6s4s6s4s", data[14:42])
    if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
        return None
    return op, sha, spa, tha, tpa


def _open(interface: str) -> tuple[socket.socket, bytes]:
    """An AF_PACKET socket bound to `interface` for ARP, and the interface's MAC (from the bound address)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    try:
        sock.bind((interface, ETH_P_ARP))
        mac: bytes = sock.getsockname()[4]
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"arp on {interface}: {exc.strerror or exc}") from exc
    if len(mac) != 6:
        sock.close()
        raise OSError(f"arp on {interface}: not an Ethernet interface (hardware address {mac.hex()!r})")
    return sock, mac


def send_garp(interface: str, ip: str, count: int = 1, interval: float = 0.02) -> None:
    """Broadcast `count` gratuitous ARP requests (sender = target = `ip`, our MAC), `interval` seconds apart.

    Blocking (it sleeps between repeats): call it in a worker thread from asyncio. Raises OSError.
    """
    vip = ipaddress.IPv4Address(ip).packed
    sock, mac = _open(interface)
    with sock:
        announcement = frame(OP_REQUEST, mac, vip, ZERO_MAC, vip, BROADCAST)
        for i in range(count):
            if i:
                # Spaced, not back to back: one burst of loss on the switch must not take every copy.
                time.sleep(interval)
            sock.send(announcement)


async def probe(interface: str, ip: str, timeout: float) -> set[str]:
    """Ask who has `ip` on `interface` and return the MACs (aa:bb:..) of other nodes answering within `timeout`.

    The request goes out twice (at once and at half the timeout) so that a single lost frame does not read as
    "nobody holds it". Raises OSError when the socket cannot be opened or the request not sent.
    """
    vip = ipaddress.IPv4Address(ip).packed
    loop = asyncio.get_running_loop()
    sock, mac = _open(interface)
    answers: set[str] = set()

    def on_readable() -> None:
        while True:
            try:
                data, address = sock.recvfrom(128)
            except BlockingIOError:
                return
            except OSError:
                return
            if address[2] == PACKET_OUTGOING:
                continue
            arp = parse(data)
            if arp is None:
                continue
            op, sha, spa, _tha, tpa = arp
            if sha == mac or spa != vip:
                continue
            if op == OP_REPLY or (op == OP_REQUEST and tpa == vip):
                answers.add(mac_text(sha))

    request = frame(OP_REQUEST, mac, ANY, ZERO_MAC, vip, BROADCAST)
    with sock:
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), on_readable)
        try:
            sock.send(request)
            await asyncio.sleep(timeout / 2)
            sock.send(request)
            await asyncio.sleep(timeout / 2)
            on_readable()  # whatever arrived in the last instant
        finally:
            loop.remove_reader(sock.fileno())
    return answers
