"""Table-driven tests: one or more rows per rule of arbiter.policy, built from plain data."""

from __future__ import annotations

from dataclasses import replace

import pytest

from arbiter import policy as policy_module
from arbiter.model import (
    AcquireLease,
    Alert,
    Decision,
    Evidence,
    Fence,
    FenceOutcome,
    FenceResult,
    Gate,
    LeaseStatus,
    LeaseView,
    PeerView,
    PolicyConfig,
    PolicyState,
    Power,
    ReleaseLease,
    SendGarp,
    VrrpState,
)
from arbiter.policy import RULES, decide

M, B, F = VrrpState.MASTER, VrrpState.BACKUP, VrrpState.FAULT
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
STARTED = PolicyState(started=True, gate=Gate.OPEN, rule="B2")


def peer(**kw: object) -> PeerView:
    base: dict[str, object] = {"name": "b", "alive": True, "heard_at": NOW, "state": B, "priority": 100}
    base.update(kw)
    return PeerView(**base)  # type: ignore[arg-type]


def mine(token: int = 7, left: float = 2.5) -> LeaseView:
    return LeaseView(LeaseStatus.MINE, "a", token, NOW + left)


def theirs(token: int = 7, left: float = 2.5) -> LeaseView:
    return LeaseView(LeaseStatus.PEER, "b", token, NOW + left)


FREE = LeaseView(LeaseStatus.FREE)
UNKNOWN = LeaseView(LeaseStatus.UNKNOWN)


def ev(
    state: VrrpState = B,
    lease: LeaseView = FREE,
    peers: tuple[PeerView, ...] | None = None,
    quorate: bool | None = True,
    priority: int = 150,
) -> Evidence:
    return Evidence(
        instance="VI_1",
        state=state,
        vip_present=state is M,
        priority=priority,
        reference_quorate=quorate,
        lease=lease,
        peers=(peer(),) if peers is None else peers,
    )


def run(e: Evidence, prev: PolicyState = STARTED, cfg: PolicyConfig = CFG, now: float = NOW) -> Decision:
    return decide(prev, e, cfg, now)


def holding(since: float = NOW - 10, **kw: object) -> PolicyState:
    return replace(STARTED, was_holding=True, holding_since=since, **kw)  # type: ignore[arg-type]


# --- S0: start-up --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "evidence",
    [
        ev(quorate=None),  # no reference round yet
        ev(lease=LeaseView(LeaseStatus.PENDING)),  # no lease answer yet
        ev(peers=(peer(alive=None, heard_at=None),)),  # heartbeat deadtime not yet over
    ],
)
def test_s0_start_up_keeps_gate_closed_until_first_full_round(evidence: Evidence) -> None:
    d = run(evidence, prev=PolicyState())
    assert (d.gate, d.rule) == (Gate.CLOSED, "S0")
    assert not d.state.started


def test_s0_ends_once_every_source_answered() -> None:
    d = run(ev(), prev=PolicyState())
    assert (d.gate, d.rule) == (Gate.OPEN, "B2")
    assert d.state.started


def test_s0_a_node_started_cut_off_from_everything_waits_for_shared_evidence() -> None:
    # Lease store unreachable and no peer heard: maybe fenced and powered on where nobody sees it.
    silent = (peer(alive=False, heard_at=None),)
    d = run(ev(lease=UNKNOWN, peers=silent), prev=PolicyState())
    assert (d.gate, d.rule, d.state.started) == (Gate.CLOSED, "S0", False)
    assert "cut off from the lease store and every peer" in d.reason
    # Either kind of shared evidence ends the wait.
    assert run(ev(lease=FREE, peers=silent), prev=PolicyState()).state.started
    assert run(ev(lease=UNKNOWN), prev=PolicyState()).state.started


def test_s0_closed_even_when_keepalived_is_already_master() -> None:
    d = run(ev(state=M, lease=mine(), quorate=None), prev=PolicyState())
    assert (d.gate, d.rule) == (Gate.CLOSED, "S0")


# --- Q1: reference quorum ------------------------------------------------------------------------------


