"""The preemption handover (issue 12 item 2): a returning higher-priority node takes the VIP in one move.

Two kinds of tests, both from plain data:
- single decisions of both nodes, step by step through the handover (P waits in P1, H yields in Y1, P opens in
  P2, keepalived on P preempts, P3 takes the lease, H steps down), and the edges around it;
- a small timed model of two or three nodes (keepalived's VRRP timers as keepalived 2.2 runs them: FAULT while the
  gate is closed, master-down after leaving FAULT, a preempting backup ignores a lower-priority master's adverts,
  preempt_delay, the priority-0 advert of a master going FAULT; heartbeats one tick late carrying the rule and the
  gate; a lease store whose answers come one tick late and which non-holders read every half second), run with
  the arbiter and with keepalived alone, counting VIP moves, time without master and dual-master time.

Before the handover existed, the heal sequence below moved the VIP b → a → b → a … (L1 vetoes a's preemption, a's
FAULT hands the VIP back after b's skew time).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from arbiter import config as config_mod
from arbiter.evidence.heartbeat.frame import InstanceReport
from arbiter.model import (
    AcquireLease,
    Decision,
    Evidence,
    Fence,
    Gate,
    LeaseStatus,
    LeaseView,
    PeerView,
    PolicyConfig,
    PolicyState,
    ReleaseLease,
    VrrpState,
)
from arbiter.policy import decide, handover_bound
from tests.unit.test_heartbeat_media import FakeClock, frame, tracker

M, B, F = VrrpState.MASTER, VrrpState.BACKUP, VrrpState.FAULT
NOW = 100.0


def config(node: str, peers: tuple[str, ...], prio: int, **kw: object) -> PolicyConfig:
    base: dict[str, object] = {
        "node": node,
        "peers": peers,
        "fenceable": frozenset(peers),
        "ttl": 3.0,
        "safety": 0.5,
        "cycle": 0.05,
        "advert_int": 1.0,
        "master_down": 3.0 + (256 - prio) / 256,
        "nopreempt": False,
        "fence_delay": 0.0,
        "power_timeout": 2.0,
        "hold_down": 60.0,
        "on_fence_failure": "close",
        "deadtime": 0.5,
    }
    base.update(kw)
    return PolicyConfig(**base)  # type: ignore[arg-type]


P_CFG = config("a", ("b",), 150)
H_CFG = config("b", ("a",), 100)
STARTED = PolicyState(started=True, gate=Gate.OPEN, rule="B2")


def holding(since: float = NOW - 30, **kw: object) -> PolicyState:
    return replace(STARTED, was_holding=True, holding_since=since, rule="H1", **kw)  # type: ignore[arg-type]


def view(name: str, state: VrrpState, prio: int, rule: str | None, **kw: object) -> PeerView:
    base: dict[str, object] = {
        "name": name,
        "alive": True,
        "heard_at": NOW,
        "state": state,
        "vip_present": state is M,
        "priority": prio,
        "quorate": True,
        "rule": rule,
        "gate_open": rule not in ("P1", "S0", "Q1", "Y2"),
    }
    base.update(kw)
    return PeerView(**base)  # type: ignore[arg-type]


def evidence(
    state: VrrpState, prio: int, lease: LeaseView, peers: tuple[PeerView, ...], quorate: bool = True
) -> Evidence:
    return Evidence("VI_1", state, state is M, prio, quorate, lease, peers)


def lease_of(holder: str, me: str, token: int = 7, left: float = 2.5) -> LeaseView:
    status = LeaseStatus.MINE if holder == me else LeaseStatus.PEER
    return LeaseView(status, holder, token, NOW + left)


FREE = LeaseView(LeaseStatus.FREE)
UNKNOWN = LeaseView(LeaseStatus.UNKNOWN)


# --- the handover, decision by decision -------------------------------------------------------------------


def test_handover_step_by_step_one_holder_change() -> None:
    """P = a (150) returns, H = b (100) holds with the lease. Every decision of both, in order."""
    p_state, h_state = STARTED, holding()
    now = NOW

    # 1. P, back (gate was closed), sees b hold the VIP with the lease: waits, gate closed.
    p = decide(p_state, evidence(F, 150, lease_of("b", "a"), (view("b", M, 100, "H1", lease_holder="b"),)), P_CFG, now)
    assert (p.gate, p.rule) == (Gate.CLOSED, "P1")
    # 2. H hears P wait: releases the lease, keeps the VIP (gate open).
    h = decide(h_state, evidence(M, 100, lease_of("b", "b"), (view("a", F, 150, p.rule),)), H_CFG, now)
    assert (h.gate, h.rule) == (Gate.OPEN, "Y1")
    assert ReleaseLease() in h.actions and not any(isinstance(x, AcquireLease) for x in h.actions)
    # 3. H's release answered (lease free); H keeps yielding, acquiring nothing.
    now += 0.1
    h = decide(h.state, evidence(M, 100, FREE, (view("a", F, 150, p.rule, heard_at=now),)), H_CFG, now)
    assert (h.gate, h.rule, h.actions) == (Gate.OPEN, "Y1", ())
    # 4. P hears H yield (its own lease read still says b's: a late answer): opens; keepalived leaves FAULT.
    p = decide(p.state, evidence(F, 150, lease_of("b", "a"), (view("b", M, 100, h.rule, heard_at=now),)), P_CFG, now)
    assert (p.gate, p.rule) == (Gate.OPEN, "P2")
    # 5. keepalived on P is BACKUP (its frame says so at once): H, its lease released, steps down first (Y3)
    #    instead of waiting for P's preemption, which would hold the VIP on both until P's advert reaches H.
    now += 0.01
    h = decide(h.state, evidence(M, 100, FREE, (view("a", B, 150, p.rule, heard_at=now),)), H_CFG, now)
    assert (h.gate, h.rule) == (Gate.CLOSED, "Y3")
    assert not any(isinstance(x, AcquireLease | Fence) for x in h.actions)
    # 6. P keeps its gate open while H still holds (its frame says Y3: still yielding), and once H is FAULT.
    p = decide(p.state, evidence(B, 150, FREE, (view("b", M, 100, h.rule, heard_at=now),)), P_CFG, now)
    assert (p.gate, p.rule) == (Gate.OPEN, "P2")
    now += 0.01
    h = decide(h.state, evidence(F, 100, FREE, (view("a", B, 150, p.rule, heard_at=now),)), H_CFG, now)
    assert (h.gate, h.rule) == (Gate.OPEN, "B2")  # BACKUP again at once: it takes the VIP back if P never does
    fault = (view("b", F, 100, h.rule, heard_at=now, gate_open=True),)
    p = decide(p.state, evidence(B, 150, FREE, fault), P_CFG, now)
    assert p.gate is Gate.OPEN
    # 7. H's priority-0 advert: keepalived on P takes the VIP after its skew time; P acquires the lease.
    now += (256 - 150) / 256
    p = decide(p.state, evidence(M, 150, FREE, (view("b", B, 100, h.rule, heard_at=now),)), P_CFG, now)
    assert (p.gate, p.rule) == (Gate.OPEN, "H3")
    assert any(isinstance(x, AcquireLease) for x in p.actions)
    h = decide(h.state, evidence(B, 100, FREE, (view("a", M, 150, p.rule, heard_at=now),)), H_CFG, now)
    assert (h.gate, h.rule) == (Gate.OPEN, "B2")
    now += 0.1
    got = lease_of("a", "a", token=8, left=now - NOW + 3.0)
    p = decide(p.state, evidence(M, 150, got, (view("b", B, 100, h.rule, heard_at=now),)), P_CFG, now)
    assert (p.gate, p.rule) == (Gate.OPEN, "H1")


def test_holder_steps_down_only_after_preempt_delay_and_the_release() -> None:
    """Y3 waits for the lease to be released (P would take a VIP whose lease H still holds: L1) and for
    keepalived's preempt_delay on P, counted from when P was first seen ready (stepping down sends priority 0,
    which makes keepalived on P take the VIP after its skew time, whatever its preempt_delay)."""
    cfg = config("b", ("a",), 100, preempt_delay=2.0)
    ready = (view("a", B, 150, "P2"),)
    d = decide(holding(), evidence(M, 100, lease_of("b", "b"), ready), cfg, NOW)
    assert (d.gate, d.rule) == (Gate.OPEN, "Y1") and ReleaseLease() in d.actions
    d = decide(d.state, evidence(M, 100, FREE, ready), cfg, NOW + 1.9)
    assert (d.gate, d.rule) == (Gate.OPEN, "Y1")
    d = decide(d.state, evidence(M, 100, FREE, ready), cfg, NOW + 2.0)
    assert (d.gate, d.rule) == (Gate.CLOSED, "Y3")
    # Without preempt_delay, a lease still shown as this node's keeps the VIP (the release's answer is due).
    mine = decide(holding(), evidence(M, 100, lease_of("b", "b"), ready), H_CFG, NOW)
    assert (mine.gate, mine.rule) == (Gate.OPEN, "Y1")


def test_holder_does_not_step_down_for_a_peer_still_in_fault() -> None:
    """P2 said, but keepalived there has not left FAULT yet (or its gate is not open): stepping down now would
    leave the VIP to nobody until keepalived on P leaves FAULT and waits its master-down interval."""
    for peer in (view("a", F, 150, "P2"), view("a", B, 150, "P2", gate_open=False), view("a", B, 150, "P1")):
        d = decide(holding(), evidence(M, 100, FREE, (peer,)), H_CFG, NOW)
        assert (d.gate, d.rule) == (Gate.OPEN, "Y1"), peer


def test_p3_a_late_lease_answer_does_not_veto_the_new_holder() -> None:
    # P holds (keepalived preempted); its lease view still says b's (the release's answer not read yet).
    peers = (view("b", M, 100, "Y1", lease_holder="b"),)
    d = decide(replace(STARTED, rule="P2"), evidence(M, 150, lease_of("b", "a"), peers), P_CFG, NOW)
    assert (d.gate, d.rule) == (Gate.OPEN, "P3")
    assert any(isinstance(x, AcquireLease) for x in d.actions)


def test_holder_that_does_not_step_down_after_one_advert_closes_its_gate() -> None:
    state = holding(yield_to="a", yield_since=NOW - 4, yielded_at=NOW - 0.1)
    e = evidence(M, 100, FREE, (view("a", M, 150, "P3"),))
    first = decide(state, e, H_CFG, NOW)
    assert (first.gate, first.rule) == (Gate.OPEN, "Y1")
    later = decide(first.state, e, H_CFG, NOW + 1.0)
    assert (later.gate, later.rule) == (Gate.CLOSED, "Y2")
    assert not any(isinstance(x, AcquireLease | Fence) for x in later.actions)


# --- who waits, who yields --------------------------------------------------------------------------------


def test_nopreempt_never_waits() -> None:
    cfg = replace(P_CFG, nopreempt=True)
    d = decide(STARTED, evidence(F, 150, lease_of("b", "a"), (view("b", M, 100, "H1", lease_holder="b"),)), cfg, NOW)
    assert (d.gate, d.rule) == (Gate.OPEN, "B2")


def test_a_lower_or_equal_priority_node_never_waits() -> None:
    for prio in (100, 80):
        d = decide(STARTED, evidence(F, prio, lease_of("b", "a"), (view("b", M, 100, "H1"),)), P_CFG, NOW)
        assert (d.gate, d.rule) == (Gate.OPEN, "B2"), prio


def test_a_node_that_lost_its_reference_does_not_wait_and_is_not_yielded_to() -> None:
    # P's quorum lost while b still reaches the reference: Q1, not P1 (no handover).
    d = decide(STARTED, evidence(F, 150, lease_of("b", "a"), (view("b", M, 100, "H1"),), quorate=False), P_CFG, NOW)
    assert d.rule == "Q1"
    # A P1 frame from a node of worse quorum (the holder reaches the reference, it does not): no yield.
    h = decide(holding(), evidence(M, 100, lease_of("b", "b"), (view("a", F, 150, "P1", quorate=False),)), H_CFG, NOW)
    assert h.rule == "H1"


def test_lease_store_unreachable_no_lease_to_hand_over() -> None:
    """Documented choice: no P1 without a lease answer; P opens and keepalived preempts as alone; D3 (priority)
    keeps P's gate open while both hold, and H's keepalived steps down on P's advert."""
    d = decide(STARTED, evidence(F, 150, UNKNOWN, (view("b", M, 100, "H5"),)), P_CFG, NOW)
    assert (d.gate, d.rule) == (Gate.OPEN, "B2")
    both = decide(replace(STARTED, rule="B2"), evidence(M, 150, UNKNOWN, (view("b", M, 100, "H5"),)), P_CFG, NOW)
    assert (both.gate, both.rule) == (Gate.OPEN, "D3")


