"""Issue 13 in the policy: a failed fence holds (F1, holding or not), a fenced peer powered on again is not
counted OFF and not power-cycled for its silence alone, an operator's confirmation ends F1, and with the lease
store unreachable a peer silent on every medium is fenced without a token (H6, B4) once rule 3 allows it.

Plain data, as tests/unit/test_policy_rules.py (whose builders these reuse): node a (priority 150), peer b.
"""

from __future__ import annotations

from dataclasses import replace

from arbiter.model import (
    AcquireLease,
    Decision,
    Evidence,
    Fence,
    FenceOutcome,
    FenceResult,
    Gate,
    LeaseStatus,
    LeaseView,
    PeerView,
    PolicyState,
    Power,
    ReleaseLease,
    Resumed,
)
from arbiter.policy import RULES, initial_state
from tests.unit.test_policy_rules import CFG, FREE, NOW, UNKNOWN, B, M, ev, holding, mine, peer, run

FAILED = FenceResult(FenceOutcome.FAILED, NOW + 2.0, "fencing node b failed on every level: BMC timeout")


def fences(d: Decision) -> list[Fence]:
    return [a for a in d.actions if isinstance(a, Fence)]


def failed_fence_then(e: Evidence) -> Decision:
    """a held the VIP with the lease, fenced the silent b (H1), and the fence failed (F1)."""
    start = ev(state=M, lease=mine(3), peers=(peer(alive=False, heard_at=NOW - 2, state=M, vip_present=True),))
    d = run(start, prev=holding())
    assert fences(d) == [Fence("b", 3, "silent on every heartbeat medium while this node holds the lease")]
    return run(e, prev=d.state, now=NOW + 2.0)


# --- item 2: a failed fence holds -----------------------------------------------------------------------------


def test_a_failed_fence_keeps_the_gate_closed_after_keepalived_dropped_the_vip() -> None:
    """Before: F1 closed, keepalived dropped the VIP (FAULT), and B3 reopened at once: the survivor flapped."""
    silent = peer(alive=False, heard_at=NOW - 2, state=M, vip_present=True, fence=FAILED)
    d = failed_fence_then(ev(state=M, lease=mine(3, left=5), peers=(silent,)))
    assert (d.gate, d.rule) == (Gate.CLOSED, "F1")
    for step in range(1, 30):
        # keepalived in FAULT: not holding; the lease (renewed by the agent's loop) kept, never released (B1).
        # A retry asked for runs (the agent marks it RUNNING at once): the gate stays closed meanwhile too.
        retrying = any(isinstance(a, Fence) for a in d.actions) or silent.fence is not FAILED
        at = NOW + 2.0 + 0.2 * step
        silent = replace(silent, fence=FenceResult(FenceOutcome.RUNNING, at) if retrying else FAILED)
        d = run(ev(state=B, lease=mine(3, left=5), peers=(silent,)), prev=d.state, now=at)
        assert (d.gate, d.rule) == (Gate.CLOSED, "F1"), (step, d.rule, d.reason)
        assert ReleaseLease() not in d.actions
    assert "confirm-off" in d.reason


def test_f1_retries_the_fence_with_the_token_while_closed() -> None:
    silent = peer(alive=False, heard_at=NOW - 2, state=M, vip_present=True, fence=FAILED)
    d = failed_fence_then(ev(state=B, lease=mine(3, left=5), peers=(silent,)))
    assert d.rule == "F1" and fences(d) == []  # retried after the power timeout (2 s), not at once
    d = run(ev(state=B, lease=mine(3, left=5), peers=(silent,)), prev=d.state, now=NOW + 4.1)
    assert d.rule == "F1" and [f.token for f in fences(d)] == [3]


def test_f1_acquires_a_free_lease_so_that_the_retry_carries_a_token() -> None:
    silent = peer(alive=False, heard_at=NOW - 2, state=M, vip_present=True, fence=FAILED)
    d = failed_fence_then(ev(state=B, lease=FREE, peers=(silent,)))
    assert d.rule == "F1" and any(isinstance(a, AcquireLease) for a in d.actions)


