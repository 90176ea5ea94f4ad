"""Failures the simulation found on main after issue 12's merges, each pinned as a plain-data decide() sequence
and as the fixed schedule the state machine found."""

from __future__ import annotations

from dataclasses import replace

import pytest

from arbiter.model import (
    AcquireLease,
    Decision,
    Evidence,
    Fence,
    FenceOutcome,
    FenceResult,
    Gate,
    PolicyConfig,
    PolicyState,
)
from tests.unit.policy_sim import DEADTIME, FENCE_TIME, TICK, TTL, Edges, Violation, World, master_down
from tests.unit.test_policy_rules import CFG, FREE, NOW, UNKNOWN, B, M, ev, holding, mine, peer, run, theirs

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


# --- a failed fence while the store does not answer --------------------------------------------------------


def test_f1_closes_on_a_failed_fence_while_the_store_is_unreachable() -> None:
    """H1 fenced a silent peer, the fence failed (BMC timeout) and then the store went unreachable: the own lease
    is still valid (H4) but the silent peer may hold the VIP. on_failure = close closes here as under H1."""
    failed = FenceResult(FenceOutcome.FAILED, NOW - 0.1, "BMC timeout")
    prev = holding(lease_valid_until=NOW + 2.0, fence_requested=(("b", NOW - 2.1),))
    silent = peer(alive=False, heard_at=NOW - 5.0, state=M, fence=failed)
    d = run(ev(state=M, lease=UNKNOWN, peers=(silent,)), prev=prev)
    assert (d.gate, d.rule) == (Gate.CLOSED, "F1")


def test_h4_still_keeps_the_vip_without_a_failed_fence() -> None:
    prev = holding(lease_valid_until=NOW + 2.0)
    d = run(ev(state=M, lease=UNKNOWN, peers=(peer(state=B),)), prev=prev)
    assert (d.gate, d.rule) == (Gate.OPEN, "H4")


def test_two_nodes_stuck_master_unfenceable_then_store_cut_ends_the_dual_master() -> None:
    """TestTwoNodes' find: a's agent stuck with its gate open, its adverts to b cut, the store read-only; b took
    the VIP at master-down beside a (H3). The store came back empty: b took the lease (H1) and fenced a, whose BMC
    is broken; then b lost the store (H4) and kept the VIP on its own lease while the fence failed: 5.6 s of dual
    master cut off (the bound is TTL + power timeout). F1 now closes b's gate when the fence fails."""
    world = World(["a", "b"])
    world.run(7)
    world.vrrp_cut.add(("a", "b"))
    world.nodes["a"].paused = True
    world.store.readonly = True
    world.run(58)
    world.bmc_broken.add("a")
    world.restart_store_empty(0.0)
    world.run(6)
    world.redis_cut.add("b")
    rules = []
    for _ in range(12):
        world.step()  # raised "rule 1: ['a', 'b'] dual master for 5.6s while cut off" before the fix
        rules.append(world.nodes["b"].last_rule)
    assert "F1" in rules and [n.name for n in world.holders()] == ["a"]


# --- a fence in flight when the fencer's agent restarts --------------------------------------------------------


def test_a_restarted_agent_may_fence_again_what_its_predecessor_was_fencing() -> None:
    """TestTwoNodes' find: b fenced the silent a (broken BMC: the fence times out after 2 s), then b's agent
    restarted. The new agent knows nothing of the old process's fence and asks again; the sim counted that as one
    agent fencing twice at once. A sim fix: fence ops belong to the agent process that sent them."""
    world = World(["a", "b"])
    world.nodes["a"].paused = True
    world.run(23)
    world.bmc_broken.add("a")
    world.run(3)
    world.restart_agent("b")
    world.run(5)  # raised "b fences a twice at once" before the fix
    fences = [line for line in world.log if "b fences a" in line]
    assert len(fences) >= 2


# --- the listener's start of listening -------------------------------------------------------------------------