def test_no_yield_while_another_peer_is_silent() -> None:
    """Rule 2: a holder releases its lease only while every peer's word covers the hold (as the H5 failsafe)."""
    cfg = config("b", ("a", "c"), 100)
    peers = (view("a", F, 150, "P1"), view("c", B, 50, "B2", alive=False, heard_at=NOW - 2))
    d = decide(holding(), evidence(M, 100, lease_of("b", "b"), peers), cfg, NOW)
    assert d.rule == "H1"
    assert ReleaseLease() not in d.actions


def test_three_nodes_only_the_first_ranked_waiting_node_opens() -> None:
    cfg_b = config("b", ("a", "c"), 100)
    holder = view("c", M, 50, "Y1")
    d = decide(STARTED, evidence(F, 100, FREE, (view("a", F, 150, "P1"), holder)), cfg_b, NOW)
    assert (d.gate, d.rule) == (Gate.CLOSED, "P1")
    assert "a takes it over first" in d.reason
    cfg_a = config("a", ("b", "c"), 150)
    d = decide(STARTED, evidence(F, 150, FREE, (view("b", F, 100, "P1"), holder)), cfg_a, NOW)
    assert (d.gate, d.rule) == (Gate.OPEN, "P2")
    # The holder yields to the first-ranked waiting node.
    cfg_c = config("c", ("a", "b"), 50)
    peers = (view("a", F, 150, "P1"), view("b", F, 100, "P1"))
    h = decide(holding(), evidence(M, 50, lease_of("c", "c"), peers), cfg_c, NOW)
    assert (h.rule, h.state.yield_to) == ("Y1", "a")