def test_f1_ends_when_the_fence_succeeds_the_peer_is_heard_or_an_operator_confirms() -> None:
    silent = peer(alive=False, heard_at=NOW - 2, state=M, vip_present=True, fence=FAILED)
    d = failed_fence_then(ev(state=B, lease=mine(3, left=5), peers=(silent,)))
    assert d.rule == "F1"
    later = NOW + 5.0
    off = FenceResult(FenceOutcome.OFF, NOW + 4.5, "status OFF read from bmc-b")
    by_hand = FenceResult(FenceOutcome.OFF, NOW + 4.5, "confirmed off by hand by alice at …", by_hand=True)
    for b in (
        replace(silent, fence=off),
        replace(silent, fence=by_hand),
        peer(alive=True, heard_at=NOW + 4.9, state=B, fence=FAILED),
    ):
        after = run(ev(state=B, lease=mine(3, left=5), peers=(b,)), prev=d.state, now=later)
        assert after.gate is Gate.OPEN and after.rule != "F1", (b, after.rule, after.reason)


def test_f1_keep_still_keeps_the_vip_open() -> None:
    cfg = replace(CFG, on_fence_failure="keep")
    silent = peer(alive=False, heard_at=NOW - 2, state=M, vip_present=True, fence=FAILED)
    d = run(ev(state=M, lease=mine(3), peers=(peer(alive=False, heard_at=NOW - 2),)), prev=holding(), cfg=cfg)
    d = run(ev(state=M, lease=mine(3, left=5), peers=(silent,)), prev=d.state, cfg=cfg, now=NOW + 2.0)
    assert (d.gate, d.rule) == (Gate.OPEN, "H1")


def test_a_hand_confirmation_counts_for_the_failsafe_until_the_bmc_reads_on() -> None:
    by_hand = FenceResult(FenceOutcome.OFF, NOW - 1, "confirmed off by hand by alice", by_hand=True)
    b = peer(alive=False, heard_at=NOW - 5, state=M, vip_present=True, fence=by_hand)
    d = run(ev(state=M, lease=UNKNOWN, peers=(b,)), prev=holding(NOW - 10))
    assert (d.gate, d.rule) == (Gate.OPEN, "H5")
    on = replace(b, power=Power.ON, power_at=NOW - 0.5)
    d = run(ev(state=M, lease=UNKNOWN, peers=(on,)), prev=d.state, now=NOW + 0.2)
    assert d.gate is Gate.CLOSED, d.rule


# --- item 1: a fenced peer powered on again ---------------------------------------------------------------------


def fenced_then_powered_on() -> tuple[PolicyState, FenceResult]:
    off = FenceResult(FenceOutcome.OFF, NOW - 5, "status OFF read from bmc-b")
    b = peer(alive=False, heard_at=NOW - 8, state=M, vip_present=True, fence=off, power=Power.OFF, power_at=NOW - 5)
    d = run(ev(state=M, lease=mine(3), peers=(b,)), prev=holding())
    assert "b" in d.state.fenced_off and d.rule == "H1"
    return d.state, off


def test_a_fenced_peer_that_reads_on_again_is_not_counted_off_nor_power_cycled_for_its_silence() -> None:
    state, off = fenced_then_powered_on()
    b = peer(alive=False, heard_at=NOW - 8, state=M, vip_present=True, fence=off, power=Power.ON, power_at=NOW)
    d = run(ev(state=M, lease=mine(3), peers=(b,)), prev=state, now=NOW + 0.2)
    assert "b" not in d.state.fenced_off
    assert (d.gate, d.rule, fences(d)) == (Gate.OPEN, "H1", [])  # the lease keeps it out while it boots
    # Without the store the failsafe no longer trusts the old OFF: the gate closes (H6).
    d = run(ev(state=M, lease=UNKNOWN, peers=(b,)), prev=replace(state, lease_valid_until=None), now=NOW + 0.2)
    assert (d.gate, d.rule) == (Gate.CLOSED, "H6")