def test_q1_reference_lost_here_peer_reaches_it_closes_and_releases() -> None:
    d = run(ev(state=M, lease=mine(), quorate=False, peers=(peer(quorate=True),)), prev=holding())
    assert (d.gate, d.rule) == (Gate.CLOSED, "Q1")
    assert ReleaseLease() in d.actions
    assert "b still reaches it" in d.reason


def test_q1_reference_lost_and_no_peer_heard_closes() -> None:
    d = run(ev(state=M, lease=mine(), quorate=False, peers=(peer(alive=False),)), prev=holding())
    assert (d.gate, d.rule) == (Gate.CLOSED, "Q1")


def test_q1_reference_lost_everywhere_is_not_a_local_fault() -> None:
    d = run(ev(state=M, lease=mine(), quorate=False, peers=(peer(quorate=False),)), prev=holding())
    assert (d.gate, d.rule) == (Gate.OPEN, "H1")


# --- L1 / L2 / L3: the lease held by a peer ------------------------------------------------------------


def dead_master(read_at: float, power: Power = Power.OFF) -> PeerView:
    """The lease holder's last frame (0.2 s ago, still within deadtime) said MASTER with the VIP."""
    return peer(state=M, vip_present=True, heard_at=NOW - 0.2, power=power, power_at=read_at)


def test_l4_holder_read_off_after_its_last_heartbeat_keeps_the_vip() -> None:
    d = run(ev(state=M, lease=theirs(token=9), peers=(dead_master(NOW - 0.05),)), prev=holding(since=NOW - 0.1))
    assert (d.gate, d.rule) == (Gate.OPEN, "L4")
    assert "BMC read OFF after its last heartbeat" in d.reason
    assert not any(isinstance(a, Fence) for a in d.actions)  # never fence a valid lease holder (safety 3)


@pytest.mark.parametrize(
    ("holder", "why"),
    [
        (dead_master(NOW - 0.3), "read before its newest heartbeat"),
        (dead_master(NOW - 1.5), "read older than deadtime"),
        (dead_master(NOW - 0.05, power=Power.UNKNOWN), "BMC unreadable"),
        (dead_master(NOW - 0.05, power=Power.ON), "BMC says on"),
    ],
)
def test_l4_needs_a_fresh_off_read_after_the_last_heartbeat(holder: PeerView, why: str) -> None:
    d = run(ev(state=M, lease=theirs(), peers=(holder,)), prev=holding(since=NOW - 0.1))
    assert (d.gate, d.rule) == (Gate.CLOSED, "L1"), why


def test_h5_failsafe_accepts_a_peer_read_off_after_its_last_heartbeat() -> None:
    off = peer(alive=False, heard_at=NOW - 2, power=Power.OFF, power_at=NOW - 0.1)
    d = run(ev(state=M, lease=UNKNOWN, peers=(off,)), prev=holding(since=NOW - 5))
    assert (d.gate, d.rule) == (Gate.OPEN, "H5")


def test_l1_holding_while_peer_holds_lease_closes_with_token_in_reason() -> None:
    d = run(ev(state=M, lease=theirs(41), peers=(peer(state=M),)), prev=holding())
    assert (d.gate, d.rule) == (Gate.CLOSED, "L1")
    assert d.reason == "lease held by b (token 41); gate closed"


def test_l1_holder_silent_still_closes() -> None:
    d = run(ev(state=M, lease=theirs(), peers=(peer(alive=False),)), prev=holding())
    assert (d.gate, d.rule) == (Gate.CLOSED, "L1")


def test_l1_expired_peer_lease_does_not_block() -> None:
    d = run(ev(state=M, lease=theirs(left=-0.1), peers=(peer(alive=False),)), prev=holding())
    assert d.rule != "L1"


def test_l2_handover_from_a_holder_that_confirms_backup() -> None:
    d = run(ev(state=M, lease=theirs(9), peers=(peer(state=B, highest_token=9),)), prev=holding(NOW))
    assert (d.gate, d.rule) == (Gate.OPEN, "L2")
    assert AcquireLease(9) in d.actions