def test_yield_is_bounded_then_the_holder_takes_its_lease_back_once() -> None:
    """P never takes the VIP (its gate open but keepalived there stays in FAULT, say another track_file of the
    operator's): H never steps down for it (Y3 needs keepalived BACKUP there), and after deadtime + 2 adverts +
    preempt_delay + master-down the holder re-acquires (H3 window from the end of the yield) and does not yield
    again to the same wait."""
    cfg = replace(H_CFG, preempt_delay=2.0)
    bound = handover_bound(cfg)
    assert bound == pytest.approx(0.5 + 2.0 + 3.0 + 156 / 256 + 2 * 1.0)
    state, now = holding(), NOW
    d = decide(state, evidence(M, 100, lease_of("b", "b"), (view("a", F, 150, "P1", heard_at=now),)), cfg, now)
    assert d.rule == "Y1"
    rules = []
    while now < NOW + bound + 2:
        now = round(now + 0.1, 6)
        d = decide(d.state, evidence(M, 100, FREE, (view("a", F, 150, "P2", heard_at=now),)), cfg, now)
        rules.append(d.rule)
        assert d.gate is Gate.OPEN
    assert rules[0] == "Y1" and rules[-1] == "H3"
    assert rules.index("H3") == pytest.approx(bound / 0.1, abs=2)
    assert "Y1" not in rules[rules.index("H3") :]  # spent: not repeated while a keeps waiting
    assert any(isinstance(x, AcquireLease) for x in d.actions)
    # a stops waiting (its agent restarted: S0), then waits again: a new yield.
    d = decide(d.state, evidence(M, 100, FREE, (view("a", F, 150, "S0", heard_at=now),)), cfg, now + 0.1)
    d = decide(d.state, evidence(M, 100, FREE, (view("a", F, 150, "P1", heard_at=now),)), cfg, now + 0.2)
    assert d.rule == "Y1"


