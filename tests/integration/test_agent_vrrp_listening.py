"""AdvertListener on a real raw socket (veth pair between two namespaces the test creates): listening starts
when `start()` reads, and adverts that arrive routed (TTL below 255, as routed unicast VRRP does) are refused,
counted under their source and make the peer's silence count for nothing (rules V1 and L3)."""

from __future__ import annotations

import logging
import os
import socket
import time

import pytest

from arbiter.agent.vrrp import AdvertListener
from tests.integration.agent_netns import NsThread, NsWorker
from tests.integration.test_agent_vrrp import A_IP, B_IP, pair, send, sender, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, raw sockets)"),
]
__all__ = ["pair"]  # the fixture, shared with test_agent_vrrp


def routed(interface: str) -> socket.socket:
    sock = sender(interface)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 64)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
    return sock


def test_listening_starts_with_the_socket_and_routed_adverts_are_refused(
    pair: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = pair
    listener = AdvertListener("a0", {51: "VI_1"}, {B_IP: "node-b"})
    assert listener.listening_since("VI_1", "node-b") is None
    with NsThread(a) as loop_a, NsWorker(b) as in_b, caplog.at_level(logging.WARNING, logger="arbiter.agent.vrrp"):
        before = time.monotonic()
        loop_a.call(listener.start)
        try:
            since = listener.listening_since("VI_1", "node-b")
            assert since is not None and before <= since <= time.monotonic()
            sock_b = in_b.call(routed, "b0")
            in_b.call(send, sock_b, B_IP, 51, 120, 3)
            in_b.call(send, sock_b, B_IP, 51, 120, 1, A_IP)  # routed unicast
            wait_for(lambda: listener.refused["ttl"] == 4, "refused adverts")
            assert listener.accepted == 0
            assert listener.refused_from == {B_IP: {"ttl": 4}}
            assert listener.listening_since("VI_1", "node-b") is None
            in_b.call(sock_b.close)
        finally:
            loop_a.call(listener.stop)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # once a minute per source and reason
    assert f"refused a VRRP packet from {B_IP} (node-b): ttl (TTL 64, not 255" in warnings[0]
    assert listener.listening_since("VI_1", "node-b") is None  # stopped: not listening
