"""Failures the simulation found on main after issue 12's merges, each pinned as a plain-data decide() sequence
and as the fixed schedule the state machine found."""

from __future__ import annotations

from arbiter.model import AcquireLease, Gate
from tests.unit.policy_sim import Edges, World
from tests.unit.test_policy_rules import B, M, NOW, ev, holding, peer, run, theirs

# --- L2 on a stale frame ----------------------------------------------------------------------------------


def test_l2_does_not_open_on_a_holder_frame_older_than_this_hold() -> None:
    """The holder's last frame (BACKUP, 0.8 s old, alive within deadtime) was sent before this node took the VIP
    and more than a heartbeat ago: it may predate the holder's own takeover behind a cut path. L1, not L2."""
    d = run(ev(state=M, lease=theirs(9), peers=(peer(state=B, heard_at=NOW - 0.8),)), prev=holding(NOW))
    assert (d.gate, d.rule) == (Gate.CLOSED, "L1")
    assert AcquireLease(9) not in d.actions


def test_l2_opens_on_a_frame_within_one_heartbeat_before_the_vip_event() -> None:
    """The agent decides on the VIP event, before the holder's next frame: one heartbeat interval old is recent."""
    d = run(ev(state=M, lease=theirs(9), peers=(peer(state=B, heard_at=NOW - 0.15),)), prev=holding(NOW))
    assert (d.gate, d.rule) == (Gate.OPEN, "L2")


def test_l2_does_not_open_on_a_frame_sent_during_this_hold_that_is_not_recent() -> None:
    """Sent in the tick this node took the VIP, two heartbeats ago: the holder may have taken the VIP and the
    lease right after it (TestTwoNodes' find below). Only a recent word counts."""
    d = run(ev(state=M, lease=theirs(9), peers=(peer(state=B, heard_at=NOW - 0.4),)), prev=holding(NOW - 0.4))
    assert (d.gate, d.rule) == (Gate.CLOSED, "L1")


def test_restarts_one_way_cut_at_cold_start_holds_no_dual_master() -> None:
    """TestRestarts' find: cold start, then b hears neither a's adverts nor its heartbeats (a hears b). Both
    keepalived timers run out 0.2 s apart; a takes the lease (H3, D1) and b kept the VIP by L2 on a's last frame,
    which said BACKUP 0.8 s before: rule 1, the lease shared."""
    world = World(["a", "b"], edges=Edges(late_answers=True, prio0=True))
    world.run(18)
    world.vrrp_cut.add(("a", "b"))
    world.hb_cut.add(("a", "b"))
    rules = []
    for _ in range(10):
        world.step()  # raised "rule 1: a and b both hold the VIP with shared evidence" before the fix
        rules.append(world.nodes["b"].last_rule)
    assert [n.name for n in world.holders()] == ["a"]
    assert "L1" in rules and "L2" not in rules


def test_two_nodes_cut_pair_as_the_store_restarts_empty_holds_no_dual_master() -> None:
    """TestTwoNodes' find: the store read-only (a's lease ran out, H2), b's keepalived took the VIP at
    master-down; in that very tick the pair was cut both ways and the store restarted empty and writable. a's
    keepalived fired 0.2 s later, a took the lease (D3 on b's last frame) and b kept the VIP by L2 on a's frame
    from the tick b took the VIP (sent after b's hold began, BACKUP then): rule 1, the lease shared."""
    world = World(["a", "b"], nopreempt=True)
    world.run(22)
    world.store.readonly = True
    world.run(30)
    world.vrrp_cut |= {("a", "b"), ("b", "a")}
    world.hb_cut |= {("a", "b"), ("b", "a")}
    world.restart_store_empty(0.0)
    world.run(20)  # raised "rule 1: a and b both hold the VIP with shared evidence" (b by L2) before the fix
    assert [n.name for n in world.holders()] == ["a"]