# --- the timed model ------------------------------------------------------------------------------------------

TICK = 0.05
RENEW = 0.5  # non-holders read the lease this often (the agent's lease.renew_ms)


@dataclass(frozen=True)
class Frame:
    """What a heartbeat frame carries for the instance."""

    state: VrrpState
    vip: bool
    prio: int
    quorate: bool
    lease_holder: str | None
    gate_open: bool
    rule: str | None


@dataclass
class Node:
    name: str
    prio: int
    cfg: PolicyConfig
    ka_nopreempt: bool
    ka_preempt_delay: float
    advert: float
    reference: bool = True
    gate: Gate = Gate.CLOSED
    kstate: VrrpState = VrrpState.FAULT
    down_at: float = 0.0
    preempt_at: float | None = None
    next_advert: float = 0.0
    policy: PolicyState = field(default_factory=PolicyState)
    boot_at: float = 0.0
    lease: LeaseView = field(default_factory=lambda: LeaseView(LeaseStatus.PENDING))
    lease_read_at: float = -1e9
    heard: dict[str, tuple[float, Frame]] = field(default_factory=dict)
    last: Decision | None = None
    rules: list[str] = field(default_factory=list)

    @property
    def vip(self) -> bool:
        return self.kstate is VrrpState.MASTER

    @property
    def master_down(self) -> float:
        return 3 * self.advert + (256 - self.prio) * self.advert / 256

    @property
    def skew(self) -> float:
        return (256 - self.prio) * self.advert / 256


