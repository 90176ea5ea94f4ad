"""The lab's report: a split brain must be visible in the picture, and the text lists every event."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from arbiter.lab.checker import Verdict, judge
from arbiter.lab.events import ARP, FAULT, HEAL, NOTE, VIP_ADD, VIP_DEL, VRRP_STATE, Event
from arbiter.lab.report import write_report

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1000.0
VIP = "10.0.0.100"
VIP2 = "10.0.0.101"
MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def split_brain() -> list[Event]:
    t = T0
    return [
        Event(t + 0.1, NOTE, "", "lab up: 2 nodes"),
        Event(t + 0.5, VRRP_STATE, "a", "VI_1 BACKUP"),
        Event(t + 0.5, VRRP_STATE, "b", "VI_1 BACKUP"),
        Event(t + 1.0, VRRP_STATE, "a", "VI_1 MASTER"),
        Event(t + 1.0, VIP_ADD, "a", VIP),
        Event(t + 1.0, VIP_ADD, "b", VIP2),
        Event(t + 1.05, ARP, "a", f"{VIP} {MAC_A} {MAC_A}"),
        Event(t + 1.05, ARP, "b", f"{VIP2} {MAC_B} {MAC_B}"),
        Event(t + 5.0, FAULT, "", "vrrp-cut both"),
        Event(t + 8.0, VRRP_STATE, "b", "VI_1 MASTER"),
        Event(t + 8.0, VIP_ADD, "b", VIP),
        Event(t + 8.05, ARP, "b", f"{VIP} {MAC_B} {MAC_B},{MAC_A}"),
        Event(t + 13.0, HEAL, "", "vrrp-cut both"),
        Event(t + 13.1, VRRP_STATE, "b", "VI_1 BACKUP"),
        Event(t + 13.1, VIP_DEL, "b", VIP),
        Event(t + 13.15, ARP, "a", f"{VIP} {MAC_A} {MAC_A}"),
    ]


def test_split_brain_report(tmp_path: Path) -> None:
    events = split_brain()
    nodes = ["a", "b"]
    verdicts = {vip: judge(events, nodes, vip, T0 + 5.0, T0 + 13.0, T0 + 15.0) for vip in (VIP, VIP2)}
    assert verdicts[VIP].dual_master_ms > 5000

    paths = write_report_under_test(tmp_path / "report", events, nodes, verdicts)
    svg_path, txt_path = paths
    assert svg_path.name == "timeline.svg" and txt_path.name == "timeline.txt"

    root = ET.parse(svg_path).getroot()  # well-formed, or this raises
    assert root.tag == f"{SVG}svg"
    rects = list(root.iter(f"{SVG}rect"))
    dual = [r for r in rects if r.get("class") == "dual-master"]
    assert len(dual) == 1
    assert dual[0].get("fill") == "#d62728"
    # The band spans 8.0 s .. 13.1 s and covers both node lanes.
    assert float(dual[0].get("width", "0")) > 0
    held = [r for r in rects if r.get("class") == "vip-held"]
    assert len(held) == 3
    assert any(r.get("class") == "arp-dual" for r in rects)  # two MACs answered the client
    assert any(r.get("class") == "vrrp-state" for r in rects)
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert "FAULT: vrrp-cut both" in texts
    assert "HEAL: vrrp-cut both" in texts
    assert any(t.startswith("DUAL MASTER 10.0.0.100") for t in texts)
    assert any("dual master for 5100 ms (10.0.0.100 on a and b)" in t for t in texts)
    assert any(t.startswith("10.0.0.100: dual master 5100 ms") and "ARP flaps 2" in t for t in texts)
    assert "client ARP" in texts

    lines = txt_path.read_text().splitlines()
    assert len(lines) == len(events)
    assert lines[0] == "0.100 note - lab up: 2 nodes"
    assert "5.000 fault - vrrp-cut both" in lines
    assert lines[-1] == f"13.150 arp a {VIP} {MAC_A} {MAC_A}"


def test_report_without_verdicts_or_events(tmp_path: Path) -> None:
    paths = write_report_under_test(tmp_path, [], ["a", "b"], {})
    root = ET.parse(paths[0]).getroot()
    assert not [r for r in root.iter(f"{SVG}rect") if r.get("class") == "dual-master"]
    assert paths[1].read_text() == ""


def write_report_under_test(d: Path, events: list[Event], nodes: list[str], verdicts: dict[str, Verdict]) -> list[Path]:
    return write_report(d, events, T0, nodes, [VIP, VIP2], verdicts, "split brain <keepalived alone> & friends")