def test_cold_start_behind_a_one_way_vrrp_cut_is_no_flash_with_the_listening_start() -> None:
    """TestNoAdvertSinceStart's find (xfailed until now): VRRP cut a→b from the cold start, so b never sees an
    advert of a. The listener reports when it started listening, and V1/L3 count from then (issue 12 item 3);
    the sim reported no start, so they stayed blind and b took the VIP at master-down while hearing a hold it. A sim
    fix: PeerView.listening_since is the agent's start, as the raw socket opens with it."""
    world = World(["a", "b"], edges=Edges(no_advert_default=True))
    world.vrrp_cut.add(("a", "b"))
    rules = set()
    for _ in range(42):
        world.step()  # raised "VIP flash: b took the VIP while hearing a hold it" before the fix
        rules.add(world.nodes["b"].last_rule)
    assert [n.name for n in world.holders()] == ["a"] and "L3" in rules  # closed before master-down


def test_the_fencer_agent_restarting_mid_fence_gets_its_own_bound() -> None:
    """TestTwoNodes' find (the F1 schedule above with b's agent restarted instead of cut from the store): the
    restarted b has no memory of the fence in flight (broken BMC, 2 s timeout), waits deadtime in S0 and fences
    again; the dual master then outlasted a bound counted from before the restart. A sim fix: the bound counts
    from the fencer agent's start, as a restarted agent cannot know its predecessor's fence."""
    world = World(["a", "b"])
    world.run(7)
    world.vrrp_cut.add(("a", "b"))
    world.nodes["a"].paused = True
    world.store.readonly = True
    world.run(58)
    world.bmc_broken.add("a")
    world.restart_store_empty(0.0)
    world.run(6)
    world.restart_agent("b")
    world.run(12)  # raised "rule 1: ['a', 'b'] dual master for 5.6s while cut off" before the fix
    assert len([line for line in world.log if "b fences a" in line]) == 2


@pytest.mark.xfail(raises=Violation, strict=True, reason="open: D3 on the returning node against D1 on the holder")
def test_preempting_a_holder_whose_lease_the_store_cannot_show() -> None:
    """Open (TestTwoNodes, 10:09 UTC; also on main): a's agent stuck from boot, b took the VIP and the lease; a's
    agent resumes as the store stops. P1 waits only for a lease it can read, so a opens (B2) and keepalived there
    preempts b at once; a keeps it by D3 (b's frame names no lease holder: b reads UNKNOWN), b by D1 on its own
    still-valid lease. Either b's frames should name the lease it still counts valid (then D2 on a), or D3 should
    yield to a peer's valid lease; the sim's instant preemption on a lower-priority advert may also be harsher
    than keepalived (which waits master-down)."""
    world = World(["a", "b"])
    world.vrrp_cut.add(("a", "b"))
    world.nodes["a"].paused = True
    world.run(26)
    world.nodes["a"].paused = False
    world.store.readonly = True
    world.store.alive = False
    world.run(2)


def test_a_vip_taken_while_both_agents_were_paused_is_judged_from_their_first_decision() -> None:
    """Found (TestRestarts, random run, 12:40 UTC): both agents paused (maintenance: gates held open), VRRP cut
    a → b; a became master; the agents resumed and in that very tick keepalived on b, deaf to a for its master-down
    interval, took the VIP too. The world counted that as a policy failure before either agent had decided
    anything. Now it is keepalived alone's, and the agents must end it within their first decision: b's gate
    closes (L1, a holds the lease) and keepalived drops the VIP the tick after."""
    world = World(["a", "b"], edges=Edges(late_answers=True, prio0=True))
    world.run(11)
    world.vrrp_cut.add(("a", "b"))
    world.nodes["a"].paused = world.nodes["b"].paused = True
    world.run(10)
    assert world.holders() == [world.nodes["a"]]
    world.heal()
    world.vrrp_cut |= {("a", "b"), ("b", "a")}
    world.hb_cut |= {("a", "b"), ("b", "a")}
    world.run(1)  # raised "rule 1: a and b both hold the VIP with shared evidence" before
    assert {n.name for n in world.holders()} == {"a", "b"}, "the case did not happen: keepalived on b took nothing"
    world.run(1)
    assert [n.name for n in world.holders()] == ["a"]
    assert world.nodes["b"].gate is Gate.CLOSED