def test_a_powered_on_silent_peer_that_advertises_is_fenced_again() -> None:
    state, off = fenced_then_powered_on()
    b = peer(
        alive=False, heard_at=NOW - 8, state=M, vip_present=True, fence=off, power=Power.ON, power_at=NOW,
        adverts_at=NOW + 0.1,
    )  # fmt: skip
    d = run(ev(state=M, lease=mine(3), peers=(b,)), prev=state, now=NOW + 0.2)
    assert [f.peer for f in fences(d)] == ["b"]


def test_an_ineffective_fence_does_not_hold_the_gate_closed() -> None:
    """ON again inside the hold-down, no further level: FAILED, but the lease keeps the VIP here (README)."""
    state, _ = fenced_then_powered_on()
    ineffective = FenceResult(FenceOutcome.FAILED, NOW + 1, "b reads ON again …; no further level", ineffective=True)
    b = peer(alive=False, heard_at=NOW - 8, state=M, vip_present=True, fence=ineffective, power=Power.ON,
             power_at=NOW + 1)  # fmt: skip
    state = replace(state, fence_requested=(("b", NOW + 0.5),))
    d = run(ev(state=M, lease=mine(3), peers=(b,)), prev=state, now=NOW + 1.2)
    assert (d.gate, d.rule) == (Gate.OPEN, "H1")
    assert fences(d) == []  # not advertising: not asked again


# --- item 7: the lease store unreachable, a peer silent on every medium ----------------------------------------


def storeless_master(rule: str = "H5", **kw: object) -> PeerView:
    fields: dict[str, object] = {"alive": False, "heard_at": NOW - 2, "state": M, "vip_present": True, "rule": rule}
    return peer(**{**fields, **kw})


def test_b4_closes_and_fences_a_silent_storeless_master_without_a_token_after_a_ttl() -> None:
    """Before: B2 opened, keepalived took the VIP at master-down, H6 closed at once: a flash every master-down,
    and the silent master was never fenced."""
    b = storeless_master()
    d = run(ev(state=B, lease=UNKNOWN, peers=(b,)), now=NOW)  # b counts as silent from now
    assert (d.gate, d.rule, fences(d)) == (Gate.CLOSED, "B4", [])
    d = run(ev(state=B, lease=UNKNOWN, peers=(b,)), prev=d.state, now=NOW + CFG.ttl - 0.1)
    assert (d.rule, fences(d)) == ("B4", [])
    d = run(ev(state=B, lease=UNKNOWN, peers=(b,)), prev=d.state, now=NOW + CFG.ttl)
    assert d.rule == "B4" and [(f.peer, f.token) for f in fences(d)] == [("b", None)]
    # Confirmed OFF: settled; the gate opens and keepalived takes the VIP, kept by the failsafe (H5).
    off = FenceResult(FenceOutcome.OFF, NOW + CFG.ttl + 1, "status OFF read from bmc-b")
    dead = storeless_master(fence=off, power=Power.OFF, power_at=NOW + CFG.ttl + 1)
    d = run(ev(state=B, lease=UNKNOWN, peers=(dead,)), prev=d.state, now=NOW + CFG.ttl + 1.1)
    assert (d.gate, d.rule) == (Gate.OPEN, "B2")
    fresh = replace(dead, power_at=NOW + CFG.ttl + 4.8)  # the agent re-reads a fenced peer's BMC
    d = run(ev(state=M, lease=UNKNOWN, peers=(fresh,)), prev=d.state, now=NOW + CFG.ttl + 5)
    assert (d.gate, d.rule) == (Gate.OPEN, "H5")


