"""A peer's news wakes the agent at once (`HeartbeatService.on_news`): a frame whose instance reports, quorum or
leaving flag differ from the peer's previous frame. The handover's step-down (rule Y3) must come within
milliseconds of the returning node's keepalived leaving FAULT, not at the next decision tick."""

from __future__ import annotations

from arbiter.evidence.heartbeat.frame import InstanceReport, encode_frame
from arbiter.evidence.heartbeat.service import HeartbeatService
from arbiter.model import VrrpState
from tests.unit.test_heartbeat_timings import KEY, TIMINGS, frame


def service(news: list[str]) -> HeartbeatService:
    hb = HeartbeatService(
        cluster="web", node="node-a", key=KEY, peers=["node-b"], transports=[], interval=0.2, deadtime=1.0,
        timings=TIMINGS,
    )  # fmt: skip
    hb.on_news = news.append
    return hb


def report(state: VrrpState, rule: str) -> tuple[InstanceReport, ...]:
    return (InstanceReport("VI_1", state, False, 150, None, None, True, rule, "0123abcd", 100),)


def test_news_only_when_what_the_peer_reports_changes() -> None:
    news: list[str] = []
    hb = service(news)
    hb.receive_one(encode_frame(frame(seq=1, instances=report(VrrpState.FAULT, "P2")), KEY), "udp:eth0")
    assert news == ["node-b"]  # the first frame of a peer is news
    hb.receive_one(encode_frame(frame(seq=2, instances=report(VrrpState.FAULT, "P2")), KEY), "udp:eth0")
    assert news == ["node-b"]  # the same report again: not news (only its sequence and send time differ)
    hb.receive_one(encode_frame(frame(seq=3, instances=report(VrrpState.BACKUP, "P2")), KEY), "udp:eth0")
    assert news == ["node-b", "node-b"]  # keepalived there left FAULT
    hb.receive_one(encode_frame(frame(seq=3, instances=report(VrrpState.BACKUP, "P2")), KEY), "serial:/dev/ttyS1")
    assert len(news) == 2  # the same frame on the second medium is a duplicate
    hb.receive_one(encode_frame(frame(seq=4, instances=report(VrrpState.BACKUP, "P2"), leaving=True), KEY), "udp:eth0")
    assert len(news) == 3


def test_a_refused_frame_is_no_news() -> None:
    news: list[str] = []
    hb = service(news)
    wire = bytearray(encode_frame(frame(seq=1), KEY))
    wire[-1] ^= 1  # a bad MAC
    assert hb.receive_one(bytes(wire), "udp:eth0") is None
    assert news == []
