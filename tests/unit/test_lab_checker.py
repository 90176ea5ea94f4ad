"""The lab's checker on synthetic histories: every figure computed by hand first."""

from __future__ import annotations

import random

import pytest

from arbiter.lab.checker import DualPeriod, Verdict, dual_periods, judge, parse_arp_detail
from arbiter.lab.events import ARP, FAULT, HEAL, NOTE, VIP_ADD, VIP_DEL, VRRP_STATE, Event

VIP = "10.0.0.100"
VIP2 = "10.0.0.101"
MAC = {"a": "02:00:00:00:00:01", "b": "02:00:00:00:00:02"}
NODES = ["a", "b"]


def add(t: float, node: str, vip: str = VIP) -> Event:
    return Event(t, VIP_ADD, node, vip)


def delete(t: float, node: str, vip: str = VIP) -> Event:
    return Event(t, VIP_DEL, node, vip)


def arp(t: float, *nodes: str, vip: str = VIP) -> Event:
    """The client's ARP answer: first responder first; no node = no reply; "?" = unknown MAC."""
    macs = [MAC.get(n, "02:ff:ff:ff:ff:ff") for n in nodes]
    node = nodes[0] if nodes else ""
    return Event(t, ARP, node, f"{vip} {macs[0] if macs else '-'} {','.join(macs) or '-'}")


def clean_failover() -> list[Event]:
    return [
        add(0.1, "a"),
        arp(0.15, "a"),
        Event(5.0, FAULT, "a", "power-off"),
        delete(5.0, "a"),
        arp(5.05),
        add(8.0, "b"),
        arp(8.05, "b"),
    ]


def split_brain() -> list[Event]:
    return [
        add(0.1, "a"),
        arp(0.15, "a"),
        Event(5.0, FAULT, "", "vrrp-cut both"),
        add(8.0, "b"),
        arp(8.05, "b", "a"),
        arp(8.10, "a", "b"),
        arp(8.15, "b", "a"),
        Event(13.0, HEAL, "", "vrrp-cut both"),
        delete(13.2, "b"),
        arp(13.25, "a"),
    ]


def test_clean_failover() -> None:
    v = judge(clean_failover(), NODES, VIP, fault_at=5.0, heal_at=None, end_at=12.0)
    assert v.dual_master_ms == 0
    assert v.failover_ms == pytest.approx(3050)  # b holds at 8.0, the client hears b at 8.05: the later counts
    assert v.no_master_ms == pytest.approx(3000)
    assert v.arp_flaps == 1  # a -> (no reply) -> b: one change of answer
    assert v.holders_at_end == ["b"]
    assert not v.dual_until_heal
    assert v.violations == []
    assert v.ok
    assert v.intervals == {"a": [(0.1, 5.0)], "b": [(8.0, 12.0)]}
    assert "failover 3050 ms" in v.summary()


def test_failover_waits_for_the_client_to_hear_the_new_master() -> None:
    events = [*clean_failover(), arp(9.0, "a")]  # a stale answer after the new master took over...
    events.remove(arp(8.05, "b"))  # ...and the client never heard b
    v = judge(events, NODES, VIP, fault_at=5.0, heal_at=None, end_at=12.0)
    assert v.failover_ms is None
    assert "the client's ARP for 10.0.0.100 is answered by a, which does not hold it" in v.violations


def test_without_any_arp_observation_holding_alone_decides_failover() -> None:
    events = [e for e in clean_failover() if e.kind != ARP]
    v = judge(events, NODES, VIP, fault_at=5.0, heal_at=None, end_at=12.0)
    assert v.failover_ms == pytest.approx(3000)
    assert v.arp_flaps == 0


