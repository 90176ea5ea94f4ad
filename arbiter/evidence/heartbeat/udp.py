"""UDP heartbeats on one network interface: a socket bound to that device, unicast to every peer address.

One socket per configured interface (SO_BINDTODEVICE), all on the same port (SO_REUSEADDR): a frame received on
the eth1 socket came in through eth1, so each interface is a medium of its own and a dead NIC or switch shows up
as that medium going down. Frames go to every peer address through every interface; a send that fails (e.g.
ENETUNREACH, EHOSTUNREACH, ENOBUFS) is counted by errno, not raised. Note that Linux treats a destination with
no route through the bound device as on-link and ARPs for it there; a peer answering ARP for all its addresses
on every interface (arp_ignore=0, the default) then gets each frame twice on that interface: the receiver counts
the second copy as a duplicate, not as a refusal.

A NIC that is not there (yet), or a listen address not assigned to it, is a medium down: `open` does not fail, the
socket is opened by `LinkKeeper` with backoff once it can be. SO_BINDTODEVICE binds to the interface's index, so
a NIC removed and added again is a new device: a send failing with ENODEV closes the socket and reopens it.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Sequence

from redis.backoff import AbstractBackoff

from arbiter.evidence.heartbeat.frame import MAX_FRAME
from arbiter.evidence.heartbeat.transport import FrameQueue, Link, LinkKeeper, MediumCounters

# A send failing with one of these means the bound device is gone: the socket must be opened again.
DEVICE_GONE = (errno.ENODEV, errno.ENXIO)


class UdpTransport:
    def __init__(
        self,
        interface: str,
        port: int,
        peers: Sequence[tuple[str, int]],
        *,
        listen_address: str = "",
        medium: str | None = None,
        backoff: AbstractBackoff | None = None,
    ) -> None:
        self.interface = interface
        self.port = port
        self._v6 = any(ipaddress.ip_address(addr).version == 6 for addr, _ in peers)
        # A dual-stack socket when any peer is IPv6: IPv4 peers are then reached as ::ffff:a.b.c.d.
        self.peers = [(f"::ffff:{addr}" if self._v6 and ":" not in addr else addr, p) for addr, p in peers]
        self.listen_address = listen_address
        self._medium = medium or f"udp:{interface}"
        self.counters = MediumCounters()
        self._sock: socket.socket | None = None
        self._frames: FrameQueue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper = LinkKeeper(self._medium, self._try_open, backoff)

    @property
    def medium(self) -> str:
        return self._medium

    @property
    def link(self) -> Link:
        return self._keeper.link

    async def open(self) -> None:
        self._frames = FrameQueue(self.counters)
        self._loop = asyncio.get_running_loop()
        self._keeper.start()

    def _try_open(self) -> str | None:
        assert self._loop is not None
        family = socket.AF_INET6 if self._v6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        step = f"interface {self.interface!r}"
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Before bind: the device decides which of the same-port sockets a datagram belongs to.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            if self._v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            step = f"bind {self.listen_address or '*'}:{self.port} on {self.interface!r}"
            sock.bind((self.listen_address, self.port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            return f"{step}: {exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, 'OSError')})"
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._on_readable)
        return None

    def _on_readable(self) -> None:
        assert self._sock is not None and self._frames is not None
        while True:
            try:
                data = self._sock.recv(MAX_FRAME + 1)
            except BlockingIOError:
                return
            except OSError as exc:
                # An ICMP error queued on the socket surfaces here; it is about a send, not this receive.
                self.counters.send_errors[errno.errorcode.get(exc.errno or 0, "OSError")] += 1
                continue
            if len(data) > MAX_FRAME:
                self.counters.dropped += 1
                continue
            self._frames.put(data)

    def send(self, frame: bytes) -> None:
        if self._sock is None:
            self.counters.send_errors["closed"] += 1
            return
        for address in self.peers:
            try:
                self._sock.sendto(frame, address)
            except OSError as exc:
                self.counters.send_errors[errno.errorcode.get(exc.errno or 0, "OSError")] += 1
                if exc.errno in DEVICE_GONE:
                    self._close_socket()
                    self._keeper.lost(f"interface {self.interface!r} gone: {exc.strerror}")
                    return
            else:
                self.counters.sent += 1

    async def receive(self) -> bytes:
        if self._frames is None:
            raise RuntimeError(f"{self.medium}: receive() before open()")
        return await self._frames.get()

    def close(self) -> None:
        self._keeper.cancel()
        self._close_socket()

    def _close_socket(self) -> None:
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