def test_l3_backup_closes_when_holder_renewed_after_its_adverts_stopped() -> None:
    # Holder's last advert seen at NOW-2; the lease (ttl 3, 2.9 left) was renewed at NOW-0.1: alive, path cut.
    e = ev(lease=theirs(left=2.9), peers=(peer(alive=False, state=M, adverts_at=NOW - 2.0),))
    d = run(e)
    assert (d.gate, d.rule) == (Gate.CLOSED, "L3")


def test_l3_not_when_lease_only_runs_out_after_holder_died() -> None:
    # Last renewal (NOW-1.5) came before the last advert (NOW-1.4): nothing says the holder lives on.
    e = ev(lease=theirs(left=1.5), peers=(peer(alive=False, state=M, adverts_at=NOW - 1.4),))
    d = run(e)
    assert (d.gate, d.rule) == (Gate.OPEN, "B2")


# --- V1: the VRRP path is cut while the master lives ---------------------------------------------------


def test_v1_peer_says_master_long_after_its_last_advert() -> None:
    d = run(ev(lease=UNKNOWN, peers=(peer(state=M, vip_present=True, adverts_at=NOW - 1.6),)))
    assert (d.gate, d.rule) == (Gate.CLOSED, "V1")


def test_v1_not_within_one_and_a_half_adverts() -> None:
    d = run(ev(lease=UNKNOWN, peers=(peer(state=M, vip_present=True, adverts_at=NOW - 1.4),)))
    assert (d.gate, d.rule) == (Gate.OPEN, "B2")


def test_v1_not_when_adverts_are_not_observed() -> None:
    d = run(ev(lease=UNKNOWN, peers=(peer(state=M, vip_present=True, adverts_at=None),)))
    assert (d.gate, d.rule) == (Gate.OPEN, "B2")


def test_v1_dead_peer_does_not_close_the_gate() -> None:
    # Its heartbeats stopped with its adverts: failover must stay as fast as keepalived's own.
    d = run(ev(lease=UNKNOWN, peers=(peer(alive=False, heard_at=NOW - 1.2, state=M, adverts_at=NOW - 1.3),)))
    assert (d.gate, d.rule) == (Gate.OPEN, "B2")


# --- D1 - D4: dual master ------------------------------------------------------------------------------


def test_d1_dual_master_with_the_lease_keeps_and_alerts() -> None:
    d = run(ev(state=M, lease=mine(5), peers=(peer(state=M, vip_present=True),)), prev=holding())
    assert (d.gate, d.rule) == (Gate.OPEN, "D1")
    assert any(isinstance(a, Alert) and a.kind == "split-brain" for a in d.actions)
    assert not any(isinstance(a, Fence) for a in d.actions)


def test_d1_fences_a_peer_that_does_not_step_down_within_deadtime() -> None:
    first = run(ev(state=M, lease=mine(5), peers=(peer(state=M),)), prev=holding(), now=NOW)
    later = run(ev(state=M, lease=mine(5, left=2.0), peers=(peer(state=M),)), prev=first.state, now=NOW + 1.0)
    assert later.rule == "D1"
    assert Fence("b", 5, "dual master: did not step down for the lease") in later.actions


def test_d1_sends_garp_once_the_peer_stepped_down() -> None:
    first = run(ev(state=M, lease=mine(5), peers=(peer(state=M),)), prev=holding())
    after = run(ev(state=M, lease=mine(5), peers=(peer(state=B),)), prev=first.state)
    assert after.rule == "H1"
    assert SendGarp() in after.actions


def test_d2_peer_reports_holding_the_lease() -> None:
    d = run(ev(state=M, lease=UNKNOWN, peers=(peer(state=M, lease_holder="b"),)), prev=holding())
    assert (d.gate, d.rule) == (Gate.CLOSED, "D2")


@pytest.mark.parametrize(("mine_prio", "rule_gate"), [(150, Gate.OPEN), (50, Gate.CLOSED)])
def test_d3_without_a_lease_priority_decides(mine_prio: int, rule_gate: Gate) -> None:
    d = run(ev(state=M, lease=UNKNOWN, priority=mine_prio, peers=(peer(state=M),)), prev=holding(NOW))
    assert (d.gate, d.rule) == (rule_gate, "D3")