def test_a_lower_priority_master_heard_only_on_vrrp_is_not_preempted() -> None:
    """Found (TestLateAnswers, random run, 12:55 UTC): every link cut and the store down, then healed but for
    VRRP a → b and heartbeats b → a. b, deaf to a's adverts, became master and took the lease; a, deaf to b's
    heartbeats, saw b only in its adverts (priority 100 below its 150), its lease answer still said free
    (late), and keepalived on a preempted b: both held the VIP with the lease store shared. Now a waits, gate
    closed (P4), while the lower-priority master it cannot talk to keeps advertising.

    Since issue 13, b no longer reopens during that store outage (B4 keeps it closed while the silent a last
    claimed the VIP), so the found schedule is still run for the world's invariants, and b becomes master first
    here by a keepalived crash on a instead."""
    found = World(["a", "b"], edges=Edges(late_answers=True))
    found.run(25)
    found.vrrp_cut |= {("a", "b"), ("b", "a")}
    found.hb_cut |= {("a", "b"), ("b", "a")}
    found.store.alive = False
    found.run(10)
    assert found.nodes["b"].last_rule == "B4"
    found.heal()
    found.vrrp_cut.add(("a", "b"))
    found.hb_cut.add(("b", "a"))
    found.run(30)  # raised "rule 1: a and b both hold the VIP with shared evidence" at t = 9.0 before
    assert len(found.holders()) == 1

    world = World(["a", "b"], edges=Edges(late_answers=True))
    world.run(25)
    assert world.holders() == [world.nodes["a"]]
    world.vrrp_cut.add(("a", "b"))
    world.hb_cut.add(("b", "a"))
    world.nodes["a"].ka_crashed = True  # a loses the VIP; b, deaf to its adverts, takes it at master-down
    world.run(20)
    world.nodes["a"].ka_crashed = False
    world.run(10)
    assert world.holders() == [world.nodes["b"]], "the case did not happen: b never took the VIP"
    assert world.nodes["a"].last_rule == "P4" and world.nodes["a"].gate is Gate.CLOSED
    # Heartbeats back: a waits for b's yield (P1); the handover itself runs on the rules in the frames, which
    # this world does not carry (it is modelled with keepalived's timers in test_policy_preempt.py).
    world.heal()
    world.run(5)
    assert world.holders() == [world.nodes["b"]] and world.nodes["a"].last_rule == "P1"


# --- the mutation check's baseline (RestartCluster, 600 derandomized examples): three holes -------------------

HARSH = Edges(late_answers=True, prio0=True)


def test_b3_does_not_fence_a_master_whose_adverts_this_backup_hears() -> None:
    """B3 fences a peer silent on the heartbeats whose last frame claimed the VIP, so that the fence lands before
    keepalived's master-down here. While the peer's adverts arrive, keepalived here stays BACKUP: there is no
    master-down to beat, and the peer is a working master whose heartbeats are cut, not a stuck one."""
    heard = peer(alive=False, heard_at=NOW - 5, state=M, vip_present=True, adverts_at=NOW - 0.2)
    d = run(ev(lease=mine(token=12), peers=(heard,)))
    assert not any(isinstance(a, Fence) for a in d.actions)
    assert d.rule != "B3"
    gone = replace(heard, adverts_at=NOW - CFG.cut_after)  # adverts stopped 1.5 adverts ago: master-down nears
    d = run(ev(lease=mine(token=12), peers=(gone,)))
    assert (
        d.rule == "B3"
        and Fence("b", 12, "silent on every heartbeat medium; its last word claimed the VIP") in d.actions
    )