class Model:
    def __init__(
        self,
        prios: dict[str, int],
        *,
        arbiter: bool = True,
        advert: float = 1.0,
        preempt_delay: float = 0.0,
        ka_nopreempt: bool = False,
        nopreempt: bool = False,
    ) -> None:
        self.arbiter = arbiter
        self.now = 0.0
        self.store_up = True
        self.holder: str | None = None
        self.expires = 0.0
        self.token = 0
        self.pending: list[tuple[float, str, str]] = []  # (due, node, "acquire"/"release")
        self.adverts: list[tuple[str, int]] = []  # sent during the previous tick: (sender, priority)
        self.nodes: dict[str, Node] = {}
        for name, prio in prios.items():
            cfg = config(
                name,
                tuple(n for n in prios if n != name),
                prio,
                advert_int=advert,
                master_down=3 * advert + (256 - prio) * advert / 256,
                preempt_delay=preempt_delay,
                nopreempt=nopreempt,
            )
            self.nodes[name] = Node(name, prio, cfg, ka_nopreempt or nopreempt, preempt_delay, advert)
        self.timeline: list[tuple[float, frozenset[str]]] = []  # holders at the end of each tick
        self.flashes: list[tuple[float, frozenset[str]]] = []  # holders before the agents decided
        self.fences: list[Fence] = []

    # keepalived 2.2 (vrrp.c): FAULT while the gate is closed; a master going FAULT sends priority 0.
    def _keepalived(self, n: Node, heard: list[tuple[str, int]]) -> None:
        closed = self.arbiter and n.gate is Gate.CLOSED
        if closed:
            if n.vip:
                self.adverts.append((n.name, 0))
            n.kstate = VrrpState.FAULT
            return
        if n.kstate is VrrpState.FAULT:
            n.kstate, n.down_at = VrrpState.BACKUP, self.now + n.master_down
        for sender, prio in heard:  # in the order sent
            if n.kstate is VrrpState.MASTER:
                if (prio, sender) > (n.prio, n.name):
                    n.kstate, n.down_at = VrrpState.BACKUP, self.now + n.master_down
            elif prio == 0:
                n.down_at = self.now + n.skew
            elif n.ka_nopreempt or prio >= n.prio or (n.ka_preempt_delay and not self._preempt_due(n, prio)):
                n.down_at = self.now + n.master_down
            # else: a lower-priority master and preemption due: the advert is ignored (master-down runs on)
        if n.kstate is VrrpState.MASTER:
            if self.now >= n.next_advert:
                self.adverts.append((n.name, n.prio))
                n.next_advert = self.now + n.advert
        elif self.now >= n.down_at - 1e-9:
            n.kstate, n.next_advert = VrrpState.MASTER, self.now + n.advert
            self.adverts.append((n.name, n.prio))  # sent before the VIP is added

    def _preempt_due(self, n: Node, prio: int) -> bool:
        if prio >= n.prio:
            n.preempt_at = None
        elif n.preempt_at is None:
            n.preempt_at = self.now + n.ka_preempt_delay
        return n.preempt_at is not None and self.now >= n.preempt_at

    def _store_view(self, n: Node) -> LeaseView:
        if not self.store_up:
            return LeaseView(LeaseStatus.UNKNOWN)
        if self.holder is not None and self.expires <= self.now:
            self.holder = None
        if self.holder is None:
            return LeaseView(LeaseStatus.FREE)
        status = LeaseStatus.MINE if self.holder == n.name else LeaseStatus.PEER
        return LeaseView(status, self.holder, self.token, self.expires)

    def _lease_edge(self, n: Node) -> None:
        for due, name, what in [p for p in self.pending if p[1] == n.name and p[0] <= self.now]:
            self.pending.remove((due, name, what))
            if self.store_up and what == "acquire" and self.holder is None:
                self.token += 1
                self.holder, self.expires = n.name, self.now + n.cfg.ttl
            elif self.store_up and what == "release" and self.holder == n.name:
                self.holder = None
            n.lease = self._store_view(n)  # the answer
        if self.store_up and self.holder == n.name and self.now - n.lease_read_at >= RENEW / 2:
            self.expires, n.lease_read_at = self.now + n.cfg.ttl, self.now  # renewal
            n.lease = self._store_view(n)
        elif self.now - n.lease_read_at >= RENEW:
            n.lease, n.lease_read_at = self._store_view(n), self.now

    def _peer_view(self, n: Node, peer: Node) -> PeerView:
        heard = n.heard.get(peer.name)
        if heard is None:
            return PeerView(peer.name, None if self.now - n.boot_at < n.cfg.deadtime else False)
        at, frame = heard
        return PeerView(
            peer.name,
            self.now - at <= n.cfg.deadtime,
            heard_at=at,
            state=frame.state,
            vip_present=frame.vip,
            priority=frame.prio,
            quorate=frame.quorate,
            lease_holder=frame.lease_holder,
            gate_open=frame.gate_open,
            rule=frame.rule,
        )

    def restart_agent(self, name: str) -> None:
        n = self.nodes[name]
        n.policy, n.heard, n.boot_at, n.last = PolicyState(), {}, self.now, None
        n.lease, n.lease_read_at = LeaseView(LeaseStatus.PENDING), -1e9

    def step(self) -> None:
        self.now = round(self.now + TICK, 6)
        heard, self.adverts = self.adverts, []
        for n in self.nodes.values():
            self._keepalived(n, [a for a in heard if a[0] != n.name])
        # A VIP keepalived adds and the agent's gate removes in the same tick is a move too (a flash).
        self.flashes.append((self.now, frozenset(n.name for n in self.nodes.values() if n.vip)))
        if self.arbiter:
            frames = {
                n.name: Frame(
                    n.kstate,
                    n.vip,
                    n.prio,
                    n.reference,
                    n.lease.holder,
                    n.gate is Gate.OPEN,
                    n.last.rule if n.last else None,
                )
                for n in self.nodes.values()
            }
            for n in self.nodes.values():
                self._lease_edge(n)
                for other in self.nodes.values():
                    if other is not n:
                        n.heard[other.name] = (self.now - TICK, frames[other.name])
            for n in self.nodes.values():
                ev = Evidence(
                    "VI_1",
                    n.kstate,
                    n.vip,
                    n.prio,
                    n.reference,
                    n.lease,
                    tuple(self._peer_view(n, p) for p in self.nodes.values() if p is not n),
                )
                d = decide(n.policy, ev, n.cfg, self.now)
                n.policy, n.last, n.gate = d.state, d, d.gate
                if not n.rules or n.rules[-1] != d.rule:
                    n.rules.append(d.rule)
                for action in d.actions:
                    if isinstance(action, AcquireLease):
                        self.pending.append((self.now + TICK, n.name, "acquire"))
                    elif isinstance(action, ReleaseLease):
                        self.pending.append((self.now + TICK, n.name, "release"))
                    elif isinstance(action, Fence):
                        self.fences.append(action)
                if n.gate is Gate.CLOSED and n.vip:  # inotify: keepalived drops the VIP at once
                    self.adverts.append((n.name, 0))
                    n.kstate = VrrpState.FAULT
        self.timeline.append((self.now, frozenset(n.name for n in self.nodes.values() if n.vip)))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.step()

    def figures(self, since: float) -> tuple[int, float, float, list[str]]:
        """VIP moves (changes of the single holder), seconds without master and with two, holders in order."""
        moves, no_master, dual, order = 0, 0.0, 0.0, []
        last = next((h for t, h in reversed(self.timeline) if t <= since and len(h) == 1), None)
        seen = sorted([(t, 0, h) for t, h in self.flashes] + [(t, 1, h) for t, h in self.timeline])
        for t, end, holders in seen:
            if t <= since:
                continue
            no_master += TICK if end and not holders else 0.0
            dual += TICK if end and len(holders) > 1 else 0.0
            if len(holders) == 1 and holders != last:
                moves += 1
                order.append(next(iter(holders)))
                last = holders
        return moves, round(no_master, 3), round(dual, 3), order


