"""The client's view of a VIP: who answers ARP for it, probed every `interval` seconds from inside the client namespace.

    python -m arbiter.lab.arpwatch IFACE VIP [VIP...] [--interval 0.05] [--src-ip A.B.C.D] [--rounds N]

Each round sends one broadcast ARP request per VIP from IFACE's own MAC and IPv4 address (AF_PACKET raw socket,
stdlib only), collects the replies until the next round starts, then prints one line per VIP and flushes it:

    <monotonic time> <vip> <mac of the first reply or -> <every replying mac, comma-separated, or ->

The time is the arrival of the first reply, or the moment the request was sent when nobody answered;
CLOCK_MONOTONIC is shared by every network namespace, so the parent can put it on its timeline as is.
Only replies addressed to the client's IP count: gratuitous ARP from a node is not an answer to the client.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence

ETH_P_ARP = 0x0806
PACKET_OUTGOING = 4
SIOCGIFADDR = 0x8915
SIOCGIFHWADDR = 0x8927
BROADCAST = b"\xff" * 6


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def interface_mac(iface: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("256s", iface.encode()[:15]))
    return ifreq[18:24]


def interface_ipv4(iface: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            ifreq = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", iface.encode()[:15]))
        except OSError as exc:
            raise SystemExit(f"arpwatch: {iface} has no IPv4 address ({exc}); pass --src-ip") from exc
    return ifreq[20:24]


def arp_request(src_mac: bytes, src_ip: bytes, target_ip: bytes) -> bytes:
    ether = BROADCAST + src_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src_mac, src_ip, b"\x00" * 6, target_ip)
    return (ether + arp).ljust(60, b"\x00")  # minimum Ethernet frame


def parse_reply(frame: bytes, my_ip: bytes) -> tuple[bytes, bytes] | None:
    """An ARP reply addressed to `my_ip` -> (sender IP, sender MAC); None for anything else."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    _htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    if op != 2 or ptype != 0x0800 or hlen != 6 or plen != 4 or tpa != my_ip:
        return None
    return spa, sha


def watch(iface: str, vips: Sequence[str], interval: float, src_ip: str | None, rounds: int) -> None:
    targets = {ipaddress.IPv4Address(v).packed: v for v in vips}
    my_mac = interface_mac(iface)
    my_ip = ipaddress.IPv4Address(src_ip).packed if src_ip else interface_ipv4(iface)
    requests = {packed: arp_request(my_mac, my_ip, packed) for packed in targets}
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((iface, ETH_P_ARP))
    sock.setblocking(False)
    done = 0
    next_round = time.monotonic()
    while rounds <= 0 or done < rounds:
        sent_at = time.monotonic()
        for frame in requests.values():
            sock.send(frame)
        first_at: dict[str, float] = {}
        answers: dict[str, list[str]] = {v: [] for v in vips}
        deadline = max(next_round + interval, sent_at + interval / 2)
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], left)
            if not readable:
                continue
            while True:
                try:
                    frame, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                now = time.monotonic()
                if addr[2] == PACKET_OUTGOING:
                    continue
                reply = parse_reply(frame, my_ip)
                if reply is None or reply[0] not in targets:
                    continue
                vip, mac = targets[reply[0]], mac_text(reply[1])
                if mac not in answers[vip]:
                    answers[vip].append(mac)
                    first_at.setdefault(vip, now)
        for vip in vips:
            macs = answers[vip]
            line = f"{first_at.get(vip, sent_at):.6f} {vip} {macs[0] if macs else '-'} {','.join(macs) or '-'}"
            print(line, flush=True)
        done += 1
        next_round = deadline


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arbiter.lab.arpwatch", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("iface")
    parser.add_argument("vips", nargs="+")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between rounds (default 0.05)")
    parser.add_argument("--src-ip", default=None, help="sender IP (default: IFACE's IPv4 address)")
    parser.add_argument("--rounds", type=int, default=0, help="stop after N rounds (default: run until killed)")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be positive")
    try:
        for vip in args.vips:
            ipaddress.IPv4Address(vip)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        watch(args.iface, list(dict.fromkeys(args.vips)), args.interval, args.src_ip, args.rounds)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    except OSError as exc:
        print(f"arpwatch: {args.iface}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
