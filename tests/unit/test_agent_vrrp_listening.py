"""The advert listener's "since when would I have seen it" (listening_since) and its refused packets: counted per
reason and source, warned about once a minute, shown in status and metrics. Packets built in the test, no socket.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from arbiter import statusview
from arbiter.agent.vrrp import MAX_SOURCES, OTHER_SOURCES, WARN_EVERY, AdvertListener, encode
from tests.unit.test_agent_vrrp import OTHER, PEER, ip_packet, v3
from tests.unit.test_status_metrics import SNAPSHOT, scrape

PEER_C = "10.0.0.3"


def listener() -> AdvertListener:
    return AdvertListener("eth0", {51: "VI_1", 52: "VI_2"}, {PEER: "node-b", PEER_C: "node-c"})


def routed(vrid: int = 51, source: str = PEER, ttl: int = 63) -> bytes:
    """An advert that crossed a router: TTL below 255."""
    return ip_packet(encode(vrid, 100, ["10.0.0.100"], version=3, interval=0.1, source=source), source, ttl=ttl)


def test_listening_since_is_the_start_of_reading_for_every_peer_and_instance() -> None:
    adverts = listener()
    assert adverts.listening_since("VI_1", "node-b") is None  # not reading yet: silence means nothing
    adverts.begin(10.0)
    assert adverts.listening_since("VI_1", "node-b") == 10.0
    assert adverts.listening_since("VI_2", "node-c") == 10.0
    adverts.receive(v3(51), 11.0)
    assert (adverts.last_advert("VI_1", "node-b"), adverts.listening_since("VI_1", "node-b")) == (11.0, 10.0)


def test_without_the_multicast_group_silence_is_not_observed() -> None:
    adverts = listener()
    adverts.begin(10.0)
    adverts.group_joined = False  # start() could not join 224.0.0.18
    assert adverts.listening_since("VI_1", "node-b") is None


def test_a_refused_packet_from_a_peer_makes_its_silence_meaningless() -> None:
    adverts = listener()
    adverts.begin(10.0)
    assert adverts.receive(routed(source=PEER), 11.0) is None
    assert adverts.refused == {"ttl": 1}
    assert adverts.refused_from == {PEER: {"ttl": 1}}
    assert adverts.listening_since("VI_1", "node-b") is None
    assert adverts.listening_since("VI_2", "node-b") is None
    assert adverts.listening_since("VI_1", "node-c") == 10.0  # another peer is still observed


def test_an_advert_for_the_instance_from_an_unlisted_address_makes_the_instance_unobserved() -> None:
    adverts = listener()
    adverts.begin(10.0)
    adverts.receive(v3(51, source=OTHER), 11.0)
    assert adverts.refused == {"unknown_source": 1}
    assert adverts.refused_from == {OTHER: {"unknown_source": 1}}
    assert adverts.listening_since("VI_1", "node-b") is None
    assert adverts.listening_since("VI_2", "node-b") == 10.0


def test_another_clusters_adverts_and_own_packets_change_nothing(caplog: pytest.LogCaptureFixture) -> None:
    adverts = listener()
    adverts.begin(10.0)
    with caplog.at_level(logging.WARNING, logger="arbiter.agent.vrrp"):
        adverts.receive(v3(99, source=OTHER), 11.0)  # a VRID of no instance here
        adverts.receive(routed(source="127.0.0.1"), 11.0)  # this host's own
        adverts.receive(v3(99), 11.0)  # a peer's other keepalived instance
    assert adverts.refused == {"unknown_source": 1, "ttl": 1, "unknown_vrid": 1}
    assert adverts.refused_from == {}
    assert adverts.listening_since("VI_1", "node-b") == 10.0
    assert not caplog.records


def test_a_malformed_packet_from_an_unlisted_address_leaves_no_instance_observed() -> None:
    adverts = listener()
    adverts.begin(10.0)
    adverts.receive(routed(source=OTHER), 11.0)  # whose advert, for which instance: cannot be told
    assert adverts.listening_since("VI_1", "node-b") is None
    assert adverts.listening_since("VI_2", "node-c") is None


def test_refusals_are_warned_once_a_minute_per_source_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    adverts = listener()
    adverts.begin(0.0)
    with caplog.at_level(logging.WARNING, logger="arbiter.agent.vrrp"):
        for at in (1.0, 2.0, 3.0):
            adverts.receive(routed(source=PEER), at)
        adverts.receive(routed(source=PEER_C), 3.5)
        adverts.receive(v3(51, source=OTHER), 4.0)
        adverts.receive(routed(source=PEER), 1.0 + WARN_EVERY)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4, messages
    first, c, other, again = messages
    assert first.startswith(f"vrrp eth0: refused a VRRP packet from {PEER} (node-b): ttl (TTL 63, not 255")
    assert "rules V1 and L3 cannot see a cut VRRP path" in first
    assert c.startswith(f"vrrp eth0: refused a VRRP packet from {PEER_C} (node-c): ttl")
    assert other.startswith(f"vrrp eth0: refused a VRRP packet from {OTHER}: unknown_source (VRID 51 (VI_1)")
    assert again.endswith("; 2 more since the last warning")
    assert adverts.refused_from[PEER] == {"ttl": 4}


def test_refused_sources_are_counted_one_by_one_up_to_a_bound() -> None:
    adverts = listener()
    for i in range(MAX_SOURCES + 5):
        adverts.receive(v3(51, source=f"10.1.{i // 250}.{i % 250 + 1}"), float(i))
    assert len(adverts.refused_from) == MAX_SOURCES + 1
    assert adverts.refused_from[OTHER_SOURCES] == {"unknown_source": 5}
    assert adverts.refused["unknown_source"] == MAX_SOURCES + 5


def test_stats_show_listening_counts_and_what_is_not_observed() -> None:
    adverts = listener()
    adverts.begin(10.0)
    adverts.receive(v3(51), 11.0)
    adverts.receive(routed(source=PEER_C), 12.0)
    assert adverts.stats(15.0) == {
        "listening": True,
        "listening_age_s": 5.0,
        "multicast_joined": True,
        "accepted": 1,
        "own": 0,
        "refused": {"ttl": 1},
        "refused_from": {PEER_C: {"ttl": 1}},
        "unobserved": {"peers": ["node-c"], "instances": []},
    }


# --- status and metrics, from the snapshot (schema keepalived-arbiter.status/1, keys added) ----------------


def blind_snapshot() -> dict[str, Any]:
    snap = copy.deepcopy(SNAPSHOT)
    snap["vrrp"] = {
        "eth0": {
            "listening": True,
            "listening_age_s": 37.0,
            "multicast_joined": True,
            "accepted": 0,
            "own": 12,
            "refused": {"ttl": 370},
            "refused_from": {"10.0.0.1": {"ttl": 370}},
            "unobserved": {"peers": ["node-a"], "instances": []},
        }
    }
    snap["peers"][0]["adverts"] = [{"instance": "VI_1", "last_age_s": None, "observed": False}]
    return snap


def test_metrics_count_refused_vrrp_packets_and_unobserved_peers() -> None:
    text = scrape(blind_snapshot())
    for line in [
        'keepalived_arbiter_vrrp_adverts_refused_total{interface="eth0",reason="ttl"} 370.0',
        'keepalived_arbiter_vrrp_adverts_accepted_total{interface="eth0"} 0.0',
        'keepalived_arbiter_vrrp_adverts_observed{instance="VI_1",peer="node-a"} 0.0',
    ]:
        assert line in text, line


def test_status_text_names_the_refused_source_and_the_blind_peer() -> None:
    text = statusview.render(blind_snapshot())
    assert "VRRP packets refused on eth0: 10.0.0.1: ttl 370" in text
    assert "adverts of node-a not observed: rules V1 and L3 count only adverts seen" in text
    # An older agent's snapshot (no "vrrp" key) still renders.
    assert "VRRP packets refused" not in statusview.render(SNAPSHOT)
