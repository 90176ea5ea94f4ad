"""AdvertListener on a veth pair between two namespaces the test creates: adverts forged with a raw socket and
sent by a real keepalived in the peer namespace; an nftables `ip protocol vrrp drop` rule in the listener's
input chain silences them, as it silences keepalived."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from arbiter.agent.vrrp import IPPROTO_VRRP, VRRP_GROUP, AdvertListener, encode
from arbiter.lab.netns import run
from tests.integration.agent_netns import NsThread, NsWorker, namespaces

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, raw sockets)"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft"),
]

A_IP, B_IP = "10.97.0.1", "10.97.0.2"


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    with namespaces("va", "vb") as (a, b):
        run(["ip", "link", "add", "a0", "netns", a, "type", "veth", "peer", "name", "b0", "netns", b])
        for ns, dev, ip in ((a, "a0", A_IP), (b, "b0", B_IP)):
            run(["ip", "addr", "add", f"{ip}/24", "dev", dev], ns=ns)
            run(["ip", "link", "set", dev, "up"], ns=ns)
        yield a, b


def sender(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
    return sock


def send(sock: socket.socket, source: str, vrid: int, priority: int, count: int, to: str = VRRP_GROUP) -> None:
    payload = encode(vrid, priority, ["10.97.0.100"], version=3, interval=0.1, source=source, destination=to)
    for _ in range(count):
        sock.sendto(payload, (to, 0))


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def drop_vrrp(ns: str) -> None:
    run(["nft", "add", "table", "inet", "kag"], ns=ns)
    run(["nft", "add", "chain", "inet", "kag", "input", "{ type filter hook input priority 0; }"], ns=ns)
    run(["nft", "add", "rule", "inet", "kag", "input", "ip", "protocol", "vrrp", "drop"], ns=ns)


def test_forged_adverts_counted_own_ignored_and_a_firewall_silences_them(pair: tuple[str, str]) -> None:
    a, b = pair
    seen: list[tuple[str, str, int, float]] = []
    listener = AdvertListener("a0", {51: "VI_1"}, {B_IP: "node-b"}, on_advert=lambda *e: seen.append(e))
    with NsThread(a) as loop_a, NsWorker(b) as in_b, NsWorker(a) as in_a:
        loop_a.call(listener.start)
        try:
            sock_b = in_b.call(sender, "b0")
            before = time.monotonic()
            in_b.call(send, sock_b, B_IP, 51, 120, 5)
            in_b.call(send, sock_b, B_IP, 51, 110, 1, A_IP)  # unicast, as with keepalived's unicast_peer
            in_b.call(send, sock_b, B_IP, 77, 100, 2)  # a VRID this listener does not know
            wait_for(lambda: listener.accepted == 6 and listener.refused["unknown_vrid"] == 2, "adverts")
            at = listener.last_advert("VI_1", "node-b")
            assert at is not None and at > before
            assert listener.last_priority("VI_1", "node-b") == 110
            assert [e[:3] for e in seen] == [("VI_1", "node-b", 120)] * 5 + [("VI_1", "node-b", 110)]

            # This host's own multicast comes back through the loopback: counted as own, not as a peer's.
            sock_a = in_a.call(sender, "a0")
            in_a.call(send, sock_a, A_IP, 51, 200, 3)
            wait_for(lambda: listener.own == 3, "own adverts")
            assert listener.accepted == 6

            drop_vrrp(a)
            in_b.call(send, sock_b, B_IP, 51, 120, 5)
            in_b.call(send, sock_b, B_IP, 51, 120, 1, A_IP)
            time.sleep(0.2)
            assert listener.accepted == 6, "the raw socket saw adverts the input chain dropped"
            assert listener.last_advert("VI_1", "node-b") == at
            in_a.call(sock_a.close)
            in_b.call(sock_b.close)
        finally:
            loop_a.call(listener.stop)


KEEPALIVED_CONF = """\
global_defs {{
    router_id {node}
    script_user root
    enable_script_security
}}
vrrp_instance VI_1 {{
    state BACKUP
    interface b0
    virtual_router_id 51
    priority 150
    advert_int 0.1
    virtual_ipaddress {{
        10.97.0.100/24
    }}
}}
"""


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="needs keepalived")
def test_real_keepalived_adverts_until_the_firewall_drops_them(pair: tuple[str, str], tmp_path: Path) -> None:
    a, b = pair
    conf = tmp_path / "keepalived.conf"
    # VRRPv3 at advert_int 0.1: a lone node is MASTER within about 0.4 s and then adverts ten times a second.
    conf.write_text("global_defs {\n    vrrp_version 3\n}\n" + KEEPALIVED_CONF.format(node="node-b"))
    listener = AdvertListener("a0", {None: "VI_1"}, {B_IP: "node-b"})
    argv = ["keepalived", "-n", "-l", "-D", "--vrrp", "-f", str(conf), "-p", str(tmp_path / "k.pid")]
    argv += ["-r", str(tmp_path / "v.pid"), "-i", "node-b"]
    proc = subprocess.Popen(["ip", "netns", "exec", b, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with NsThread(a) as loop_a:
            loop_a.call(listener.start)
            try:
                wait_for(lambda: listener.accepted >= 5, "keepalived's adverts")
                advert = listener.latest("VI_1", "node-b")
                assert advert is not None
                assert (advert.version, advert.vrid, advert.priority, advert.interval) == (3, 51, 150, 0.1)
                assert not listener.refused
                drop_vrrp(a)
                time.sleep(0.15)  # an advert already past the firewall may still be queued
                counted = listener.accepted
                time.sleep(0.5)
                assert listener.accepted == counted, "the raw socket saw adverts the input chain dropped"
                assert proc.poll() is None, "keepalived exited"
            finally:
                loop_a.call(listener.stop)
    finally:
        # By PID: SIGTERM lets keepalived remove its VIP and children; the namespace teardown kills leftovers.
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