def test_d3_equal_priority_smaller_name_wins() -> None:
    d = run(ev(state=M, lease=UNKNOWN, priority=100, peers=(peer(state=M, priority=100),)), prev=holding(NOW))
    assert (d.gate, d.rule) == (Gate.OPEN, "D3")


def test_d3_lease_free_acquires() -> None:
    d = run(ev(state=M, lease=FREE, peers=(peer(state=M, highest_token=12),)), prev=holding(NOW))
    assert AcquireLease(12) in d.actions


def test_d3_winner_fences_without_lease_only_after_deadtime_ttl_and_race_delay() -> None:
    cfg = replace(CFG, fence_delay=5.0)
    e = ev(state=M, lease=UNKNOWN, peers=(peer(state=M),))
    first = run(e, prev=holding(NOW), cfg=cfg)
    early = run(e, prev=first.state, cfg=cfg, now=NOW + 8.9)
    late = run(e, prev=early.state, cfg=cfg, now=NOW + 9.0)
    assert not any(isinstance(a, Fence) for a in early.actions)
    assert Fence("b", None, "dual master without a lease: did not step down") in late.actions


def test_d4_winner_whose_lease_expired_under_this_hold_self_demotes() -> None:
    prev = holding(NOW - 10, lease_valid_until=NOW - 1.0)
    d = run(ev(state=M, lease=UNKNOWN, peers=(peer(state=M),)), prev=prev)
    assert (d.gate, d.rule) == (Gate.CLOSED, "D4")


def test_d4_counts_a_lease_an_unanswered_acquisition_may_have_got() -> None:
    """The store may have granted an acquisition whose answer never came (it died after the SET): the lease
    the node does not know of still runs out under rule 2, and a D3 winner holding past it steps down."""
    asked = run(ev(state=M, lease=FREE, peers=(peer(state=B),)), prev=holding(NOW - 0.1))
    assert any(isinstance(a, AcquireLease) for a in asked.actions)
    assert asked.state.lease_maybe_until == NOW + CFG.ttl
    dual = ev(state=M, lease=UNKNOWN, peers=(peer(state=M),))
    early = run(dual, prev=asked.state, now=NOW + 1.0)
    assert (early.gate, early.rule) == (Gate.OPEN, "D3")  # within TTL − safety of the request: may still hold
    late = run(dual, prev=asked.state, now=NOW + CFG.ttl - CFG.safety + 0.01)
    assert (late.gate, late.rule) == (Gate.CLOSED, "D4")
    # A peer's lease read ends that doubt: the acquisition did not win (or its lease is over).
    cleared = run(ev(state=M, lease=LeaseView(LeaseStatus.PEER, "b", 9), peers=(peer(state=M),)), prev=asked.state)
    assert cleared.rule == "L1" and cleared.state.lease_maybe_until is None


# --- H1 - H6: holding ----------------------------------------------------------------------------------


def test_h1_holding_with_valid_lease() -> None:
    d = run(ev(state=M, lease=mine(3)), prev=holding())
    assert (d.gate, d.rule, d.reason) == (Gate.OPEN, "H1", "holding the VIP with the lease (token 3)")
    assert d.actions == ()


def test_h1_fences_a_silent_peer_with_the_token_once() -> None:
    e = ev(state=M, lease=mine(3), peers=(peer(alive=False, heard_at=NOW - 2),))
    d = run(e, prev=holding())
    assert (d.gate, d.rule) == (Gate.OPEN, "H1")
    assert [a for a in d.actions if isinstance(a, Fence)] == [
        Fence("b", 3, "silent on every heartbeat medium while this node holds the lease")
    ]
    again = run(e, prev=d.state, now=NOW + 0.2)
    assert not any(isinstance(a, Fence) for a in again.actions)  # running: no second fence


def test_h1_does_not_fence_a_peer_that_left_cleanly() -> None:
    gone = peer(alive=False, heard_at=NOW - 2, left=True)
    d = run(ev(state=M, lease=mine(3), peers=(gone,)), prev=holding())
    assert (d.gate, d.rule) == (Gate.OPEN, "H1")
    assert not any(isinstance(a, Fence) for a in d.actions)
    # The same silence without the leaving word is a failure: fenced.
    d = run(ev(state=M, lease=mine(3), peers=(replace(gone, left=False),)), prev=holding())
    assert [a.peer for a in d.actions if isinstance(a, Fence)] == ["b"]


