"""The policy where this node could not see what it decides on: a master whose adverts it never heard (V1, L3
with `listening_since`), and a silent lease holder that may be alive (L5). Plain data, no IO.

The stepped scenarios model one backup at VRRPv3 advert_int 0.1 (master-down 0.36 s) with a 20 ms decision
cycle, the lab's timings: its keepalived leaves FAULT into BACKUP when the gate opens and takes the VIP once
master-down has passed since the later of the master's last advert and that reopening.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from arbiter.model import (
    AcquireLease,
    Evidence,
    Gate,
    LeaseStatus,
    LeaseView,
    PeerView,
    PolicyConfig,
    PolicyState,
    Power,
    VrrpState,
)
from arbiter.policy import RULES, decide

M, B = VrrpState.MASTER, VrrpState.BACKUP
NOW = 100.0

CFG = PolicyConfig(
    node="a",
    peers=("b",),
    fenceable=frozenset({"b"}),
    ttl=3.0,
    safety=0.5,
    cycle=0.2,
    advert_int=1.0,
    master_down=3.4,
    nopreempt=False,
    fence_delay=0.0,
    power_timeout=2.0,
    hold_down=60.0,
    on_fence_failure="close",
    deadtime=1.0,
)
V3 = replace(CFG, cycle=0.02, advert_int=0.1, master_down=0.36)
OPEN = PolicyState(started=True, gate=Gate.OPEN, rule="B2")
CLOSED = replace(OPEN, gate=Gate.CLOSED, rule="V1")


def peer(name: str = "b", **kw: object) -> PeerView:
    base: dict[str, object] = {"name": name, "alive": True, "heard_at": NOW, "state": B, "priority": 100}
    base.update(kw)
    return PeerView(**base)  # type: ignore[arg-type]


def ev(lease: LeaseView, *peers: PeerView, state: VrrpState = B) -> Evidence:
    # This node ranks below its peers (50 < 100), as a backup does: no preemption handover (P1) is due.
    return Evidence("VI_1", state, state is M, 50, True, lease, peers)


def theirs(left: float, holder: str = "b", token: int = 7, now: float = NOW) -> LeaseView:
    return LeaseView(LeaseStatus.PEER, holder, token, now + left)


UNKNOWN = LeaseView(LeaseStatus.UNKNOWN)


# --- V1 / L3: a master whose adverts this node never heard --------------------------------------------------


def test_v1_no_advert_since_listening_started_counts_as_stopped_then() -> None:
    # Agent restarted 2 s ago on a backup whose VRRP path is cut: the master was never heard since.
    master = peer(state=M, vip_present=True, adverts_at=None, listening_since=NOW - 2.0)
    d = decide(OPEN, ev(UNKNOWN, master), CFG, NOW)
    assert (d.gate, d.rule) == (Gate.CLOSED, "V1")
    assert "no VRRP advert from it was seen in the 2.0s of listening" in d.reason


def test_v1_not_within_one_and_a_half_adverts_of_listening() -> None:
    master = peer(state=M, vip_present=True, adverts_at=None, listening_since=NOW - 1.4)
    assert decide(OPEN, ev(UNKNOWN, master), CFG, NOW).rule == "B2"


def test_v1_still_off_when_adverts_are_not_observed_at_all() -> None:
    master = peer(state=M, vip_present=True, adverts_at=None, listening_since=None)
    assert decide(OPEN, ev(UNKNOWN, master), CFG, NOW).rule == "B2"


def test_v1_an_advert_seen_after_listening_started_is_what_counts() -> None:
    master = peer(state=M, vip_present=True, adverts_at=NOW - 0.3, listening_since=NOW - 60)
    assert decide(OPEN, ev(UNKNOWN, master), CFG, NOW).rule == "B2"


def test_v1_three_nodes_new_master_emerging_during_a_vrrp_cut() -> None:
    # a paused and fenced; b took over behind the cut (c never heard an advert from b): c must not take the VIP.
    a = peer("a", alive=False, heard_at=NOW - 8, state=M, vip_present=True, listening_since=NOW - 60)
    b = peer("b", state=M, vip_present=True, adverts_at=None, listening_since=NOW - 60)
    cfg = replace(CFG, node="c", peers=("a", "b"), fenceable=frozenset({"a", "b"}))
    d = decide(OPEN, ev(UNKNOWN, a, b), cfg, NOW)
    assert (d.gate, d.rule) == (Gate.CLOSED, "V1")


def test_l3_holder_renewed_after_listening_started_with_no_advert_seen() -> None:
    # b holds the lease (renewed 0.1 s ago, TTL 3) and its heartbeats are silent; no advert since listening.
    holder = peer(alive=False, heard_at=NOW - 5, state=M, adverts_at=None, listening_since=NOW - 2.0)
    d = decide(OPEN, ev(theirs(left=2.9), holder), CFG, NOW)
    assert (d.gate, d.rule) == (Gate.CLOSED, "L3")
    assert "after its listening start (no VRRP advert from it seen since)" in d.reason


def test_l3_not_when_the_renewal_predates_listening() -> None:
    # Renewed at NOW-1.5, listening since NOW-1.4: nothing says the holder lived on while this node listened.
    holder = peer(state=M, adverts_at=None, listening_since=NOW - 1.4)
    assert decide(OPEN, ev(theirs(left=1.5), holder), CFG, NOW).rule == "B2"


# --- L5: a silent lease holder ---------------------------------------------------------------------------


def silent_holder(quiet: float, **kw: object) -> PeerView:
    """b holds the lease; its last heartbeat and advert were `quiet` seconds ago (its last frame: MASTER)."""
    base: dict[str, object] = {
        "heard_at": NOW - quiet,
        "state": M,
        "vip_present": True,
        "adverts_at": NOW - quiet,
        "listening_since": NOW - 60,
        "alive": quiet <= V3.deadtime,
    }
    base.update(kw)
    return peer(**base)


def test_l5_isolated_holder_closes_in_the_last_cycles_before_master_down() -> None:
    # Last advert 0.345 s ago: keepalived fires at 0.36 s, 15 ms from now (within the 20 ms cycle).
    holder = silent_holder(0.345, power=Power.ON, power_at=NOW - 0.05)
    d = decide(OPEN, ev(theirs(left=2.0), holder), V3, NOW)
    assert (d.gate, d.rule) == (Gate.CLOSED, "L5")
    assert "keepalived's master-down due in 15 ms and no BMC read OFF" in d.reason


@pytest.mark.parametrize(
    ("holder", "cfg", "why"),
    [
        (silent_holder(0.345), replace(V3, fenceable=frozenset()), "master-down due in 15 ms"),  # no BMC
        (silent_holder(0.345, power=Power.UNKNOWN, power_at=NOW - 0.05), V3, "master-down due in 15 ms"),
        (silent_holder(0.345, adverts_at=None, listening_since=None), V3, "master-down due in 15 ms"),
    ],
)
def test_l5_closes_when_the_holder_cannot_read_off_or_master_down_is_due(
    holder: PeerView, cfg: PolicyConfig, why: str
) -> None:
    d = decide(OPEN, ev(theirs(left=2.0), holder), cfg, NOW)
    assert (d.gate, d.rule) == (Gate.CLOSED, "L5")
    assert why in d.reason


@pytest.mark.parametrize(
    ("holder", "why"),
    [
        (silent_holder(0.16), "read still pending, master-down 0.2 s away: a dead holder must not cost a reopen"),
        (silent_holder(0.335), "master-down 25 ms away, more than a cycle: the next cycle decides"),
        (silent_holder(0.16, power=Power.ON, power_at=NOW - 0.01), "ON now; a power cut may still read OFF in time"),
        (silent_holder(0.16, name="c"), "no BMC for it (not fenceable): still waits for the last moment"),
        (silent_holder(0.34, power=Power.OFF, power_at=NOW - 0.01), "read OFF: dead (L4 keeps the VIP)"),
        (silent_holder(0.03, power=Power.ON, power_at=NOW - 0.01), "heard within two heartbeat intervals"),
        (silent_holder(0.5, adverts_at=NOW - 0.05, power=Power.ON, power_at=NOW), "its adverts still arrive"),
        (silent_holder(0.5, left=True, power=Power.ON, power_at=NOW), "said it left cleanly"),
    ],
)
def test_l5_leaves_the_gate_open(holder: PeerView, why: str) -> None:
    d = decide(OPEN, ev(theirs(left=2.0, holder=holder.name), holder), V3, NOW)
    assert (d.gate, d.rule) == (Gate.OPEN, "B2"), why


def test_l5_keeps_a_closed_gate_closed_until_the_read_says_off() -> None:
    pending = silent_holder(0.16)
    assert decide(CLOSED, ev(theirs(left=2.0), pending), V3, NOW).rule == "L5"
    off = silent_holder(0.16, power=Power.OFF, power_at=NOW - 0.01)
    assert decide(CLOSED, ev(theirs(left=2.0), off), V3, NOW).gate is Gate.OPEN


def test_l5_ends_when_the_lease_expires_or_is_released() -> None:
    holder = silent_holder(2.5, power=Power.ON, power_at=NOW - 0.01)
    assert decide(CLOSED, ev(theirs(left=0.5), holder), V3, NOW).rule == "L5"
    expired = decide(CLOSED, ev(theirs(left=-0.01), holder), V3, NOW)
    released = decide(CLOSED, ev(LeaseView(LeaseStatus.FREE), holder), V3, NOW)
    for d in (expired, released):
        assert d.gate is Gate.OPEN and d.rule != "L5"
    assert (released.rule, released.actions) == ("B3", (AcquireLease(0),))


def test_l5_reopens_once_master_down_after_the_reopening_falls_after_the_expiry() -> None:
    holder = silent_holder(2.5, power=Power.ON, power_at=NOW - 0.01)
    # Master-down after a reopening now: 0.36 s. A lease left for 0.175 s has run out (and been re-read)
    # half a master-down interval before that; one left for 0.185 s has not.
    assert decide(CLOSED, ev(theirs(left=0.185), holder), V3, NOW).rule == "L5"
    d = decide(CLOSED, ev(theirs(left=0.175), holder), V3, NOW)
    assert (d.gate, d.rule, d.state.opened_at) == (Gate.OPEN, "B2", NOW)
    # And it stays open: keepalived's timer runs from that reopening, which falls after the expiry.
    later = decide(d.state, ev(theirs(left=0.16, now=NOW + 0.02), holder), V3, NOW + 0.02)
    assert (later.gate, later.rule) == (Gate.OPEN, "B2")


def test_l5_not_when_the_lease_runs_out_before_master_down() -> None:
    # VRRPv2: master-down 3.4 s after the last advert, the holder's lease (TTL 3) expires 2.5 s after it.
    holder = silent_holder(1.0, power=Power.ON, power_at=NOW - 0.1)
    d = decide(OPEN, ev(theirs(left=1.5), holder), CFG, NOW)
    assert (d.gate, d.rule) == (Gate.OPEN, "B2")


def test_l5_is_described() -> None:
    assert "silent peer" in RULES["L5"]


# --- stepped: VRRPv3 advert_int 0.1, the isolate and power-off scenarios -------------------------------


@dataclass
class Backup:
    """Node a (backup) deciding every 20 ms while b, master and lease holder, goes silent at `NOW`."""

    read_after: float  # the BMC read, started after two silent heartbeat intervals, answers this much later
    power: Power  # what it answers
    on_until: float = 0.0  # reads before this (after NOW) still answer ON: a power cut that takes a while
    lease_left: float = 2.0  # b's lease runs out this long after it went silent
    state: PolicyState = OPEN
    ka_since: float = NOW  # keepalived's master-down timer runs from here (b's last advert, or a reopening)
    holding: bool = False
    log: list[tuple[float, str, Gate]] = field(default_factory=list)

    def run(self, until: float) -> None:
        now = NOW
        read_at = NOW + 2 * V3.cycle + self.read_after
        while now < NOW + until:
            now = round(now + V3.cycle, 6)
            if not self.holding and self.state.gate is Gate.OPEN and now - self.ka_since >= V3.master_down:
                self.holding = True  # keepalived's master-down fired: VIP taken
            expired = now >= NOW + self.lease_left
            lease = LeaseView(LeaseStatus.FREE) if expired else theirs(self.lease_left, now=NOW)
            holder = silent_holder(0.0, alive=now - NOW <= V3.deadtime)  # heard and advertised last at NOW
            if now >= read_at:  # the agent reads again every cycle while the holder is silent
                power = Power.ON if now - self.read_after < NOW + self.on_until else self.power
                holder = replace(holder, power=power, power_at=now - self.read_after % V3.cycle)
            state = M if self.holding else B
            d = decide(self.state, ev(lease, holder, state=state), V3, now)
            if d.gate is Gate.CLOSED:
                self.holding = False  # FAULT: VIP released at once
            elif self.state.gate is Gate.CLOSED:
                self.ka_since = now  # leaving FAULT restarts the master-down timer
            self.state = d.state
            self.log.append((round(now - NOW, 3), d.rule, d.gate))

    def vetoes(self) -> list[float]:
        return [t for t, rule, _ in self.log if rule == "L1"]


def test_isolated_master_is_not_taken_over_and_vetoed_before_its_lease_expires() -> None:
    node = Backup(read_after=0.008, power=Power.ON)
    node.run(until=2.0)
    assert node.vetoes() == []
    closed = [t for t, _, gate in node.log if gate is Gate.CLOSED]
    assert closed and V3.master_down - V3.cycle <= closed[0] < V3.master_down, node.log
    # Closed until master-down after a reopening falls after the expiry; then B3 takes the lease to fence b,
    # and keepalived takes the VIP after the lease is gone (H3 here, where the acquisition is not modelled).
    reopened = next(t for t, _, gate in node.log if t > closed[0] and gate is Gate.OPEN)
    assert {rule for t, rule, _ in node.log if closed[0] <= t < reopened} == {"L5"}
    assert abs(reopened - (node.lease_left - V3.master_down / 2)) <= V3.cycle + 1e-9
    node.run(until=2.5)
    assert node.vetoes() == []
    assert all(gate is Gate.OPEN for t, _, gate in node.log if t >= reopened)
    rules = [rule for t, rule, _ in node.log if t >= reopened]
    assert "B3" in rules and rules[-1] == "H3"


def test_isolated_master_with_a_bmc_that_does_not_answer() -> None:
    node = Backup(read_after=10.0, power=Power.ON)  # never in time
    node.run(until=2.5)
    assert node.vetoes() == []


def test_dead_master_fails_over_at_keepalived_speed_without_a_close() -> None:
    node = Backup(read_after=0.008, power=Power.OFF)
    node.run(until=2.5)
    assert all(gate is Gate.OPEN for _, _, gate in node.log), node.log
    taken = next(t for t, rule, _ in node.log if rule == "L4")
    assert taken <= V3.master_down + V3.cycle


def test_power_cut_that_reads_on_for_a_while_still_fails_over_without_a_close() -> None:
    # The lab's power-off: links down at once, the BMC reads ON for 0.25 s more, then OFF.
    node = Backup(read_after=0.008, power=Power.OFF, on_until=0.25)
    node.run(until=1.0)
    assert all(gate is Gate.OPEN for _, _, gate in node.log), node.log
    assert next(t for t, rule, _ in node.log if rule == "L4") <= V3.master_down + V3.cycle