def test_split_brain_until_heal() -> None:
    v = judge(split_brain(), NODES, VIP, fault_at=5.0, heal_at=13.0, end_at=15.0)
    assert v.dual_master_ms == pytest.approx(5200)
    assert v.dual_periods == [DualPeriod(8.0, 13.2, ("a", "b"))]
    assert v.dual_until_heal
    assert v.failover_ms == pytest.approx(3050)  # b (not the owner a) holds and answers first at 8.05
    assert v.holders_at_end == ["a"]
    assert "dual master for 5200 ms (10.0.0.100 on a and b)" in v.violations
    assert "dual master on 10.0.0.100 lasted until the heal" in v.violations


def test_split_brain_flap_count_is_every_change_of_first_responder() -> None:
    # a (0.15) -> b (8.05) -> a (8.10) -> b (8.15) -> a (13.25): four changes between non-empty answers.
    v = judge(split_brain(), NODES, VIP, fault_at=5.0, heal_at=13.0, end_at=15.0)
    assert v.arp_flaps == 4


def test_split_brain_never_healed() -> None:
    events = [add(0.1, "a"), arp(0.15, "a"), Event(5.0, FAULT, "", "vrrp-cut both"), add(8.0, "b"), arp(8.05, "b")]
    v = judge(events, NODES, VIP, fault_at=5.0, heal_at=None, end_at=20.0)
    assert v.dual_master_ms == pytest.approx(12000)
    assert v.dual_until_heal
    assert v.holders_at_end == ["a", "b"]
    assert "10.0.0.100 held by a and b at the end" in v.violations
    assert "dual master on 10.0.0.100 never ended" in v.violations


def test_split_brain_that_ends_before_the_heal_is_not_dual_until_heal() -> None:
    events = [add(0.1, "a"), Event(5.0, FAULT, "", "x"), add(8.0, "b"), delete(9.0, "a"), Event(13.0, HEAL, "", "x")]
    v = judge(events, NODES, VIP, fault_at=5.0, heal_at=13.0, end_at=15.0)
    assert v.dual_master_ms == pytest.approx(1000)
    assert not v.dual_until_heal


def test_no_failover() -> None:
    events = [add(0.1, "a"), arp(0.15, "a"), Event(5.0, FAULT, "a", "keepalived killed"), delete(5.0, "a"), arp(5.05)]
    v = judge(events, NODES, VIP, fault_at=5.0, heal_at=None, end_at=12.0)
    assert v.failover_ms is None
    assert v.no_master_ms == pytest.approx(7000)
    assert v.holders_at_end == []
    assert v.arp_flaps == 0
    assert "no node holds 10.0.0.100 at the end" in v.violations


def test_no_master_without_fault_counts_from_the_first_event() -> None:
    events = [Event(1.0, NOTE, "", "lab up"), add(3.0, "a")]
    v = judge(events, NODES, VIP, fault_at=None, heal_at=None, end_at=10.0)
    assert v.no_master_ms == pytest.approx(2000)
    assert v.failover_ms is None


@pytest.mark.parametrize(
    ("answers", "flaps"),
    [
        ([("a",), (), ("a",)], 0),  # a gap in answers is time without master, not a flap
        ([("a",), (), ("b",)], 1),  # the answer moved to b through a gap
        ([(), ("a",)], 0),  # the first observation is not a change
        ([("a",), ("b",), ("a",), ("b",)], 3),
        ([("a",), ("?",), ("a",)], 2),  # an unknown MAC is an answer too
        ([("a", "b"), ("a", "b"), ("a",)], 0),  # a second responder appearing/vanishing is no change of first answer
    ],
)
def test_arp_flaps(answers: list[tuple[str, ...]], flaps: int) -> None:
    events = [add(0.0, "a")] + [arp(1.0 + i, *a) for i, a in enumerate(answers)]
    assert judge(events, NODES, VIP, None, None, end_at=20.0).arp_flaps == flaps