def heal_preempt(model: Model, lose: tuple[str, ...] = ("a",), store_down: bool = False) -> float:
    """Converge, the listed nodes lose the reference (Q1 closes their gates, the VIP moves), then heal."""
    model.run(8)
    for name in lose:
        model.nodes[name].reference = False
    model.run(8)
    if store_down:
        model.store_up = False
        model.run(1)
    for name in lose:
        model.nodes[name].reference = True
    return model.now


@pytest.mark.parametrize("advert", [1.0, 0.1])
@pytest.mark.parametrize("preempt_delay", [0.0, 2.0])
def test_heal_preempt_moves_once_like_keepalived_alone(advert: float, preempt_delay: float) -> None:
    arb = Model({"a": 150, "b": 100}, advert=advert, preempt_delay=preempt_delay)
    healed = heal_preempt(arb)
    assert arb.timeline[-1][1] == {"b"}, "the VIP moved to b while a lost its reference"
    arb.run(10 * advert + preempt_delay + 6)
    moves, no_master, dual, order = arb.figures(healed)
    assert (moves, order) == (1, ["a"]), arb.nodes["a"].rules
    # b steps down first (Y3): no overlap; the VIP is nobody's for a's skew time (keepalived, priority 0 heard).
    assert dual == 0.0
    assert no_master <= skew(150, advert) + 2 * TICK
    assert arb.fences == []
    a, b = arb.nodes["a"], arb.nodes["b"]
    assert (a.last and a.last.rule, b.last and b.last.rule) == ("H1", "B2")
    assert {"P1", "P2"} <= set(a.rules) and {"Y1", "Y3"} <= set(b.rules)
    # The same return with keepalived alone (the agent never closed a's gate: preemption at start).
    alone = Model({"a": 150, "b": 100}, arbiter=False, advert=advert, preempt_delay=preempt_delay)
    alone.run(3)
    alone.nodes["a"].kstate = VrrpState.FAULT  # a returns: leaves FAULT, b holds
    alone.nodes["b"].kstate = VrrpState.MASTER
    alone.timeline.append((alone.now, frozenset({"b"})))
    alone.flashes.append((alone.now, frozenset({"b"})))
    start = alone.now
    alone.run(10 * advert + preempt_delay + 6)
    a_moves, a_no_master, a_dual, _ = alone.figures(start)
    assert moves <= a_moves == 1
    assert a_dual > 0.0  # keepalived alone: both hold until a's advert reaches b
    assert no_master <= a_no_master + skew(150, advert) + 2 * TICK


