"""The nftables rules of the lab's newer faults (arbiter/lab/faults.py) and their refusals of bad arguments.

What the rules do to real packets is proven in tests/e2e/test_lab_faults_more.py; here: that each names what it
must (the NIC, the addresses, the share) and that bad input is refused before anything touches a namespace.
"""

from __future__ import annotations

import pytest

from arbiter.lab.events import Timeline
from arbiter.lab.faults import HEARTBEAT_PORT, Faults, bridge_rules, heartbeat_cut_rules, vrrp_loss_rule
from arbiter.lab.netns import LabError
from arbiter.lab.topology import LabSpec, make_plan


def test_vrrp_loss_draws_a_number_per_packet_below_the_percentage() -> None:
    assert vrrp_loss_rule(10) == "ip protocol vrrp numgen random mod 100 < 10 drop"
    assert vrrp_loss_rule(99) == "ip protocol vrrp numgen random mod 100 < 99 drop"
    assert vrrp_loss_rule(100) == "ip protocol vrrp drop"  # nft refuses `< 100` after `mod 100`


@pytest.mark.parametrize(("medium", "dev"), [("lan", "eth0"), ("hb", "eth1")])
def test_a_per_nic_heartbeat_cut_drops_only_the_udp_heartbeat_on_that_nic(medium: str, dev: str) -> None:
    inbound, outbound = heartbeat_cut_rules(medium)
    assert inbound == [f'iifname "{dev}" udp dport {HEARTBEAT_PORT} drop']
    assert outbound == [f'oifname "{dev}" udp dport {HEARTBEAT_PORT} drop']


def test_the_ethernet_heartbeat_cut_still_drops_vrrp_and_every_heartbeat() -> None:
    inbound, outbound = heartbeat_cut_rules("ethernet")
    assert "ip protocol vrrp drop" in inbound and "ip protocol vrrp drop" in outbound
    assert f"udp dport {HEARTBEAT_PORT} drop" in inbound and f"udp dport {HEARTBEAT_PORT} drop" in outbound


def test_a_bridge_drops_every_address_of_the_other_node_both_ways() -> None:
    plan = make_plan(LabSpec(nodes=3), prefix="kal0000")
    b = plan.node("b")
    inbound, outbound = bridge_rules(b)
    assert inbound == [f"ip saddr {{ {b.lan_ip}, {b.hb_ip}, {b.mgmt_ip} }} drop"]
    assert outbound == [f"ip daddr {{ {b.lan_ip}, {b.hb_ip}, {b.mgmt_ip} }} drop"]


@pytest.mark.parametrize("percent", [0, 101, -5, True])
def test_vrrp_loss_refuses_a_percentage_outside_1_to_100(percent: int) -> None:
    faults = Faults(make_plan(LabSpec(), prefix="kal0000"), Timeline())
    with pytest.raises(LabError, match=r"percent: a whole number from 1 to 100"):
        faults.vrrp_loss(None, percent)


def test_heartbeat_cut_refuses_an_unknown_medium() -> None:
    faults = Faults(make_plan(LabSpec(), prefix="kal0000"), Timeline())
    with pytest.raises(LabError, match=r"medium: one of ethernet, lan, hb \(got 'mgmt'\)"):
        faults.heartbeat_cut(None, "mgmt")


def test_bridge_needs_three_nodes_and_two_different_ones() -> None:
    with pytest.raises(LabError, match="bridge: needs a 3-node lab"):
        Faults(make_plan(LabSpec(), prefix="kal0000"), Timeline()).bridge("a", "b")
    with pytest.raises(LabError, match="bridge: peer must be another node than 'a'"):
        Faults(make_plan(LabSpec(nodes=3), prefix="kal0000"), Timeline()).bridge("a", "a")
