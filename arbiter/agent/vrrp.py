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
`refused` under a reason (and per source in `refused_from`), with a warning naming the source and the reason at
most once a minute per pair. Packets from this host's own addresses (multicast looped back to local sockets)
are counted in `own` and otherwise ignored.

"No advert seen" means something only while the listener reads: `listening_since(instance, peer)` is when it
started, so a master never heard since then counts as silent since then (V1, L3). It is None, "not observed",
when a refused packet may have been that peer's advert: one from the peer's address (routed unicast VRRP
arrives with a TTL below 255, which keepalived's own check may accept), or one for the instance from an
address no peer lists. Silence proves nothing then, and the cut-path rules fall back to adverts actually seen.
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
from typing import Any

from arbiter.agent.netlink import local_addresses

log = logging.getLogger(__name__)

IPPROTO_VRRP = 112
VRRP_GROUP = "224.0.0.18"
VRRP_TTL = 255  # RFC 3768 5.2.1 / 5798 5.1.1.3: a router that receives less must discard (keepalived does)
TYPE_ADVERTISEMENT = 1
READ_SIZE = 65535
OWN_REFRESH = 1.0  # seconds between re-reads of this host's addresses when an unknown source shows up
WARN_EVERY = 60.0  # seconds between two warnings for one (source, reason)
MAX_SOURCES = 64  # refused sources counted one by one; the rest under OTHER_SOURCES (a LAN can be noisy)
OTHER_SOURCES = "other"
# Why a refused packet matters to an operator, by reason (the counter's key); the default is the reason itself.
CONSEQUENCE = "its adverts are not observed, so rules V1 and L3 cannot see a cut VRRP path to its sender"

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
    """A packet that is not a valid VRRP advertisement; the message is the counter's reason. `source` is the
    IPv4 source when the header was long enough to carry one; `detail` says more for a log line."""

    def __init__(self, reason: str, source: str | None = None, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.source = source
        self.detail = detail


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
    source, destination = packet[12:16], packet[16:20]
    sender = socket.inet_ntoa(source)

    def refuse(reason: str, detail: str = "") -> NotAnAdvertError:
        return NotAnAdvertError(reason, sender, detail)

    if packet[0] >> 4 != 4:
        raise NotAnAdvertError("ip_header")
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    # The kernel hands raw sockets the total length as received; a shorter buffer means a truncated packet.
    if ihl < 20 or total < ihl or total > len(packet):
        raise refuse("ip_header")
    if packet[9] != IPPROTO_VRRP:
        raise refuse("protocol")
    if packet[8] != VRRP_TTL:
        raise refuse("ttl", f"TTL {packet[8]}, not {VRRP_TTL}: routed (unicast) VRRP?")
    vrrp = packet[ihl:total]
    if len(vrrp) < 8:
        raise refuse("short")
    version, kind = vrrp[0] >> 4, vrrp[0] & 0x0F
    vrid, priority, count = vrrp[1], vrrp[2], vrrp[3]
    if version not in (2, 3):
        raise refuse("version", f"VRRP version {version}")
    if kind != TYPE_ADVERTISEMENT:
        raise refuse("type", f"VRRP type {kind}")
    if vrid == 0:
        raise refuse("bad_vrid")
    if version == 2:
        # Header, addresses, then 8 bytes of authentication data (kept even with auth type 0).
        if len(vrrp) < 8 + 4 * count + 8:
            raise refuse("length")
        vrrp = vrrp[: 8 + 4 * count + 8]
        interval = float(vrrp[5])
        if checksum(vrrp) != 0:
            raise refuse("checksum")
    else:
        if len(vrrp) < 8 + 4 * count:
            raise refuse("length")
        vrrp = vrrp[: 8 + 4 * count]
        interval = (struct.unpack_from("!H", vrrp, 4)[0] & 0x0FFF) / 100
        # VRRPv3's checksum covers an IPv4 pseudo-header too (RFC 5798 5.2.8).
        pseudo = source + destination + struct.pack("!BBH", 0, IPPROTO_VRRP, len(vrrp))
        if checksum(pseudo + vrrp) != 0:
            raise refuse("checksum", "(VRRPv3's covers the IP addresses: NAT or a rewritten source?)")
    return Advert(
        source=sender,
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
        self.refused_from: dict[str, collections.Counter[str]] = {}  # source → reason → packets
        self.listening_from: float | None = None  # monotonic time the socket started reading
        self.group_joined = True
        # Peers (by name) and instances whose adverts may have been among the refused packets.
        self.unobserved_peers: set[str] = set()
        self.unobserved_instances: set[str] = set()
        self._warned: dict[tuple[str, str], tuple[float, int]] = {}  # (source, reason) → (last warning, since)
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
                # keepalived joins the group itself when it runs; without it only unicast adverts would arrive,
                # so a silence here proves nothing (see listening_since).
                self.group_joined = False
                log.warning("vrrp %s: cannot join %s: %s", self.interface, VRRP_GROUP, exc)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"vrrp listener on {self.interface}: {exc.strerror or exc}") from exc
        self._read_own_addresses()
        self._sock, self._loop = sock, loop
        loop.add_reader(sock.fileno(), self._on_readable)
        self.begin(time.monotonic())

    def stop(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        self.listening_from = None

    def begin(self, at: float) -> None:
        """From monotonic time `at` on, every advert reaching the interface is seen here (start() calls it once
        the socket reads; tests that feed `receive` call it themselves)."""
        self.listening_from = at

    def listening_since(self, instance: str, peer: str) -> float | None:
        """Since when no advert of `peer` for `instance` could have passed unseen: the listening start; None
        when adverts are not observed (not listening, no multicast membership, or a refused packet that may
        have been one of that peer's adverts for this instance)."""
        if self.listening_from is None or not self.group_joined:
            return None
        if peer in self.unobserved_peers or instance in self.unobserved_instances:
            return None
        return self.listening_from

    def stats(self, now: float) -> dict[str, Any]:
        """What `status` shows of this listener (JSON-ready; ages in seconds from monotonic `now`)."""
        return {
            "listening": self.listening_from is not None,
            "listening_age_s": None if self.listening_from is None else round(max(0.0, now - self.listening_from), 3),
            "multicast_joined": self.group_joined,
            "accepted": self.accepted,
            "own": self.own,
            "refused": dict(sorted(self.refused.items())),
            "refused_from": {source: dict(sorted(c.items())) for source, c in sorted(self.refused_from.items())},
            "unobserved": {"peers": sorted(self.unobserved_peers), "instances": sorted(self.unobserved_instances)},
        }

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
            self.refused[exc.reason] += 1
            if exc.source is not None and not self._is_own(exc.source):
                peer = self.peers.get(exc.source)
                if peer is not None:
                    self.unobserved_peers.add(peer)
                else:  # whose advert, for which instance, cannot be told: none is observed for sure
                    self.unobserved_instances.update(self.instances.values())
                self._refused_from(exc.source, exc.reason, exc.detail, at, peer)
            return None
        peer = self.peers.get(advert.source)
        instance = self.instances.get(advert.vrid, self.instances.get(None))
        if peer is None:
            if self._is_own(advert.source):
                self.own += 1
            else:
                self.refused["unknown_source"] += 1
                if instance is not None:  # an advert for this instance from an address no peer lists
                    self.unobserved_instances.add(instance)
                    detail = f"VRID {advert.vrid} ({instance}) from an address no peer's heartbeat_addresses list"
                    self._refused_from(advert.source, "unknown_source", detail, at, None)
            return None
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

    def _refused_from(self, source: str, reason: str, detail: str, at: float, peer: str | None) -> None:
        """Count a refused packet under its source and warn, at most once per WARN_EVERY per (source, reason)."""
        key = source if source in self.refused_from or len(self.refused_from) < MAX_SOURCES else OTHER_SOURCES
        self.refused_from.setdefault(key, collections.Counter())[reason] += 1
        last, since = self._warned.get((key, reason), (None, 0))
        if last is not None and at - last < WARN_EVERY:
            self._warned[(key, reason)] = (last, since + 1)
            return
        self._warned[(key, reason)] = (at, 0)
        sender = f"{source} ({peer})" if peer is not None else source
        more = f"; {since} more since the last warning" if since else ""
        log.warning(
            "vrrp %s: refused a VRRP packet from %s: %s%s; %s%s",
            self.interface,
            sender,
            reason,
            f" ({detail})" if detail else "",
            CONSEQUENCE,
            more,
        )

    def _is_own(self, source: str) -> bool:
        if source not in self._own_addresses and time.monotonic() - self._own_read_at >= OWN_REFRESH:
            self._read_own_addresses()
        return source in self._own_addresses

    def _read_own_addresses(self) -> None:
        self._own_read_at = time.monotonic()
        with contextlib.suppress(OSError):  # unknown stays unknown; retried after OWN_REFRESH
            self._own_addresses = local_addresses(socket.AF_INET)