def skew(prio: int, advert: float) -> float:
    """keepalived's skew time: (256 − priority)/256 of the advert interval (VRRPv3; of a second at VRRPv2)."""
    return (256 - prio) / 256 * advert


def test_heal_preempt_with_nopreempt_moves_nothing() -> None:
    arb = Model({"a": 150, "b": 100}, nopreempt=True)
    healed = heal_preempt(arb)
    arb.run(15)
    assert arb.figures(healed)[:3] == (0, 0.0, 0.0)
    assert "P1" not in arb.nodes["a"].rules and arb.nodes["a"].gate is Gate.OPEN


def test_heal_preempt_three_nodes_moves_once_to_the_first_ranked() -> None:
    arb = Model({"a": 150, "b": 100, "c": 50})
    healed = heal_preempt(arb, lose=("a", "b"))
    assert arb.timeline[-1][1] == {"c"}
    arb.run(15)
    moves, no_master, dual, order = arb.figures(healed)
    assert (moves, order, dual) == (1, ["a"], 0.0)
    assert no_master <= skew(150, 1.0) + 2 * TICK and arb.fences == []


def test_heal_preempt_with_the_lease_store_down_moves_once_by_keepalived() -> None:
    arb = Model({"a": 150, "b": 100})
    healed = heal_preempt(arb, store_down=True)
    arb.run(15)
    moves, no_master, dual, order = arb.figures(healed)
    assert (moves, order, no_master) == (1, ["a"], 0.0)
    assert dual <= TICK and arb.fences == []