def test_h1_no_fence_without_fence_levels() -> None:
    cfg = replace(CFG, fenceable=frozenset())
    d = run(ev(state=M, lease=mine(3), peers=(peer(alive=False),)), prev=holding(), cfg=cfg)
    assert not any(isinstance(a, Fence) for a in d.actions)


def test_h1_fenced_off_only_after_a_status_read_says_off() -> None:
    e = ev(state=M, lease=mine(3), peers=(peer(alive=False, heard_at=NOW - 2),))
    d = run(e, prev=holding())
    running = replace(e, peers=(peer(alive=False, heard_at=NOW - 2, fence=FenceResult(FenceOutcome.RUNNING, NOW)),))
    d = run(running, prev=d.state, now=NOW + 0.2)
    assert "b" not in d.state.fenced_off
    off = replace(e, peers=(peer(alive=False, heard_at=NOW - 2, fence=FenceResult(FenceOutcome.OFF, NOW + 0.5)),))
    d = run(off, prev=d.state, now=NOW + 0.6)
    assert "b" in d.state.fenced_off
    assert SendGarp() in d.actions


def test_f1_failed_fence_closes_the_gate_and_retries_after_power_timeout() -> None:
    e = ev(state=M, lease=mine(3), peers=(peer(alive=False, heard_at=NOW - 2),))
    d = run(e, prev=holding())
    failed = FenceResult(FenceOutcome.FAILED, NOW + 2.0, "BMC timeout")
    ef = replace(e, lease=mine(3, left=5), peers=(peer(alive=False, heard_at=NOW - 2, fence=failed),))
    d = run(ef, prev=d.state, now=NOW + 2.0)
    assert (d.gate, d.rule) == (Gate.CLOSED, "F1")
    assert not any(isinstance(a, Fence) for a in d.actions)
    d = run(ef, prev=d.state, now=NOW + 4.0)
    assert any(isinstance(a, Fence) for a in d.actions)


def test_f1_keep_policy_keeps_the_vip() -> None:
    cfg = replace(CFG, on_fence_failure="keep")
    e = ev(state=M, lease=mine(3), peers=(peer(alive=False, heard_at=NOW - 2),))
    d = run(e, prev=holding(), cfg=cfg)
    failed = FenceResult(FenceOutcome.FAILED, NOW + 2.0, "BMC timeout")
    ef = replace(e, lease=mine(3, left=5), peers=(peer(alive=False, heard_at=NOW - 2, fence=failed),))
    d = run(ef, prev=d.state, cfg=cfg, now=NOW + 2.0)
    assert (d.gate, d.rule) == (Gate.OPEN, "H1")


def test_h2_lease_not_renewed_within_safety_margin_self_demotes() -> None:
    d = run(ev(state=M, lease=mine(3, left=0.4)), prev=holding())
    assert (d.gate, d.rule) == (Gate.CLOSED, "H2")


def test_h3_lease_lost_by_a_store_restart_is_reacquired_seeded_without_transition() -> None:
    prev = holding(lease_valid_until=NOW + 2.0, highest_token=41)
    d = run(ev(state=M, lease=FREE), prev=prev)
    assert (d.gate, d.rule) == (Gate.OPEN, "H3")
    assert AcquireLease(41) in d.actions


def test_h3_seed_includes_peer_tokens() -> None:
    d = run(ev(state=M, lease=FREE, peers=(peer(highest_token=99),)), prev=holding(NOW, highest_token=41))
    assert AcquireLease(99) in d.actions


def test_h3_store_that_never_grants_is_treated_as_unreachable_after_ttl() -> None:
    d = run(ev(state=M, lease=FREE, peers=(peer(alive=False),)), prev=holding(NOW - 2.6))
    assert (d.gate, d.rule) == (Gate.CLOSED, "H6")


def test_h4_store_unreachable_own_lease_still_valid() -> None:
    d = run(ev(state=M, lease=UNKNOWN, peers=(peer(alive=False),)), prev=holding(lease_valid_until=NOW + 1.0))
    assert (d.gate, d.rule) == (Gate.OPEN, "H4")