def test_restarts_heartbeats_cut_b_does_not_fence_the_master_it_hears_on_a_stale_lease() -> None:
    """The baseline's first find (shrunk): heartbeats cut both ways, the store read-only then restarted empty twice.
    b, BACKUP, hearing a's adverts, acquired the lease (B3: a silent on the heartbeats, last seen MASTER) the tick
    the store came back; the store restarted again, a (master again by preemption) took the lease, and b fenced a
    on its one-tick-old answer: "b fences a, which holds a valid lease". A policy fix: B3 waits for the adverts
    to stop too (a master heard on VRRP keeps keepalived here BACKUP)."""
    world = World(["a", "b"], edges=HARSH)
    world.run(32)
    world.hb_cut |= {("a", "b"), ("b", "a")}
    world.store.readonly = True
    world.restart_store_empty(0.0)
    world.store.readonly = True
    world.run(33)
    world.restart_store_empty(0.0)
    world.run(1)
    world.restart_store_empty(0.0)
    world.run(1)  # raised "b fences a, which holds a valid lease" before the fix
    world.run(20)
    # Since P4 a no longer preempts the lower-priority master it hears only on VRRP: it waits, gate closed, and b
    # may fence it later as what it is then, silent on every heartbeat medium and holding no VIP (B3).
    fences = [float(line.split()[0]) for line in world.log if "b fences a" in line]
    assert all(world.nodes["a"].last_vip_at < t for t in fences), (fences, world.nodes["a"].last_vip_at)


def _store_back_while_b_is_deaf_to_a() -> World:
    """The baseline's second find: a master (H3) on a read-only store; b hears neither its heartbeats nor its
    adverts; the store restarts empty and writable just before keepalived on b reaches master-down."""
    world = World(["a", "b"], edges=HARSH)
    world.run(2)
    world.hb_cut.add(("a", "b"))
    world.store.readonly = True
    world.vrrp_cut.add(("a", "b"))
    world.run(19)
    world.restart_store_empty(0.0)
    return world


def test_restarts_a_store_writable_again_is_no_shared_evidence_in_its_first_tick() -> None:
    """The baseline's second find (shrunk): a master on a read-only store (H3, never granted); b hears neither its
    heartbeats nor its adverts, and keepalived on b takes the VIP at master-down in the very tick the store restarts
    empty and writable. The lease cannot tell them apart in that tick: nobody holds it, and the acquisitions sent in
    it are answered in the next. A judge fix: a store just usable again is shared evidence from its second tick;
    b's agent closes (L1) on that answer, and keepalived drops the VIP at once."""
    world = _store_back_while_b_is_deaf_to_a()
    world.run(1)  # raised "rule 1: a and b both hold the VIP with shared evidence" before the fix
    assert {n.name for n in world.holders()} == {"a", "b"}, "the case did not happen: b's keepalived took nothing"
    world.run(1)
    assert [n.name for n in world.holders()] == ["a"]
    assert (world.nodes["b"].last_rule, world.nodes["b"].gate) == ("L1", Gate.CLOSED)


def test_restarts_a_dual_master_a_tick_after_the_store_came_back_is_still_a_violation() -> None:
    """The judge's grace is one tick, not a blind spot: the same world with b's agent deaf to the store's answers
    (its gate forced open, as a policy that ignored the lease would leave it) is caught the tick after."""
    world = _store_back_while_b_is_deaf_to_a()
    world.run(1)
    ignore_lease = world.decide

    def open_on_b(prev: PolicyState, e: Evidence, cfg: PolicyConfig, now: float) -> Decision:
        d = ignore_lease(prev, e, cfg, now)
        return replace(d, gate=Gate.OPEN, state=replace(d.state, gate=Gate.OPEN)) if cfg.node == "b" else d

    world.decide = open_on_b
    with pytest.raises(Violation, match="rule 1: a and b both hold the VIP with shared evidence"):
        world.run(1)


def test_d4_an_acquisition_the_store_answered_free_does_not_extend_an_expired_lease() -> None:
    """Holding, the own lease (valid until NOW − 1) ran out during this hold; the store answers every acquisition
    with "free" (read-only), each one setting lease_maybe_until a TTL ahead. A peer holds the VIP too: the D3 winner
    must step down (rule 2), the refused acquisitions do not count as a lease it may have got."""
    prev = holding(NOW - 10, lease_valid_until=NOW - 1.0, lease_maybe_until=NOW - 0.2 + CFG.ttl)
    d = run(ev(state=M, lease=FREE, peers=(peer(state=M),)), prev=prev)
    assert (d.gate, d.rule) == (Gate.CLOSED, "D4")


