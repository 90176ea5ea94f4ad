"""Each node's timings travel in its heartbeats (frame version 3), reach the policy in PeerView, and the drift
check names the timings that differ between the nodes (issue 12, item 7)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest

from arbiter import config
from arbiter.agent.daemon import timing_drift
from arbiter.evidence.heartbeat.frame import (
    MAX_FRAME,
    VERSION,
    Frame,
    FrameRefusedError,
    InstanceReport,
    NodeTimings,
    encode_frame,
    parse_frame,
)
from arbiter.evidence.heartbeat.media import MediaTracker
from arbiter.evidence.heartbeat.service import HeartbeatService
from arbiter.model import Timings, VrrpState

KEY = b"0123456789abcdef0123456789abcdef"
EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "arbiter.toml.example"
TIMINGS = NodeTimings(ttl_ms=5000, renew_ms=1500, safety_ms=700, interval_ms=100, deadtime_ms=600)


def frame(seq: int = 1, **kw: Any) -> Frame:
    fields: dict[str, Any] = {
        "cluster": "web",
        "node": "node-b",
        "incarnation": 0xB0B,
        "sequence": seq,
        "sent_wall_ns": 1_700_000_000_000_000_000,
        "sent_mono_ns": 5_000_000_000 + seq,
        "instances": (InstanceReport("VI_1", VrrpState.MASTER, True, 150, "node-b", 41, True, "H1", "0123abcd", 100),),
        "quorate": True,
        "highest_token": 41,
        "timings": TIMINGS,
    }
    fields.update(kw)
    return Frame(**fields)


def body_of(wire: bytes) -> dict[str, Any]:
    return dict(json.loads(wire[3:-32]))


def test_timings_round_trip_in_version_3() -> None:
    wire = encode_frame(frame(), KEY)
    assert wire[2] == VERSION == 3
    assert body_of(wire)["t"] == [5000, 1500, 700, 100, 600]
    back = parse_frame(wire, KEY)
    assert back == frame() and back.timings == TIMINGS and back.instances[0].advert_int_ms == 100
    unknown = frame(timings=None, instances=(InstanceReport("VI_1", VrrpState.BACKUP, False, 100, None, None),))
    assert parse_frame(encode_frame(unknown, KEY), KEY) == unknown


def test_a_version_2_frame_is_read_and_sent_without_timings() -> None:
    # What a node that runs the previous agent sends and reads: no "t", 9 fields per instance.
    wire = encode_frame(frame(version=2), KEY)
    body = body_of(wire)
    assert wire[2] == 2 and "t" not in body and len(body["e"][0]) == 9
    old = parse_frame(wire, KEY)
    assert old.version == 2 and old.timings is None and old.instances[0].advert_int_ms is None
    assert old.instances[0].fingerprint == "0123abcd" and old.instances[0].rule == "H1"


@pytest.mark.parametrize(
    ("where", "value", "named"),
    [
        ("t", [5000, 1500, 700, 100], "t: not a list of 5"),
        ("t", [5000, 1500, 700, 100, 0], "t.deadtime_ms"),
        ("t", [5000, True, 700, 100, 600], "t.renew_ms"),
        ("t", "5000", "t: not a list of 5"),
        ("e", 1.5, "e[0].advert_int_ms"),
        ("e", 255_000_000, "e[0].advert_int_ms"),
    ],
)
def test_bad_timings_are_malformed(where: str, value: Any, named: str) -> None:
    good = encode_frame(frame(), KEY)
    body = body_of(good)
    if where == "t":
        body["t"] = value
    else:
        body["e"][0][9] = value
    signed = good[:3] + json.dumps(body).encode()
    with pytest.raises(FrameRefusedError, match=re.escape(named)):
        parse_frame(signed + hmac.new(KEY, signed, hashlib.sha256).digest(), KEY)


def test_a_node_sends_the_lowest_version_its_peers_speak() -> None:
    service = HeartbeatService(
        cluster="web", node="node-a", key=KEY, peers=["node-b"], transports=[], interval=0.2, deadtime=1.0,
        timings=TIMINGS,
    )  # fmt: skip
    assert service.next_frame().version == VERSION  # nothing heard yet
    service.receive_one(encode_frame(frame(seq=1, version=2), KEY), "udp:eth0")
    sent = service.next_frame()
    assert sent.version == 2 and "t" not in body_of(encode_frame(sent, KEY))  # the old peer would refuse more
    # The peer restarted on the newer agent: its new incarnation speaks version 3, and so does this node again.
    service.receive_one(encode_frame(frame(seq=1, incarnation=0xC0C), KEY), "udp:eth0")
    assert service.next_frame().version == VERSION and service.next_frame().timings == TIMINGS


def test_the_largest_frame_counts_the_timings() -> None:
    text = EXAMPLE.read_text()
    block = "[[instance]]" + text.split("[[instance]]")[1].split("\n[", 1)[0]
    # Names long enough that the frame fits without the timings and does not with them.
    fits: list[int] = []
    for n in range(1, 33):
        extra = "".join(
            block.replace('name = "VI_1"', f'name = "V{"x" * 24}{k:02d}"').replace("VI_1.gate", f"g{k}.gate")
            for k in range(n)
        )
        cfg = config.parse(text + "\n" + extra)
        if config.frame_problems(cfg):
            break
        fits.append(n)
    largest = fits[-1]
    extra = "".join(
        block.replace('name = "VI_1"', f'name = "V{"x" * 24}{k:02d}"').replace("VI_1.gate", f"g{k}.gate")
        for k in range(largest)
    )
    cfg = config.parse(text + "\n" + extra)
    holder = max([cfg.node.name, *(p.name for p in cfg.peer)], key=len)
    reports = tuple(
        InstanceReport(i.name, VrrpState.UNKNOWN, False, 255, holder, 2**63 - 1, False, "S0", "f" * 16, i.advert_int_ms)
        for i in cfg.instance
    )
    sent = NodeTimings(
        cfg.lease.ttl_ms, cfg.lease.renew_ms, cfg.lease.safety_ms, cfg.heartbeat.interval_ms, cfg.heartbeat.deadtime_ms
    )
    worst = frame(instances=reports, timings=sent, node=cfg.node.name, incarnation=2**64 - 1, seq=2**63 - 1)
    assert len(encode_frame(worst, KEY)) <= MAX_FRAME


def test_the_peer_view_carries_the_peers_timings() -> None:
    now = [100.0]
    tracker = MediaTracker(["node-b"], ["udp:eth0"], deadtime=1.0, clock=lambda: now[0])
    tracker.accept(frame(), "udp:eth0")
    assert tracker.peer_view("node-b", "VI_1").timings == Timings(5.0, 1.5, 0.7, 0.1, 0.6, advert_int=0.1)
    assert tracker.peer_view("node-b", "VI_9").timings == Timings(5.0, 1.5, 0.7, 0.1, 0.6, advert_int=None)
    tracker.accept(frame(seq=2, version=2, timings=None), "udp:eth0")
    assert tracker.peer_view("node-b", "VI_1").timings is None


def test_the_drift_check_names_each_timing_that_differs_and_both_values() -> None:
    cfg = config.load(EXAMPLE)  # ttl 3000, renew 1000, safety 500, interval 200, deadtime 1000, advert 1000
    path = Path("/etc/keepalived-arbiter/arbiter.toml")
    from_old_agent = parse_frame(encode_frame(frame(version=2), KEY), KEY)
    assert timing_drift(path, cfg, "node-b", from_old_agent) == []
    same = NodeTimings(3000, 1000, 500, 200, 1000)
    report = InstanceReport("VI_1", VrrpState.BACKUP, False, 100, None, None, advert_int_ms=1000)
    assert timing_drift(path, cfg, "node-b", frame(timings=same, instances=(report,))) == []
    findings = timing_drift(path, cfg, "node-b", frame())
    prefix = f"{path}: warning: [timing-drift]"
    assert findings == [
        f"{prefix} lease.ttl_ms is 5000 on node-b, 3000 on this node",
        f"{prefix} lease.renew_ms is 1500 on node-b, 1000 on this node",
        f"{prefix} lease.safety_ms is 700 on node-b, 500 on this node",
        f"{prefix} heartbeat.interval_ms is 100 on node-b, 200 on this node",
        f"{prefix} heartbeat.deadtime_ms is 600 on node-b, 1000 on this node",
        f"{prefix} instance VI_1 advert_int_ms is 100 on node-b, 1000 on this node",
    ]