def test_h4_ends_at_ttl_minus_safety() -> None:
    d = run(ev(state=M, lease=UNKNOWN, peers=(peer(alive=False),)), prev=holding(lease_valid_until=NOW + 0.5))
    assert (d.gate, d.rule) == (Gate.CLOSED, "H6")


def test_h5_failsafe_peer_confirms_backup_after_this_node_took_the_vip() -> None:
    d = run(ev(state=M, lease=UNKNOWN, peers=(peer(heard_at=NOW - 0.1),)), prev=holding(NOW - 5))
    assert (d.gate, d.rule) == (Gate.OPEN, "H5")


def test_h5_word_older_than_the_takeover_does_not_count() -> None:
    d = run(ev(state=M, lease=UNKNOWN, peers=(peer(heard_at=NOW - 0.5),)), prev=holding(NOW - 0.2))
    assert (d.gate, d.rule) == (Gate.CLOSED, "H6")


def test_h5_failsafe_with_a_fenced_peer_needs_a_fresh_off_read() -> None:
    fenced = replace(STARTED, was_holding=True, holding_since=NOW - 5, fenced_off=frozenset({"b"}))
    off = FenceResult(FenceOutcome.OFF, NOW - 4)
    fresh = peer(alive=False, fence=off, power=Power.OFF, power_at=NOW - 0.2)
    stale = peer(alive=False, fence=off, power=Power.OFF, power_at=NOW - 3)
    assert run(ev(state=M, lease=UNKNOWN, peers=(fresh,)), prev=fenced).rule == "H5"
    assert run(ev(state=M, lease=UNKNOWN, peers=(stale,)), prev=fenced).rule == "H6"


def test_fenced_peer_powered_on_again_is_no_longer_off() -> None:
    fenced = replace(STARTED, fenced_off=frozenset({"b"}))
    on = peer(alive=False, fence=FenceResult(FenceOutcome.OFF, NOW - 4), power=Power.ON, power_at=NOW - 1)
    assert "b" not in run(ev(peers=(on,)), prev=fenced).state.fenced_off


def test_h6_store_unreachable_lease_expired_peer_silent() -> None:
    d = run(ev(state=M, lease=UNKNOWN, peers=(peer(alive=False),)), prev=holding())
    assert (d.gate, d.rule) == (Gate.CLOSED, "H6")
    assert not any(isinstance(a, Fence) for a in d.actions)  # not quorate: no fencing


# --- B1 / B2: not holding ------------------------------------------------------------------------------


def silent_master() -> PeerView:
    """Silent on every medium; its last frame said MASTER with the VIP (agent stuck, keepalived master)."""
    return peer(alive=False, heard_at=NOW - 2, state=M, vip_present=True)


def test_b3_backup_acquires_the_free_lease_to_fence_a_silent_master() -> None:
    d = run(ev(lease=FREE, peers=(silent_master(),)))
    assert (d.gate, d.rule) == (Gate.OPEN, "B3")
    assert AcquireLease(seed=0) in d.actions
    assert not any(isinstance(a, Fence) for a in d.actions)  # not before the lease is in hand


def test_b3_backup_fences_a_silent_master_with_the_token_before_master_down() -> None:
    d = run(ev(lease=mine(token=12), peers=(silent_master(),)))
    assert (d.gate, d.rule) == (Gate.OPEN, "B3")
    assert Fence("b", 12, "silent on every heartbeat medium; its last word claimed the VIP") in d.actions
    assert not any(isinstance(a, ReleaseLease) for a in d.actions)  # B1 must not give the lease back first


@pytest.mark.parametrize(
    "lease",
    [theirs(), UNKNOWN],
    ids=["the silent master still holds the lease", "lease store unreachable"],
)
def test_b3_never_fences_without_the_lease(lease: LeaseView) -> None:
    d = run(ev(lease=lease, peers=(silent_master(),)))
    assert not any(isinstance(a, Fence) for a in d.actions)


def test_b3_not_for_a_silent_peer_that_last_said_backup() -> None:
    d = run(ev(lease=FREE, peers=(peer(alive=False, heard_at=NOW - 2, state=B),)))
    assert d.rule == "B2"