def test_no_blind_fence_of_a_master_last_seen_with_the_store() -> None:
    """Rule 3: a peer whose last word was H1 may still renew its lease where this node cannot see the store."""
    b = storeless_master(rule="H1")
    d = run(ev(state=B, lease=UNKNOWN, peers=(b,)), now=NOW)
    d = run(ev(state=B, lease=UNKNOWN, peers=(b,)), prev=d.state, now=NOW + 10 * CFG.ttl)
    assert (d.gate, d.rule, fences(d)) == (Gate.CLOSED, "B4", [])


def test_h6_fences_a_silent_storeless_peer_after_a_ttl() -> None:
    b = storeless_master(rule="H4", state=B, vip_present=False)
    d = run(ev(state=M, lease=UNKNOWN, peers=(b,)), prev=holding(NOW - 10), now=NOW)
    assert (d.gate, d.rule, fences(d)) == (Gate.CLOSED, "H6", [])
    d = run(ev(state=M, lease=UNKNOWN, peers=(b,)), prev=d.state, now=NOW + CFG.ttl)
    assert d.rule == "H6" and [(f.peer, f.token) for f in fences(d)] == [("b", None)]


def test_every_rule_id_decide_returns_here_is_in_the_table() -> None:
    assert {"F1", "B4", "H5", "H6"} <= set(RULES)


def test_f2_three_nodes_no_node_takes_the_vip_while_the_lease_holder_holds_a_failed_fence() -> None:
    """Three nodes: b holds the lease, its fence of the silent c failed (F1), so b keeps the lease and stays
    closed. Before, a opened (B2) and, once keepalived made it master, the handover rule (L2) kept it there
    beside the silent c, never fenced."""
    cfg = replace(CFG, peers=("b", "c"), fenceable=frozenset({"b", "c"}))
    b = peer(name="b", rule="F1", lease_holder="b")
    c = peer(name="c", alive=False, heard_at=NOW - 5, state=M, vip_present=True, adverts_at=None)
    theirs = LeaseView(LeaseStatus.PEER, "b", 7, NOW + 2.5)
    d = run(ev(state=B, lease=theirs, peers=(b, c)), cfg=cfg)
    assert (d.gate, d.rule) == (Gate.CLOSED, "F2")
    d = run(ev(state=M, lease=theirs, peers=(b, c)), prev=holding(), cfg=cfg)
    assert (d.gate, d.rule) == (Gate.CLOSED, "F2")
    # b's fence succeeded or was confirmed: b says H1/B2 again, and a follows its own rules.
    d = run(ev(state=B, lease=theirs, peers=(replace(b, rule="B2"), c)), cfg=cfg)
    assert d.rule != "F2"


def test_the_f1_hold_is_restored_from_the_record_after_an_agent_restart() -> None:
    resumed = Resumed(Gate.CLOSED, "F1", False, 3, NOW + 2, NOW - 1, None, ("b",))
    state = replace(initial_state(3, resumed), started=True)
    silent = peer(alive=False, heard_at=None, state=B)  # no frame since the restart: its claim is not known
    d = run(ev(state=B, lease=mine(3), peers=(silent,)), prev=state)
    assert (d.gate, d.rule) == (Gate.CLOSED, "F1")
    assert [f.token for f in fences(d)] == [3]  # retried at once by the new agent


def test_b4_waits_this_nodes_race_delay_on_top_of_the_ttl() -> None:
    """The agent's orchestrator does not wait the race delay for a token-less fence (the policy does, as for D3):
    of two partitioned nodes the one with the shorter delay must act first."""
    cfg = replace(CFG, fence_delay=2.0)
    b = storeless_master()
    d = run(ev(state=B, lease=UNKNOWN, peers=(b,)), cfg=cfg, now=NOW)
    d = run(ev(state=B, lease=UNKNOWN, peers=(b,)), prev=d.state, cfg=cfg, now=NOW + CFG.ttl + 1.9)
    assert (d.rule, fences(d)) == ("B4", [])
    d = run(ev(state=B, lease=UNKNOWN, peers=(b,)), prev=d.state, cfg=cfg, now=NOW + CFG.ttl + 2.0)
    assert [(f.peer, f.token) for f in fences(d)] == [("b", None)]
