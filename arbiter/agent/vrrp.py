"""VRRP adverts from the peers as this node's keepalived receives them: one raw IP protocol 112 socket per interface.

This module owns the packet parsing (IPv4 header, VRRP v2 and v3 advertisement), the checks keepalived itself
applies before it believes an advert (TTL 255, length, checksum, type), the mapping of a source address to a
peer and of a VRID to an instance, and the newest advert seen per (instance, peer). The policy's cut-path rule
reads that time: a peer that says MASTER over a heartbeat while its adverts no longer arrive here means the VRRP
path is cut, and keepalived is about to make this node MASTER too.

A raw socket sees a packet after the host firewall's input chain, as keepalived's own socket does: a
`ip protocol vrrp drop` rule silences both. The socket joins 224.0.0.18 on its interface so that multicast
adverts are delivered even while keepalived is stopped; unicast adverts need nothing. IPv6 (VRRPv3 over IPv6)
is not covered: keepalived's IPv6 instances would need an AF_INET6 socket of their own.

VRRPv2's simple password (auth type 1) is not compared: the question here is whether the peer's adverts cross
the path, and keepalived logs a mismatch itself. Malformed or foreign packets never raise: each is counted in
`refused` under a reason. Packets from this host's own addresses (multicast looped back to local sockets) are
counted in `own` and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from arbiter.agent.netlink import local_addresses

log = logging.getLogger(__name__)

IPPROTO_VRRP = 112
VRRP_GROUP = "224.0.0.18"
VRRP_TTL = 255  # RFC 3768 5.2.1 / 5798 5.1.1.3: a router that receives less must discard (keepalived does)
TYPE_ADVERTISEMENT = 1
READ_SIZE = 65535
OWN_REFRESH = 1.0  # seconds between re-reads of this host's addresses when an unknown source shows up

OnAdvert = Callable[[str, str, int, float], None]


@dataclass(frozen=True)
class Advert:
    """One VRRP advertisement as parsed; `interval` is in seconds for both versions."""

    source: str
    vrid: int
    priority: int
    version: int
    interval: float
    count: int  # number of addresses it carries
    at: float = 0.0  # monotonic receive time


class NotAnAdvertError(Exception):
    """A packet that is not a valid VRRP advertisement; the message is the counter's reason."""


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`; 0 over data that includes a correct checksum."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def parse(packet: bytes) -> Advert:
    """Parse an IPv4 packet carrying VRRP (as a raw socket returns it); raise NotAnAdvertError(reason) otherwise."""
    if len(packet) < 20:
        raise NotAnAdvertError("short")
    if packet[0] >> 4 != 4:
        raise NotAnAdvertError("ip_header")
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    # The kernel hands raw sockets the total length as received; a shorter buffer means a truncated packet.
    if ihl < 20 or total < ihl or total > len(packet):
        raise NotAnAdvertError("ip_header")
    if packet[9] != IPPROTO_VRRP:
        raise NotAnAdvertError("protocol")
    if packet[8] != VRRP_TTL:
        raise NotAnAdvertError("ttl")
    source, destination = packet[12:16], packet[16:20]
    vrrp = packet[ihl:total]
    if len(vrrp) < 8:
        raise NotAnAdvertError("short")
    version, kind = vrrp[0] >> 4, vrrp[0] & 0x0F
    vrid, priority, count = vrrp[1], vrrp[2], vrrp[3]
    if version not in (2, 3):
        raise NotAnAdvertError("version")
    if kind != TYPE_ADVERTISEMENT:
        raise NotAnAdvertError("type")
    if vrid == 0:
        raise NotAnAdvertError("bad_vrid")
    if version == 2:
        # Header, addresses, then 8 bytes of authentication data (kept even with auth type 0).
        if len(vrrp) < 8 + 4 * count + 8:
            raise NotAnAdvertError("length")
        vrrp = vrrp[: 8 + 4 * count + 8]
        interval = float(vrrp[5])
        if checksum(vrrp) != 0:
            raise NotAnAdvertError("checksum")
    else:
        if len(vrrp) < 8 + 4 * count:
            raise NotAnAdvertError("length")
        vrrp = vrrp[: 8 + 4 * count]
        interval = (struct.unpack_from("!H", vrrp, 4)[0] & 0x0FFF) / 100
        # VRRPv3's checksum covers an IPv4 pseudo-header too (RFC 5798 5.2.8).
        pseudo = source + destination + struct.pack("!BBH", 0, IPPROTO_VRRP, len(vrrp))
        if checksum(pseudo + vrrp) != 0:
            raise NotAnAdvertError("checksum")
    return Advert(
        source=socket.inet_ntoa(source),
        vrid=vrid,
        priority=priority,
        version=version,
        interval=interval,
        count=count,
    )


def encode(
    vrid: int,
    priority: int,
    addresses: Sequence[str] = (),
    *,
    version: int = 2,
    interval: float = 1.0,
    source: str = "0.0.0.0",
    destination: str = VRRP_GROUP,
) -> bytes:
    """A VRRP advertisement (without the IP header) as keepalived sends it: the counterpart of `parse`.

    For tests and the lab, which forge adverts; VRRPv3's checksum needs the IP `source` and `destination`.
    """
    packed = b"".join(socket.inet_aton(a) for a in addresses)
    if version == 2:
        header = struct.pack("!BBBBBBH", 0x21, vrid, priority, len(addresses), 0, round(interval), 0)
        body = header + packed + b"\x00" * 8
        return body[:6] + struct.pack("!H", checksum(body)) + body[8:]
    header = struct.pack("!BBBBHH", 0x31, vrid, priority, len(addresses), round(interval * 100) & 0x0FFF, 0)
    body = header + packed
    pseudo = socket.inet_aton(source) + socket.inet_aton(destination) + struct.pack("!BBH", 0, IPPROTO_VRRP, len(body))
    return body[:6] + struct.pack("!H", checksum(pseudo + body)) + body[8:]


class AdvertListener:
    """Adverts on one interface, matched to instances by VRID and to peers by source address."""

    def __init__(
        self,
        interface: str,
        instances: Mapping[int | None, str],
        peers: Mapping[str, str],
        on_advert: OnAdvert | None = None,
    ) -> None:
        """`instances`: VRID → instance name (key None: any VRID on this interface); `peers`: peer IP → name.

        A peer's addresses must include the source of its adverts (keepalived's unicast_src_ip, or the
        interface's primary address): adverts from any other source are refused as `unknown_source`.
        """
        self.interface = interface
        self.instances = dict(instances)
        self.peers = {str(ipaddress.ip_address(ip)): name for ip, name in peers.items()}
        self.on_advert = on_advert
        self.accepted = 0
        self.own = 0
        self.refused: collections.Counter[str] = collections.Counter()
        self._latest: dict[tuple[str, str], Advert] = {}
        self._own_addresses: frozenset[str] = frozenset()
        self._own_read_at = -OWN_REFRESH
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- public -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the socket and read it from the running event loop. Raises OSError (needs CAP_NET_RAW)."""
        if self._sock is not None:
            raise RuntimeError(f"AdvertListener({self.interface}) already started")
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            sock.setblocking(False)
            try:
                index = socket.if_nametoindex(self.interface)
                mreqn = socket.inet_aton(VRRP_GROUP) + socket.inet_aton("0.0.0.0") + struct.pack("@i", index)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            except OSError as exc:
                # keepalived joins the group itself when it runs; without it only unicast adverts would arrive.
                log.warning("vrrp %s: cannot join %s: %s", self.interface, VRRP_GROUP, exc)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"vrrp listener on {self.interface}: {exc.strerror or exc}") from exc
        self._read_own_addresses()
        self._sock, self._loop = sock, loop
        loop.add_reader(sock.fileno(), self._on_readable)

    def stop(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None

    def last_advert(self, instance: str, peer: str) -> float | None:
        """Monotonic receive time of the newest advert from `peer` for `instance`; None if none yet."""
        advert = self._latest.get((instance, peer))
        return advert.at if advert is not None else None

    def last_priority(self, instance: str, peer: str) -> int | None:
        """Priority in that newest advert (0: the peer is giving up mastership); None if none yet."""
        advert = self._latest.get((instance, peer))
        return advert.priority if advert is not None else None

    def latest(self, instance: str, peer: str) -> Advert | None:
        return self._latest.get((instance, peer))

    # --- receiving --------------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        while self._sock is not None:
            try:
                packet = self._sock.recv(READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self.refused[f"recv:{exc.errno}"] += 1
                return
            self.receive(packet, time.monotonic())

    def receive(self, packet: bytes, at: float) -> Advert | None:
        """Account for one packet received at monotonic time `at`; the accepted advert, or None."""
        try:
            advert = parse(packet)
        except NotAnAdvertError as exc:
            self.refused[str(exc)] += 1
            return None
        peer = self.peers.get(advert.source)
        if peer is None:
            if self._is_own(advert.source):
                self.own += 1
            else:
                self.refused["unknown_source"] += 1
            return None
        instance = self.instances.get(advert.vrid, self.instances.get(None))
        if instance is None:
            self.refused["unknown_vrid"] += 1
            return None
        advert = Advert(advert.source, advert.vrid, advert.priority, advert.version, advert.interval, advert.count, at)
        self._latest[(instance, peer)] = advert
        self.accepted += 1
        if self.on_advert is not None:
            try:
                self.on_advert(instance, peer, advert.priority, at)
            except Exception:
                # The consumer's bug must not stop the listener: every later advert would be lost with it.
                log.exception("vrrp %s: on_advert failed", self.interface)
        return advert

    def _is_own(self, source: str) -> bool:
        if source not in self._own_addresses and time.monotonic() - self._own_read_at >= OWN_REFRESH:
            self._read_own_addresses()
        return source in self._own_addresses

    def _read_own_addresses(self) -> None:
        self._own_read_at = time.monotonic()
        with contextlib.suppress(OSError):  # unknown stays unknown; retried after OWN_REFRESH
            self._own_addresses = local_addresses(socket.AF_INET)
