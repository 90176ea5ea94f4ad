"""The local truth about the VIPs: which instance's VIP is on its interface right now, from kernel netlink events.

This module owns one rtnetlink socket subscribed to IPv4 and IPv6 address events, the table of VIP addresses
currently configured per interface, and the callback fired the moment an instance starts or stops holding.
keepalived adds the VIP (and sends its GARPs) before it runs any notify script, so this is the earliest sign of
a new MASTER the agent can have: the event arrives within a fraction of a millisecond of the kernel change.

An instance is *holding* when ANY of its VIPs is on its interface, not only when all are: keepalived adds and
removes an instance's VIPs one by one, and a node that holds even one of them answers ARP for it, which is
exactly the dual-master exposure the policy must see. "All present" would hide a half-added or half-removed
set, or a VIP an operator added by hand.

Why not pyroute2's own asyncio socket (AsyncIPRoute): it routes every message through per-sequence queues and,
after a receive error, refuses all further use of the socket. The one receive error that matters here is
ENOBUFS (the kernel dropped events because the socket's buffer overflowed); the answer to it is a fresh dump on
the same socket, which a plain non-blocking socket read with `loop.add_reader` makes simple. pyroute2 still
encodes the dump request and decodes every message (MarshalRtnl).

Interfaces are matched by name, resolved from the event's interface index when it arrives (an interface created
after start is found; an index is remembered so that the deletion events of a vanishing interface still match).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

log = logging.getLogger(__name__)

NLM_F_DUMP_INTR = 0x10  # the kernel's dump saw a concurrent change: its answer may be inconsistent, ask again
RCVBUF = 4 * 1024 * 1024  # room for a burst of address events (thousands of VIPs flushed at once)
READ_SIZE = 256 * 1024

OnChange = Callable[[str, bool, float], None]


class VipWatch:
    """Tracks, per instance, whether any of its VIPs is on its interface; see the module docstring."""

    def __init__(
        self,
        instances: Mapping[str, tuple[str, Sequence[str]]],
        on_change: OnChange | None = None,
    ) -> None:
        """`instances`: instance name → (interface, VIP addresses without prefix; a /prefix is tolerated)."""
        self.instances: dict[str, tuple[str, frozenset[str]]] = {}
        for name, (interface, vips) in instances.items():
            self.instances[name] = (interface, frozenset(_address(v) for v in vips))
        self.on_change = on_change
        # Only VIP addresses are kept: a host with thousands of other addresses costs nothing here.
        self._watched = frozenset(a for _, vips in self.instances.values() for a in vips)
        self._held: set[tuple[str, str]] = set()  # (interface, address) currently configured
        self._names: dict[int, str] = {}  # interface index → name, as last resolved
        self._holding: dict[str, bool] = dict.fromkeys(self.instances, False)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._marshal = MarshalRtnl()
        self._seq = 0
        self._dump_seq: int | None = None
        self._dump_table: set[tuple[str, str]] | None = None  # built while a dump is running
        self._dump_done: asyncio.Future[None] | None = None
        self._dump_again = False
        self._port = -1  # this socket's netlink port id, known once bound
        self.resyncs = 0  # dumps redone after an overflow (ENOBUFS) or an interrupted dump
        self.events = 0  # address events for watched VIPs

    # --- public -----------------------------------------------------------------------------------------

    async def start(self, timeout: float = 5.0) -> None:
        """Subscribe, dump the current addresses, and return once present() reflects them.

        on_change is not called for the state found at start; it fires for every change after that.
        Raises OSError when the socket cannot be opened, TimeoutError when the kernel does not answer the dump.
        """
        if self._sock is not None:
            raise RuntimeError("VipWatch already started")
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        try:
            with contextlib.suppress(OSError):
                # SO_RCVBUFFORCE (root) goes beyond rmem_max; the plain option is the fallback for the unprivileged.
                sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < RCVBUF:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            # Subscribed before the dump: a change during the dump then arrives after it, never lost between.
            sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
            self._port = sock.getsockname()[0]
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._dump_done = self._loop.create_future()
        try:
            self._request_dump()
            await asyncio.wait_for(asyncio.shield(self._dump_done), timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Unsubscribe and close the socket; present() keeps answering from the last known table."""
        if self._sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        if self._dump_done is not None and not self._dump_done.done():
            self._dump_done.cancel()

    def present(self, instance: str) -> bool:
        """True when any of the instance's VIPs is on its interface. KeyError for an unknown instance."""
        interface, vips = self.instances[instance]
        return any((interface, vip) in self._held for vip in vips)

    def addresses(self, instance: str) -> frozenset[str]:
        """Which of the instance's VIPs are on its interface now."""
        interface, vips = self.instances[instance]
        return frozenset(vip for vip in vips if (interface, vip) in self._held)

    # --- socket -----------------------------------------------------------------------------------------

    def _request_dump(self) -> None:
        """Ask for every address; while a dump runs, ask again once it is done (one dump per socket at a time)."""
        assert self._sock is not None
        if self._dump_seq is not None:
            self._dump_again = True
            return
        self._seq = self._seq % 0xFFFF_FFF0 + 1
        msg = ifaddrmsg()
        msg["family"] = socket.AF_UNSPEC
        msg["header"]["type"] = RTM_GETADDR
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        self._dump_seq = self._seq
        self._dump_table = set()
        self._dump_again = False
        self._sock.send(msg.data)

    def _on_readable(self) -> None:
        # One timestamp per wake-up: the messages of this read arrived together.
        now = time.monotonic()
        while self._sock is not None:
            try:
                data = self._sock.recv(READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    # Events were dropped: the table may be wrong in either direction until a dump rebuilds it.
                    log.warning("netlink: address events lost (socket buffer overflow); dumping again")
                    self.resyncs += 1
                    self._request_dump()
                    continue
                log.error("netlink: receive failed: %s", exc)
                return
            for msg in self._marshal.parse(data):
                self._on_message(msg, now)

    def _on_message(self, msg: Any, now: float) -> None:
        header = msg["header"]
        kind, seq = header["type"], header["sequence_number"]
        # Answers to this socket's own requests carry its port id; change notifications carry the port id of
        # whoever made the change (0 for the kernel), even when they also carry that requester's sequence number.
        mine = header["pid"] == self._port
        if mine and seq != self._dump_seq:
            return  # an answer to a request no longer waited for
        dumping = mine
        if kind == NLMSG_ERROR:
            if dumping:
                error = header.get("error")
                self._finish_dump(now, OSError(getattr(error, "code", errno.EIO), f"address dump refused: {error}"))
            return
        if dumping and header["flags"] & NLM_F_DUMP_INTR:
            self._dump_again = True
        if kind == NLMSG_DONE:
            if dumping:
                self._finish_dump(now, None)
            return
        if kind not in (RTM_NEWADDR, RTM_DELADDR):
            return
        address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if address is None:
            return
        address = _address(address)
        if address not in self._watched:
            return
        interface = self._name(msg["index"], fresh=kind == RTM_NEWADDR)
        if interface is None:
            return
        key = (interface, address)
        if dumping:
            assert self._dump_table is not None
            self._dump_table.add(key)
            return
        self.events += 1
        # Events also go into a running dump's table: they are newer than the dump parts read before them.
        for table in (self._held, self._dump_table):
            if table is None:
                continue
            if kind == RTM_NEWADDR:
                table.add(key)
            else:
                table.discard(key)
        self._report(now)

    def _finish_dump(self, now: float, error: OSError | None) -> None:
        table, self._dump_table, self._dump_seq = self._dump_table, None, None
        if error is None and self._dump_again:
            # Interrupted by a concurrent change, or events were lost while it ran: its table cannot be trusted.
            self.resyncs += 1
            self._request_dump()
            return
        if error is None and table is not None:
            self._held = table
        if self._dump_done is not None and not self._dump_done.done():
            # The first dump: start() returns; its result is the initial state, not a change to report.
            if error is not None:
                self._dump_done.set_exception(error)
            else:
                self._dump_done.set_result(None)
            self._holding = {name: self.present(name) for name in self.instances}
            return
        if error is not None:
            log.error("netlink: %s; table kept as it was", error)
        self._report(now)

    def _report(self, now: float) -> None:
        if self._dump_done is None or not self._dump_done.done():
            return  # start() still waits for the first dump
        for name in self.instances:
            holding = self.present(name)
            if holding != self._holding[name]:
                self._holding[name] = holding
                if self.on_change is not None:
                    try:
                        self.on_change(name, holding, now)
                    except Exception:
                        # A failing consumer must not stop the watch: the next event would be lost with it.
                        log.exception("netlink: on_change(%s, %s) failed", name, holding)

    def _name(self, index: int, fresh: bool) -> str | None:
        """The interface's name; re-resolved on additions (renames), remembered for deletions of a gone link."""
        if fresh or index not in self._names:
            # A link already gone has no name any more: the remembered one is the answer then.
            with contextlib.suppress(OSError):
                self._names[index] = socket.if_indextoname(index)
        return self._names.get(index)


def _address(text: str) -> str:
    """Canonical text of an address (IPv6 compressed, prefix dropped), so config and kernel spellings match."""
    return str(ipaddress.ip_interface(text).ip)


def local_addresses(family: int = socket.AF_INET, timeout: float = 1.0) -> frozenset[str]:
    """Every address configured on this host (its network namespace), read with one blocking netlink dump.

    For the occasional question "is this source address mine?"; a bind() test would be wrong on hosts with
    net.ipv4.ip_nonlocal_bind=1, common beside keepalived (HAProxy binding to the VIP).
    Raises OSError when the dump fails or takes longer than `timeout`.
    """
    msg = ifaddrmsg()
    msg["family"] = family
    msg["header"]["type"] = RTM_GETADDR
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = 1
    msg.encode()
    found: set[str] = set()
    marshal = MarshalRtnl()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        sock.send(msg.data)
        while True:
            for reply in marshal.parse(sock.recv(READ_SIZE)):
                kind = reply["header"]["type"]
                if kind == NLMSG_DONE:
                    return frozenset(found)
                if kind == NLMSG_ERROR:
                    error = reply["header"].get("error")
                    raise OSError(getattr(error, "code", errno.EIO), f"address dump refused: {error}")
                address = reply.get_attr("IFA_LOCAL") or reply.get_attr("IFA_ADDRESS")
                if kind == RTM_NEWADDR and address is not None:
                    found.add(_address(address))