def test_keepalived_nopreempt_against_the_agent_config_still_hands_over_once_without_overlap() -> None:
    """a's keepalived has nopreempt against a's agent config (`check-keepalived -c` reports the mismatch as
    arbiter-mirror): a waits and opens as configured, b steps down for it (Y3) and keepalived on a takes the VIP on
    b's priority-0 advert, which nopreempt does not refuse. One move, no overlap, no fence."""
    arb = Model({"a": 150, "b": 100}, ka_nopreempt=True)
    healed = heal_preempt(arb)
    arb.run(20)
    moves, no_master, dual, order = arb.figures(healed)
    assert (moves, order, dual) == (1, ["a"], 0.0)
    assert no_master <= skew(150, 1.0) + 2 * TICK and arb.fences == []


@pytest.mark.parametrize("who", ["a", "b"])
def test_an_agent_restart_during_the_handover_still_moves_once(who: str) -> None:
    arb = Model({"a": 150, "b": 100})
    healed = heal_preempt(arb)
    for _ in range(200):
        if arb.nodes["a"].last is not None and arb.nodes["a"].last.rule == "P2":
            break
        arb.step()
    else:
        pytest.fail(f"a never opened for the handover: {arb.nodes['a'].rules}")
    arb.run(1)
    arb.restart_agent(who)
    arb.run(15)
    moves, _, dual, order = arb.figures(healed)
    assert (moves, order) == (1, ["a"])
    assert dual <= TICK and arb.fences == []
    assert arb.nodes["a"].last is not None and arb.nodes["a"].last.rule == "H1"


# --- the edges that feed the handover ---------------------------------------------------------------------


def test_preempt_delay_reaches_the_policy_and_a_bad_one_is_refused() -> None:
    text = (Path(__file__).resolve().parents[2] / "deploy" / "arbiter.toml.example").read_text(encoding="utf-8")
    cfg = config_mod.parse(text.replace("preempt_delay_ms = 0", "preempt_delay_ms = 2500", 1))
    assert PolicyConfig.from_config(cfg, "VI_1").preempt_delay == 2.5
    with pytest.raises(config_mod.ConfigError, match=r"instance\[0\]\.preempt_delay_ms"):
        config_mod.parse(text.replace("preempt_delay_ms = 0", "preempt_delay_ms = -1", 1))


def test_the_peers_rule_and_gate_reach_its_peer_view() -> None:
    clock = FakeClock()
    t = tracker(clock, [])
    report = InstanceReport("VI_1", VrrpState.FAULT, False, 150, "node-a", 4, False, "P1")
    t.accept(frame(1, 7.0, instances=(report,)), "udp:eth0")
    got = t.peer_view("node-b", "VI_1")
    assert (got.rule, got.gate_open) == ("P1", False)
    assert (t.peer_view("node-b", "VI_2").rule, t.peer_view("node-b", "VI_2").gate_open) == (None, None)


def test_p3_after_the_step_down_a_stale_lease_read_does_not_veto_the_new_holder() -> None:
    """Seen in the lab (staggered-start, 3 moves): b stepped down first (Y3) and was BACKUP again (B2) when
    keepalived here took the VIP; this node's last lease read, made before b's release, still named b. L2 wanted a
    frame of b at most 1.5 heartbeats old, found none, and L1 closed the gate: b took the VIP back, then the
    handover ran again. Holding soon after opening for b (P2), the stale read is b's released lease: P3 acquires."""
    p = replace(STARTED, rule="B2", gate=Gate.OPEN, handover_from="b", handover_at=NOW - 0.3)
    old_frame = (view("b", B, 100, "B2", heard_at=NOW - 0.2, lease_holder=None),)
    d = decide(p, evidence(M, 150, lease_of("b", "a"), old_frame), P_CFG, NOW)
    assert (d.gate, d.rule) == (Gate.OPEN, "P3")
    assert any(isinstance(x, AcquireLease) for x in d.actions)
    # Not without the handover: a node that was plain BACKUP and takes the VIP of a live lease holder is vetoed.
    d = decide(replace(STARTED, rule="B2"), evidence(M, 150, lease_of("b", "a"), old_frame), P_CFG, NOW)
    assert (d.gate, d.rule) == (Gate.CLOSED, "L1")