def test_b1_backup_releases_a_stale_lease() -> None:
    d = run(ev(state=B, lease=mine()))
    assert (d.gate, d.rule) == (Gate.OPEN, "B1")
    assert ReleaseLease() in d.actions


@pytest.mark.parametrize("state", [B, F, VrrpState.STOP, VrrpState.UNKNOWN])
def test_b2_not_holding_leaves_keepalived_to_decide(state: VrrpState) -> None:
    # The master outranks this node: no preemption to wait for (a lower-priority master is P1's case).
    d = run(ev(state=state, lease=theirs(), peers=(peer(state=M, priority=200, adverts_at=NOW - 0.5),)))
    assert (d.gate, d.rule) == (Gate.OPEN, "B2")


def test_nopreempt_returning_node_adds_no_transition() -> None:
    cfg = replace(CFG, nopreempt=True)
    d = run(ev(state=B, lease=theirs(), peers=(peer(state=M, adverts_at=NOW - 0.3),)), cfg=cfg)
    assert (d.gate, d.rule, d.actions) == (Gate.OPEN, "B2", ())


def test_two_instances_decide_on_their_own_leases() -> None:
    # Dual-master mode: node a masters VI_1 (its lease), node b masters VI_2 (b's lease).
    vi1 = run(replace(ev(state=M, lease=mine(4)), instance="VI_1"), prev=holding())
    # b has the higher priority on VI_2 (else keepalived on a would preempt it: P1).
    vi2 = run(replace(ev(state=B, lease=theirs(9), peers=(peer(state=M),), priority=50), instance="VI_2"))
    assert (vi1.gate, vi1.rule) == (Gate.OPEN, "H1")
    assert (vi2.gate, vi2.rule) == (Gate.OPEN, "B2")


def test_every_rule_has_a_description_and_the_docstring_table_names_it() -> None:
    doc = policy_module.__doc__ or ""
    for rule in RULES:
        assert f"| {rule} " in doc, rule


def test_decide_is_pure_same_inputs_same_decision() -> None:
    e = ev(state=M, lease=UNKNOWN, peers=(peer(state=M),))
    assert run(e, prev=holding(NOW)) == run(e, prev=holding(NOW))


def test_fenced_peer_powered_back_on_while_cut_off_is_fenced_again_when_it_advertises() -> None:
    e = ev(state=M, lease=mine(3), peers=(peer(alive=False, heard_at=NOW - 2),))
    d = run(e, prev=holding())
    off = FenceResult(FenceOutcome.OFF, NOW + 0.5)
    d = run(replace(e, peers=(peer(alive=False, heard_at=NOW - 2, fence=off),)), prev=d.state, now=NOW + 0.6)
    assert "b" in d.state.fenced_off
    # Within the hold-down, its BMC now reads ON and it is still silent: no longer counted OFF, but booting is
    # no reason to power it off again (issue 13: tests/unit/test_policy_fencing.py) ...
    back = peer(alive=False, heard_at=NOW - 2, fence=off, power=Power.ON, power_at=NOW + 5)
    d = run(replace(e, lease=mine(3, left=7.6), peers=(back,)), prev=d.state, now=NOW + 5.1)
    assert "b" not in d.state.fenced_off and not any(isinstance(a, Fence) for a in d.actions)
    # ... until its keepalived advertises (a VRRP master): then it is fenced again.
    back = replace(back, adverts_at=NOW + 5.2)
    d = run(replace(e, lease=mine(3, left=7.6), peers=(back,)), prev=d.state, now=NOW + 5.3)
    assert Fence("b", 3, "silent on every heartbeat medium while this node holds the lease") in d.actions


def test_no_second_fence_while_one_is_running() -> None:
    e = ev(state=M, lease=mine(3), peers=(peer(alive=False, heard_at=NOW - 2),))
    d = run(e, prev=holding())
    running = peer(alive=False, heard_at=NOW - 2, fence=FenceResult(FenceOutcome.RUNNING, NOW))
    later = run(replace(e, peers=(running,)), prev=d.state, cfg=replace(CFG, hold_down=1.0), now=NOW + 5)
    assert not any(isinstance(a, Fence) for a in later.actions)
