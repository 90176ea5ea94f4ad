"""VRRP advert parsing and the listener's bookkeeping, on packets built in the test (no socket)."""

from __future__ import annotations

import socket
import struct

import pytest

from arbiter.agent.vrrp import AdvertListener, NotAnAdvertError, checksum, encode, parse

PEER, OTHER = "10.0.0.2", "10.0.0.9"


def ip_packet(payload: bytes, source: str = PEER, destination: str = "224.0.0.18", ttl: int = 255) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0xC0,
        20 + len(payload),
        0,
        0,
        ttl,
        112,
        0,
        socket.inet_aton(source),
        socket.inet_aton(destination),
    )
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def v3(vrid: int = 51, priority: int = 100, source: str = PEER, interval: float = 0.1) -> bytes:
    return ip_packet(encode(vrid, priority, ["10.0.0.100"], version=3, interval=interval, source=source), source)


def test_v2_advert_parses() -> None:
    # vrid 51, priority 150, one VIP, auth type 0, advert_int 1 (a real keepalived's: tests/integration).
    payload = encode(51, 150, ["192.168.1.100"])
    assert payload[:6] == bytes.fromhex("213396010001")
    advert = parse(ip_packet(payload))
    assert (advert.source, advert.vrid, advert.priority, advert.version, advert.interval, advert.count) == (
        PEER,
        51,
        150,
        2,
        1.0,
        1,
    )


def test_v3_advert_parses_with_centisecond_interval() -> None:
    advert = parse(v3(interval=0.1))
    assert (advert.version, advert.interval, advert.vrid, advert.priority) == (3, 0.1, 51, 100)


def test_trailing_bytes_after_the_ip_total_length_are_ignored() -> None:
    assert parse(v3() + b"\x00" * 6).vrid == 51


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\x45" * 10, "short"),
        (b"\x65" + bytes(27), "ip_header"),
        (ip_packet(encode(51, 100, ["10.0.0.100"]))[:30], "ip_header"),  # truncated below its total length
        (ip_packet(encode(51, 100, ["10.0.0.100"]), ttl=64), "ttl"),
        (ip_packet(b"\x21\x33"), "short"),
        (ip_packet(encode(51, 100, ["10.0.0.100"])[:-4]), "length"),
        (ip_packet(b"\x11" + encode(51, 100)[1:]), "version"),
        (ip_packet(b"\x22" + encode(51, 100)[1:]), "type"),
        (ip_packet(encode(0, 100)), "bad_vrid"),
        (ip_packet(encode(51, 100)[:6] + b"\xde\xad" + encode(51, 100)[8:]), "checksum"),
        # v3's checksum covers the pseudo-header: a packet from another source than it was computed for fails.
        (ip_packet(encode(51, 100, version=3, source=OTHER), PEER), "checksum"),
    ],
)
def test_malformed_packets_are_refused_with_a_reason(packet: bytes, reason: str) -> None:
    with pytest.raises(NotAnAdvertError, match=f"^{reason}$"):
        parse(packet)


def test_protocol_other_than_vrrp_is_refused() -> None:
    packet = bytearray(v3())
    packet[9] = 51  # AH
    with pytest.raises(NotAnAdvertError, match="protocol"):
        parse(bytes(packet))


def test_listener_maps_vrid_and_source_and_keeps_the_newest() -> None:
    seen: list[tuple[str, str, int, float]] = []
    listener = AdvertListener("eth0", {51: "VI_1", 52: "VI_2"}, {PEER: "node-b"}, on_advert=lambda *a: seen.append(a))
    assert listener.last_advert("VI_1", "node-b") is None
    listener.receive(v3(51, 100), 10.0)
    listener.receive(v3(51, 0), 11.0)  # priority 0: the peer resigns
    listener.receive(v3(52, 90), 12.0)
    assert listener.last_advert("VI_1", "node-b") == 11.0
    assert listener.last_priority("VI_1", "node-b") == 0
    assert listener.last_priority("VI_2", "node-b") == 90
    assert seen == [("VI_1", "node-b", 100, 10.0), ("VI_1", "node-b", 0, 11.0), ("VI_2", "node-b", 90, 12.0)]
    assert listener.accepted == 3 and not listener.refused


def test_listener_refuses_unknown_vrid_and_source_and_counts_own() -> None:
    listener = AdvertListener("eth0", {51: "VI_1"}, {PEER: "node-b"})
    assert listener.receive(v3(99), 1.0) is None
    assert listener.receive(v3(51, source=OTHER), 1.0) is None
    assert listener.receive(v3(51, source="127.0.0.1"), 1.0) is None  # one of this host's addresses
    assert listener.receive(b"junk", 1.0) is None
    assert listener.refused == {"unknown_vrid": 1, "unknown_source": 1, "short": 1}
    assert listener.own == 1 and listener.accepted == 0
    assert listener.last_advert("VI_1", "node-b") is None


def test_any_vrid_key_and_a_failing_callback() -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("consumer bug")

    listener = AdvertListener("eth0", {None: "VI_1"}, {PEER: "node-b"}, on_advert=broken)
    assert listener.receive(v3(7), 5.0) is not None
    assert listener.receive(v3(200), 6.0) is not None
    assert listener.last_advert("VI_1", "node-b") == 6.0