def test_restarts_read_only_store_the_d3_winner_steps_down_at_its_lease_expiry() -> None:
    """The baseline's third find (shrunk): a holds the VIP and the lease (until 7.2); the store restarts empty and
    read-only; a's adverts and heartbeats to b are cut. a keeps the VIP by H3, then the failsafe (H5, b's word);
    keepalived on b takes the VIP at master-down (8.0): a wins D3 and, its lease long expired, kept the VIP without
    b's confirmation, because every refused acquisition pushed lease_maybe_until a TTL ahead. A policy fix: D4."""
    world = World(["a", "b"], edges=HARSH)
    world.run(21)
    world.restart_store_empty(0.0)
    world.store.readonly = True
    world.hb_cut.add(("a", "b"))
    world.vrrp_cut.add(("a", "b"))
    rules = []
    for _ in range(20):
        world.step()  # raised "rule 2: a holds the VIP past its lease expiry 7.2 without b's confirmation (rule D3)"
        rules.append(world.nodes["a"].last_rule)
    assert "D4" in rules


def test_p4_waits_for_a_lower_priority_master_it_hears_only_on_vrrp() -> None:
    """P4 from plain data (deadtime 1 s, advert 1 s): b (100) silent on the heartbeats for 3 s but advertising
    now keeps a (150) from preempting it; a dead b (adverts stopped with its heartbeats), one not advertising for
    1.5 adverts, a higher-priority one, or nopreempt do not."""
    advertising = peer(alive=False, heard_at=NOW - 3.0, state=B, adverts_at=NOW - 0.2)
    d = run(ev(lease=theirs(), peers=(advertising,)))
    assert (d.gate, d.rule) == (Gate.CLOSED, "P4")
    for other in (
        replace(advertising, heard_at=NOW - 1.2, adverts_at=NOW - 1.3),  # died: both stopped together
        replace(advertising, adverts_at=NOW - 1.6),  # its adverts stopped too
        replace(advertising, priority=200),  # keepalived here does not preempt a higher priority
    ):
        assert run(ev(lease=FREE, peers=(other,))).rule != "P4", other
    assert run(ev(lease=FREE, peers=(advertising,)), cfg=replace(CFG, nopreempt=True)).rule != "P4"


# --- issue 13, item 7: the witness down, the master isolated ----------------------------------------------------


def test_witness_down_an_isolated_master_is_fenced_and_the_backup_holds_within_the_bound() -> None:
    """Redis stopped, then the master (a) cut off from everything but its BMC. Before: b opened (B2), keepalived
    made it master at master-down, H6 closed at once (a VIP flash every master-down), and nobody fenced a: no
    master until the heal. Now b keeps its gate closed (B4), fences a without a token once a has been silent a
    lease TTL after a last word without the store (rule 3), and on the confirmed OFF holds the VIP (H5)."""
    world = World(["a", "b"], edges=Edges(rules_in_frames=True))
    world.run(25)
    assert world.holders() == [world.nodes["a"]]
    world.store.alive = False
    world.run(int(2 * TTL / TICK))  # a holds on b's word (H4, then H5)
    assert world.holders() == [world.nodes["a"]] and world.nodes["a"].last_rule in ("H4", "H5")
    cut_at = world.now
    world.vrrp_cut |= {("a", "b"), ("b", "a")}
    world.hb_cut |= {("a", "b"), ("b", "a")}
    world.reference_lost.add("a")
    b = world.nodes["b"]
    took_at, flashes, was_holding = None, 0, False
    for _ in range(int(20 / TICK)):
        world.run(1)
        holding = b in world.holders()
        if holding and not was_holding:
            flashes += 1
            took_at = took_at if took_at is not None else world.now
        was_holding = holding
    assert not world.nodes["a"].powered, "b never fenced a"
    assert world.holders() == [b] and b.last_rule == "H5"
    assert flashes == 1
    # deadtime + TTL (rule 3) + race delay + fence + master-down; each of the three waits ends on a tick.
    bound = DEADTIME + TTL + b.fence_delay + FENCE_TIME + master_down(b.prio) + 3 * TICK
    assert took_at is not None and took_at - cut_at <= bound, (took_at - cut_at, bound)
    print(f"witness down, master isolated: b holds {took_at - cut_at:.1f} s after the cut (bound {bound:.1f} s)")