def test_two_vips_are_judged_separately() -> None:
    # Dual instance: a owns VIP, b owns VIP2. a's power-off moves VIP to b; VIP2 never moves.
    events = [
        add(0.1, "a", VIP),
        add(0.1, "b", VIP2),
        arp(0.2, "a", vip=VIP),
        arp(0.2, "b", vip=VIP2),
        Event(5.0, FAULT, "a", "power-off"),
        delete(5.0, "a", VIP),
        add(6.0, "b", VIP),
        arp(6.1, "b", vip=VIP),
    ]
    random.Random(7).shuffle(events)
    v1 = judge(events, NODES, VIP, fault_at=5.0, heal_at=None, end_at=10.0)
    v2 = judge(events, NODES, VIP2, fault_at=5.0, heal_at=None, end_at=10.0)
    assert v1.dual_master_ms == 0 and v2.dual_master_ms == 0  # b holding both VIPs is not a dual master
    assert v1.failover_ms == pytest.approx(1100)
    assert v1.holders_at_end == ["b"]
    assert v2.failover_ms is None  # its owner b never lost it
    assert v2.holders_at_end == ["b"]
    assert v2.intervals == {"a": [], "b": [(0.1, 10.0)]}
    assert v2.arp_flaps == 0
    assert v1.ok and v2.ok


def test_events_out_of_order_give_the_same_verdict() -> None:
    ordered = judge(split_brain(), NODES, VIP, 5.0, 13.0, 15.0)
    for seed in range(5):
        shuffled = split_brain()
        random.Random(seed).shuffle(shuffled)
        assert judge(shuffled, NODES, VIP, 5.0, 13.0, 15.0) == ordered


def test_owner_at_fault_overrides_who_held_it() -> None:
    # Both held at the fault (an earlier split brain): only a node other than the named owner is a failover.
    events = [add(0.1, "a"), add(0.2, "b"), arp(0.3, "b"), Event(5.0, FAULT, "b", "x"), arp(6.0, "a")]
    assert judge(events, NODES, VIP, 5.0, None, 10.0).failover_ms is None  # both owned it at the fault
    # Owner b: a holds already, but the client hears a only at 6.0.
    assert judge(events, NODES, VIP, 5.0, None, 10.0, owner_at_fault="b").failover_ms == pytest.approx(1000)
    # Owner a: b holds and the client already hears b at the fault.
    assert judge(events, NODES, VIP, 5.0, None, 10.0, owner_at_fault="a").failover_ms == pytest.approx(0)


def test_duplicates_late_events_and_unknown_nodes() -> None:
    events = [
        add(1.0, "a"),
        add(2.0, "a"),  # repeated ADD changes nothing
        delete(3.0, "b"),  # DEL of a VIP b never held changes nothing
        add(4.0, "c"),  # a node the caller did not list still counts
        Event(4.5, VRRP_STATE, "c", "VI_1 MASTER"),
        add(30.0, "b"),  # after end_at: ignored
    ]
    v = judge(events, NODES, VIP, None, None, end_at=10.0)
    assert v.intervals == {"a": [(1.0, 10.0)], "b": [], "c": [(4.0, 10.0)]}
    assert v.dual_master_ms == pytest.approx(6000)
    assert v.holders_at_end == ["a", "c"]


def test_handover_at_one_instant_is_no_overlap() -> None:
    assert dual_periods({"a": [(0.0, 5.0)], "b": [(5.0, 9.0)]}) == []
    assert dual_periods({"a": [(0.0, 5.0)], "b": [(4.0, 9.0)], "c": [(4.5, 6.0)]}) == [
        DualPeriod(4.0, 6.0, ("a", "b", "c"))
    ]


def test_parse_arp_detail() -> None:
    assert parse_arp_detail("10.0.0.100 - -") == ("10.0.0.100", "", ())
    assert parse_arp_detail("10.0.0.100 aa bb,aa") == ("10.0.0.100", "aa", ("bb", "aa"))


def test_verdict_is_frozen() -> None:
    v = judge([], NODES, VIP, None, None, 1.0)
    assert isinstance(v, Verdict)
    assert v.holders_at_end == [] and v.no_master_ms == 0
    with pytest.raises(AttributeError):
        v.arp_flaps = 3  # type: ignore[misc]
