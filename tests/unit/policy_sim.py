"""A discrete-time cluster in which every node runs `decide` on its own partial, delayed view.

Not a mock of keepalived or Redis for the agent's IO code: a model of the world the pure policy lives in, so
the safety rules can be checked after every step of random fault sequences. It simulates:
- keepalived per node (FAULT while the gate is closed; BACKUP → MASTER after the master-down interval without
  adverts; preemption by priority unless nopreempt, at once on a lower-priority advert (harsher than
  keepalived, which waits for its master-down timer); a MASTER yields to a higher-priority advert),
- VRRP adverts and heartbeat frames over directed links that can be cut,
- a lease store with real expiry, SET NX acquisition, owner-checked renew/release, a token counter seeded by
  the acquirer and folded with the store's clock (as the Lua script does), and restarts that lose every key,
- fencing that powers a node off after `fence_time` (or fails when its BMC is broken), with results fed back,
- agents that can be paused (SIGSTOP), crashed and restarted (a fresh state but for what is persisted: the
  highest token and the last decision record, from which S0 may keep the gate as found), and nodes powered
  off and on.

`Edges` turns on the harsher models of the agent's edges (each off is the kinder model of earlier turns):
lease answers and BMC reads that arrive a tick after the decision that asked for them (the lease loop runs every
RENEW, not every tick); keepalived's priority-0 advert (a master entering FAULT or stopping hands the VIP to a
backup after its skew time, not master-down); no advert seen since the agent started (V1/L3 see None, as the
raw-socket listener reports, and when listening started); the agent learning keepalived's state from notify
hooks that may come late and out of order (the VIP itself from netlink, at once), and heartbeats carrying what
the agent believes; nodes configured with different lease TTLs. keepalived restarts rewrite the gate closed
(`init_file 1 overwrite`).

`Violation` is raised the moment a safety rule is broken; liveness is checked by `run_until_settled`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
    PolicyConfig,
    PolicyState,
    Power,
    ReleaseLease,
    Resumed,
    VrrpState,
)
from arbiter.policy import decide, initial_state, may_resume

TICK = 0.2
ADVERT = 1.0
TTL = 3.0
RENEW = 1.0
DEADTIME = 1.0
FENCE_TIME = 0.6
POWER_TIMEOUT = 2.0


class Violation(AssertionError):  # noqa: N818 - a broken safety rule, named as the rules call it
    pass


Decide = Callable[[PolicyState, Evidence, PolicyConfig, float], Decision]
MayResume = Callable[[Resumed, Gate | None, PolicyConfig, float], bool]


@dataclass(frozen=True)
class Edges:
    """Which edges are modelled harshly; all False is the kinder world of earlier turns."""

    late_answers: bool = False  # lease loop every RENEW; lease/BMC answers a tick after the request
    prio0: bool = False  # a master leaving MASTER cleanly sends priority 0: backups take over after their skew
    no_advert_default: bool = False  # adverts_at is None until an advert is seen after the agent's start
    hooks: bool = False  # the agent's keepalived state comes from (delayable, reorderable) hooks plus netlink
    ttls: tuple[float, ...] = ()  # per-node lease TTLs (a, b, c); empty: TTL everywhere
    # A crashed keepalived healed is a keepalived start: `init_file 1 overwrite` writes the gate closed.
    keepalived_starts: bool = False
    # Frames carry the sender's last rule, as real ones do (version 3). Off by default: the handover rules (P1,
    # P2, Y1…) then run on it too, which this world's instant preemption does not model (see test_policy_preempt).
    rules_in_frames: bool = False


def master_down(prio: int) -> float:
    return 3 * ADVERT + (256 - prio) / 256


def skew(prio: int) -> float:
    return (256 - prio) / 256


@dataclass
class Snapshot:
    """What a heartbeat frame carries."""

    state: VrrpState
    vip: bool
    prio: int
    quorate: bool
    lease_holder: str | None
    highest_token: int
    rule: str | None = None


@dataclass
class Node:
    name: str
    prio: int
    nopreempt: bool
    fence_delay: float
    powered: bool = True
    paused: bool = False
    ka_crashed: bool = False
    kstate: VrrpState = VrrpState.FAULT
    backup_since: float = 0.0
    last_advert: float = -1e9
    gate: Gate = Gate.CLOSED
    policy: PolicyState = field(default_factory=PolicyState)
    persisted_token: int = 0
    granted_until: float | None = None
    held_since: float | None = None
    last_renew: float = -1e9
    boot_at: float = 0.0
    heard: dict[str, tuple[float, Snapshot]] = field(default_factory=dict)
    adverts_at: dict[str, float] = field(default_factory=dict)
    fence_results: dict[str, FenceResult] = field(default_factory=dict)
    power_reads: dict[str, tuple[Power, float]] = field(default_factory=dict)
    last_rule: str = ""
    # Past its lease expiry: per peer, for how many ticks in a row its word was missing (silent, or claiming).
    unconfirmed: dict[str, int] = field(default_factory=dict)
    ttl: float = TTL
    # The agent's own edges: what it believes keepalived's state is, its lease view, answers in flight.
    seen_state: VrrpState = VrrpState.UNKNOWN
    seen_vip: bool = False
    hooks: list[tuple[float, VrrpState]] = field(default_factory=list)  # (delivery time, state) in send order
    hook_delay: float = 0.0
    hook_reorder: bool = False
    lease_view: LeaseView = field(default_factory=lambda: LeaseView(LeaseStatus.PENDING))
    lease_answers: list[tuple[float, LeaseView]] = field(default_factory=list)
    next_lease_tick: float = 0.0
    power_answers: list[tuple[float, str, Power]] = field(default_factory=list)
    reference_at: float = 0.0  # the first reference round completes then
    prio0_at: dict[str, float] = field(default_factory=dict)  # sender → when its priority-0 advert came
    # The persisted decision record (what a restarted agent resumes from) and when it was last written.
    record: Resumed | None = None
    last_vip_at: float = -1e9

    @property
    def vip(self) -> bool:
        return self.powered and self.kstate is VrrpState.MASTER

    @property
    def agent_running(self) -> bool:
        return self.powered and not self.paused


@dataclass
class Store:
    alive: bool = True
    readonly: bool = False  # e.g. a replica after a Sentinel failover: reads work, writes fail
    skew: float = 0.0  # the store host's clock against the nodes' (a restart may land on another host)
    holder: str | None = None
    expires: float = 0.0
    token: int = 0
    counter: int = 0
    issued: list[int] = field(default_factory=list)

    def current(self, now: float) -> tuple[str | None, float, int]:
        if self.holder is not None and self.expires <= now:
            self.holder = None
        return self.holder, self.expires, self.token


@dataclass
class FenceOp:
    fencer: str
    target: str
    done_at: float
    succeeds: bool
    agent: float  # the fencer's agent (its start time): a restarted agent neither knows nor hears of it


class World:
    def __init__(
        self,
        names: list[str],
        nopreempt: bool = False,
        fold_clock: bool = True,
        edges: Edges = Edges(),
        decide_fn: Decide = decide,
        resume_fn: MayResume = may_resume,
    ) -> None:
        prios = [150, 100, 50]
        delays = [0.0, 5.0, 10.0]
        self.edges = edges
        self.decide = decide_fn
        self.may_resume = resume_fn  # the start-up check of arbiter.agent.daemon.resume_gates
        self.nodes = {n: Node(n, prios[i], nopreempt, delays[i]) for i, n in enumerate(names)}
        for i, node in enumerate(self.nodes.values()):
            node.ttl = edges.ttls[i] if i < len(edges.ttls) else TTL
        self.max_ttl = max(n.ttl for n in self.nodes.values())
        self.now = 0.0
        self.store = Store()
        self.fold_clock = fold_clock
        self.clock_stepped_back = False
        self.vrrp_cut: set[tuple[str, str]] = set()
        self.hb_cut: set[tuple[str, str]] = set()
        self.redis_cut: set[str] = set()
        self.reference_lost: set[str] = set()
        self.bmc_broken: set[str] = set()
        self.fence_ops: list[FenceOp] = []
        self.dual_shared_ticks: dict[frozenset[str], int] = {}
        self.dual_alone_since: dict[frozenset[str], float] = {}
        # Pairs that held the VIP together while neither agent ran (stopped or paused: keepalived alone).
        self.dual_unwatched: set[frozenset[str]] = set()
        # Node → when its agent last started deciding (started, or resumed from maintenance); None: not running.
        self.running_since: dict[str, float | None] = {}
        self.max_dual_alone = 0.0
        self.fenced_by: dict[str, str] = {}
        self.off_reads: set[tuple[str, str, float]] = set()  # (reader, target, time) of status reads showing OFF
        # Node → since when it reaches a store that can grant (restarted empty: anew), as of the last check.
        self.store_usable_since: dict[str, float] = {}
        self.log: list[str] = []
        self.cfgs = {n: self._policy_config(node) for n, node in self.nodes.items()}

    # --- configuration -------------------------------------------------------------------------------

    def _policy_config(self, node: Node) -> PolicyConfig:
        peers = tuple(n for n in self.nodes if n != node.name)
        return PolicyConfig(
            node=node.name,
            peers=peers,
            fenceable=frozenset(peers),
            ttl=node.ttl,
            safety=0.5,
            cycle=TICK,
            advert_int=ADVERT,
            master_down=master_down(node.prio),
            nopreempt=node.nopreempt,
            fence_delay=node.fence_delay,
            power_timeout=POWER_TIMEOUT,
            hold_down=10.0,
            on_fence_failure="close",
            deadtime=DEADTIME,
        )

    # --- faults ----------------------------------------------------------------------------------------

    def power_off(self, name: str) -> None:
        node = self.nodes[name]
        node.powered = False
        node.kstate = VrrpState.STOP
        node.held_since = None

    def power_on(self, name: str) -> None:
        node = self.nodes[name]
        if node.powered:
            return
        node.powered, node.paused, node.ka_crashed = True, False, False
        node.kstate, node.gate = VrrpState.FAULT, Gate.CLOSED
        node.record = None  # another boot: the record is not resumed from
        node.granted_until, node.held_since = None, None
        self._agent_starts(node, lease_delay=0.0, reference_delay=0.0)
        self.fenced_by.pop(name, None)

    def _agent_starts(self, node: Node, lease_delay: float, reference_delay: float) -> None:
        """A new agent process: nothing of the old one but what is on disk (token, decision record)."""
        node.policy = initial_state(node.persisted_token, node.record)
        node.heard, node.adverts_at, node.fence_results, node.power_reads = {}, {}, {}, {}
        node.hooks, node.lease_answers, node.power_answers = [], [], []
        node.boot_at = self.now
        node.reference_at = self.now + reference_delay
        node.lease_view = LeaseView(LeaseStatus.PENDING)
        node.next_lease_tick = self.now + lease_delay
        # At start the agent reads the VIP from netlink (present: MASTER) and hears hooks from then on.
        node.seen_vip = node.vip
        node.seen_state = VrrpState.MASTER if node.vip else VrrpState.UNKNOWN
        # S0 before anything else: close every gate the previous agent's record does not vouch for as found.
        record, cfg = node.record, self.cfgs[node.name]
        if record is None or not self.may_resume(record, node.gate, cfg, self.now):
            self._gate_write(node, Gate.CLOSED)

    def restart_store_empty(self, skew: float = 0.0) -> None:
        self.clock_stepped_back |= skew < self.store.skew
        self.store = Store(alive=True, skew=skew, issued=self.store.issued)
        self.store_usable_since.clear()  # an empty store tells nobody anything until a holder acquires it

    def restart_agent(self, name: str, lease_delay: float = 0.0, reference_delay: float = 0.0) -> None:
        """The agent crashes (or was paused: stuck) and starts again; its first lease answer and reference round
        come `lease_delay` / `reference_delay` seconds after its start (heartbeats as they arrive)."""
        node = self.nodes[name]
        if node.powered:
            node.paused = False
            self._agent_starts(node, lease_delay, reference_delay)
            # A dual master cut off is bounded from this agent's start: the fence its predecessor had in flight
            # (and its outcome) died with that process, and the new one waits deadtime before fencing again.
            for pair in self.dual_alone_since:
                if name in pair:
                    self.dual_alone_since[pair] = self.now

    def restart_keepalived(self, name: str) -> None:
        """keepalived stops (a master sends priority 0) and starts again: `init_file 1 overwrite` writes the
        gate closed, so it starts in FAULT until the agent notices and rewrites the gate."""
        node = self.nodes[name]
        if not node.powered:
            return
        if node.kstate is VrrpState.MASTER and not node.ka_crashed:
            self._priority_zero(node)
        node.ka_crashed = False
        self._transition(node, VrrpState.STOP)
        node.gate = Gate.CLOSED
        self._transition(node, VrrpState.FAULT)

    def _gate_write(self, node: Node, gate: Gate) -> None:
        node.gate = gate
        if gate is Gate.CLOSED and node.kstate not in (VrrpState.STOP, VrrpState.FAULT):
            if node.kstate is VrrpState.MASTER:
                self._priority_zero(node)
            self._transition(node, VrrpState.FAULT)  # track_file change: keepalived drops the VIP at once

    def _transition(self, node: Node, state: VrrpState) -> None:
        if state is node.kstate:
            return
        node.kstate = state
        node.hooks.append((self.now + node.hook_delay, state))
        if node.hook_reorder and len(node.hooks) >= 2:
            # Two hooks of one transition delivered in the opposite order (they run concurrently).
            (t1, s1), (t2, s2) = node.hooks[-2], node.hooks[-1]
            node.hooks[-2:] = [(t1, s2), (t2, s1)]

    def _priority_zero(self, node: Node) -> None:
        if not self.edges.prio0:
            return
        for rx in self.nodes.values():
            if rx is not node and rx.powered and (node.name, rx.name) not in self.vrrp_cut:
                rx.prio0_at[node.name] = self.now

    def heal(self) -> None:
        self.vrrp_cut.clear()
        self.hb_cut.clear()
        self.redis_cut.clear()
        self.reference_lost.clear()
        self.bmc_broken.clear()
        self.store.alive = True
        self.store.readonly = False
        for node in self.nodes.values():
            node.paused = False
            node.hook_delay, node.hook_reorder = 0.0, False
            if node.ka_crashed and self.edges.keepalived_starts:
                self.restart_keepalived(node.name)
            node.ka_crashed = False

    # --- one tick ----------------------------------------------------------------------------------------

    def step(self) -> None:
        self.now = round(self.now + TICK, 6)
        self._finish_fences()
        before = {n.name: n.vip for n in self.nodes.values()}
        for node in self.nodes.values():
            if node.powered:
                self._keepalived(node)
        self._check_flash(before)
        self._adverts_and_heartbeats()
        for node in self.nodes.values():
            if node.agent_running:
                self._agent(node)
        self._check()

    def _finish_fences(self) -> None:
        for op in [o for o in self.fence_ops if o.done_at <= self.now]:
            self.fence_ops.remove(op)
            fencer = self.nodes[op.fencer]
            if not fencer.powered:
                continue
            if op.succeeds and self.nodes[op.target].powered:
                # The BMC got the command: it powers the target off even if the agent that sent it is gone.
                self.power_off(op.target)
                self.fenced_by[op.target] = op.fencer
                if self.fenced_by.get(op.fencer) == op.target:
                    raise Violation(f"mutual kill: {op.fencer} and {op.target} powered each other off")
            if op.agent != fencer.boot_at:
                continue  # its result went to a process that has since restarted
            if op.succeeds:
                fencer.fence_results[op.target] = FenceResult(FenceOutcome.OFF, self.now, "status OFF")
                self.off_reads.add((op.fencer, op.target, self.now))
                fencer.power_reads[op.target] = (Power.OFF, self.now)
            else:
                fencer.fence_results[op.target] = FenceResult(FenceOutcome.FAILED, self.now, "BMC timeout")

    def _keepalived(self, node: Node) -> None:
        if node.ka_crashed:
            self._transition(node, VrrpState.STOP)
            return
        if node.gate is Gate.CLOSED:
            self._transition(node, VrrpState.FAULT)
            return
        if node.kstate in (VrrpState.FAULT, VrrpState.STOP):
            self._transition(node, VrrpState.BACKUP)
            node.backup_since = self.now
        masters = [
            m
            for m in self.nodes.values()
            if m is not node and m.vip and not m.ka_crashed and (m.name, node.name) not in self.vrrp_cut
        ]
        if node.kstate is VrrpState.MASTER:
            if any((m.prio, m.name) > (node.prio, node.name) for m in masters):
                self._transition(node, VrrpState.BACKUP)
                node.backup_since = node.last_advert = self.now
            return
        if masters:
            node.last_advert = self.now
            if not node.nopreempt and all(node.prio > m.prio for m in masters):
                # Harsher than keepalived 2.2, which ignores a lower-priority master's adverts and preempts when
                # its master-down timer runs out: preempting at once leaves the agents no time (the handover's
                # step-down, Y3, is modelled with keepalived's timers in test_policy_preempt.py).
                self._transition(node, VrrpState.MASTER)
            return
        due = max(node.backup_since, node.last_advert) + master_down(node.prio)
        # A priority-0 advert heard since the last ordinary one: the sender left MASTER; take over after skew.
        zero = [t for t in node.prio0_at.values() if t >= max(node.backup_since, node.last_advert) - 1e-9]
        if zero:
            due = min(due, max(zero) + skew(node.prio))
        if self.now >= due - 1e-9:
            self._transition(node, VrrpState.MASTER)

    def _adverts_and_heartbeats(self) -> None:
        for node in self.nodes.values():
            if node.vip:
                node.last_vip_at = self.now
        for rx in self.nodes.values():
            if not rx.powered:
                continue
            for tx in self.nodes.values():
                if tx is rx:
                    continue
                if tx.vip and not tx.ka_crashed and (tx.name, rx.name) not in self.vrrp_cut:
                    rx.adverts_at[tx.name] = self.now
                if tx.agent_running and rx.agent_running and (tx.name, rx.name) not in self.hb_cut:
                    rx.heard[tx.name] = (self.now, self._snapshot(tx))

    def _snapshot(self, node: Node) -> Snapshot:
        # What the agent believes (its frame is built from its own view, not from the truth).
        holder = self._agent_lease_view(node).holder
        if self.edges.hooks:
            self._netlink(node)
        return Snapshot(
            node.seen_state if self.edges.hooks else node.kstate,
            node.vip,
            node.prio,
            node.name not in self.reference_lost,
            holder,
            max(node.policy.highest_token, node.persisted_token),
            node.last_rule if self.edges.rules_in_frames else None,
        )

    def _reaches_store(self, node: Node) -> bool:
        return self.store.alive and node.name not in self.redis_cut

    def _lease_view(self, node: Node) -> LeaseView:
        if not self._reaches_store(node):
            return LeaseView(LeaseStatus.UNKNOWN)
        holder, expires, token = self.store.current(self.now)
        if holder is None:
            return LeaseView(LeaseStatus.FREE)
        status = LeaseStatus.MINE if holder == node.name else LeaseStatus.PEER
        return LeaseView(status, holder, token, expires)

    def _agent_lease_view(self, node: Node) -> LeaseView:
        if node.lease_view.status is LeaseStatus.PENDING and self.now < node.next_lease_tick - 1e-9:
            return node.lease_view  # no answer yet since this agent started
        return node.lease_view if self.edges.late_answers else self._lease_view(node)

    def _renew_at_store(self, node: Node) -> None:
        """The compare-owner PEXPIRE of the renewal loop, as the store executes it."""
        holder, _, _ = self.store.current(self.now)
        if self._reaches_store(node) and not self.store.readonly and holder == node.name:
            self.store.expires = self.now + node.ttl
            node.granted_until = self.store.expires
            node.last_renew = self.now

    def _answer(self, node: Node, view: LeaseView | None = None) -> None:
        """An answer to a lease call made now reaches the agent on its next tick (late_answers)."""
        if view is None:
            view = self._lease_view(node) if self._reaches_store(node) else LeaseView(LeaseStatus.UNKNOWN)
        node.lease_answers.append((self.now + TICK, view))

    def _lease_loop(self, node: Node) -> None:
        if not self.edges.late_answers:
            if self.now - node.last_renew >= RENEW - 1e-9:
                self._renew_at_store(node)
            if node.lease_view.status is LeaseStatus.PENDING and self.now >= node.next_lease_tick - 1e-9:
                node.lease_view = self._lease_view(node)
            return
        due = [a for a in node.lease_answers if a[0] <= self.now + 1e-9]
        node.lease_answers = [a for a in node.lease_answers if a[0] > self.now + 1e-9]
        for _, view in due:
            node.lease_view = view
        view = node.lease_view
        resumed = view.status is LeaseStatus.PENDING and node.record is not None and node.record.lease_token
        if self.now >= node.next_lease_tick - 1e-9:
            node.next_lease_tick = self.now + RENEW
            if view.status is LeaseStatus.MINE or resumed:
                self._renew_at_store(node)
            self._answer(node)
        elif view.status is LeaseStatus.PEER and view.expires_at is not None and view.expires_at <= self.now:
            self._answer(node)  # re-read at the holder's expected expiry, not a renew interval later

    def _power(self, node: Node) -> None:
        """The edge re-reads the BMC of a fenced peer, and of a peer whose heartbeats paused (is it dead?)."""
        if self.edges.late_answers:
            due = [a for a in node.power_answers if a[0] <= self.now + 1e-9]
            node.power_answers = [a for a in node.power_answers if a[0] > self.now + 1e-9]
            for at, name, power in due:
                node.power_reads[name] = (power, at)  # stamped on arrival, as the agent does
        suspects = {name for name, heard in node.heard.items() if self.now - heard[0] > 2 * TICK}
        for name in set(node.policy.fenced_off) | suspects:
            if name not in self.bmc_broken:
                power = Power.ON if self.nodes[name].powered else Power.OFF
                if self.edges.late_answers:
                    node.power_answers.append((self.now + TICK, name, power))
                else:
                    node.power_reads[name] = (power, self.now)

    def _netlink(self, node: Node) -> None:
        """The VIP appearing or going reaches the agent within a millisecond, and it sends a frame at once."""
        if node.vip and not node.seen_vip:
            node.seen_state = VrrpState.MASTER
        elif not node.vip and node.seen_vip and node.seen_state is VrrpState.MASTER:
            node.seen_state = VrrpState.BACKUP
        node.seen_vip = node.vip

    def _seen_keepalived(self, node: Node) -> VrrpState:
        """What the agent believes keepalived's state is: netlink's VIP events at once, then the hooks due."""
        if not self.edges.hooks:
            return node.kstate
        self._netlink(node)
        for _, state in [h for h in node.hooks if h[0] <= self.now + 1e-9]:
            node.seen_state = state
        node.hooks = [h for h in node.hooks if h[0] > self.now + 1e-9]
        return node.seen_state

    def _agent(self, node: Node) -> None:
        self._power(node)
        self._lease_loop(node)
        started = node.policy.started
        evidence = Evidence(
            instance="VI_1",
            state=self._seen_keepalived(node),
            vip_present=node.vip,
            priority=node.prio,
            reference_quorate=None if self.now < node.reference_at - 1e-9 else node.name not in self.reference_lost,
            lease=self._agent_lease_view(node),
            peers=tuple(self._peer_view(node, peer) for peer in self.nodes.values() if peer is not node),
            gate_found=None if started else node.gate,
        )
        decision = self.decide(node.policy, evidence, self.cfgs[node.name], self.now)
        newly_fenced = decision.state.fenced_off - node.policy.fenced_off
        for name in newly_fenced:
            # Rule 4: the claim must rest on a status read that saw the target OFF (it may have been powered
            # on by an operator since; the agent learns that from its next read).
            result = node.fence_results.get(name)
            if result is None or (node.name, name, result.at) not in self.off_reads:
                raise Violation(f"{node.name} claims {name} fenced without a status read showing it OFF")
        node.policy = decision.state
        node.last_rule = decision.rule
        node.persisted_token = max(node.persisted_token, node.policy.highest_token)
        for action in decision.actions:
            self._carry_out(node, action)
        if self.edges.late_answers and any(isinstance(a, AcquireLease | ReleaseLease) for a in decision.actions):
            self._answer(node)  # the call's answer (the store after it) reaches the agent next tick
        self._gate_write(node, decision.gate)
        if node.policy.started:
            self._record(node, decision, evidence.lease)

    def _record(self, node: Node, decision: Decision, lease: LeaseView) -> None:
        """The agent's decision record, as arbiter.agent.daemon keeps it (on change, and every RENEW)."""
        token, until = (lease.token, lease.expires_at) if lease.status is LeaseStatus.MINE else (None, None)
        old = node.record
        valid_until = decision.state.lease_valid_until
        if lease.status is LeaseStatus.UNKNOWN and valid_until is not None and old is not None:
            token, until = old.lease_token, valid_until
        key = (decision.gate, decision.rule, decision.state.was_holding, token, until)
        same = old is not None and (old.gate, old.rule, old.holding, old.lease_token, old.lease_until) == key
        if same and old is not None and self.now - old.written_at < RENEW - 1e-9:
            return
        node.record = Resumed(*key, written_at=self.now, holding_since=decision.state.holding_since)

    def _peer_view(self, node: Node, peer: Node) -> PeerView:
        heard = node.heard.get(peer.name)
        power, power_at = node.power_reads.get(peer.name, (Power.UNKNOWN, None))
        if heard is None:
            alive: bool | None = None if self.now - node.boot_at < DEADTIME else False
            return PeerView(
                peer.name,
                alive,
                adverts_at=self._adverts_at(node, peer),
                listening_since=self._listening_since(node),
                fence=node.fence_results.get(peer.name),
                power=power,
                power_at=power_at,
            )
        at, snap = heard
        return PeerView(
            name=peer.name,
            alive=self.now - at <= DEADTIME,
            heard_at=at,
            state=snap.state,
            vip_present=snap.vip,
            priority=snap.prio,
            quorate=snap.quorate,
            lease_holder=snap.lease_holder,
            highest_token=snap.highest_token,
            rule=snap.rule,
            adverts_at=self._adverts_at(node, peer),
            listening_since=self._listening_since(node),
            fence=node.fence_results.get(peer.name),
            power=power,
            power_at=power_at,
        )

    def _adverts_at(self, node: Node, peer: Node) -> float | None:
        """The newest advert from `peer` seen since this agent started; before the first one the listener
        reports None (no_advert_default), or, kinder, the agent's start."""
        default = None if self.edges.no_advert_default else node.boot_at
        return node.adverts_at.get(peer.name, default)

    def _listening_since(self, node: Node) -> float | None:
        """The listener's raw socket opens as the agent starts, and it reports when (no_advert_default); the
        kinder model has adverts_at default to the start, which says the same."""
        return node.boot_at if self.edges.no_advert_default else None

    def _carry_out(self, node: Node, action: object) -> None:
        store = self.store
        if isinstance(action, AcquireLease):
            if not self._reaches_store(node) or store.readonly:
                return
            holder, _, _ = store.current(self.now)
            if holder is not None:
                return
            clock = int((self.now + store.skew) * 1000) if self.fold_clock else 0
            token = max(store.counter, action.seed, clock) + 1
            if not self.clock_stepped_back and store.issued and token <= max(store.issued):
                raise Violation(f"token {token} issued to {node.name} after {max(store.issued)}")
            # After the store's clock stepped back, only the tokens the acquirer has seen (read, heard, persisted)
            # are guaranteed below the next one: a token lost with the store before it was passed on is not.
            known = max(node.persisted_token, node.policy.highest_token)
            if token <= known:
                raise Violation(f"token {token} issued to {node.name} though it had seen {known}")
            store.counter = token
            store.issued.append(token)
            store.holder, store.expires, store.token = node.name, self.now + node.ttl, token
            node.granted_until, node.last_renew = store.expires, self.now
        elif isinstance(action, ReleaseLease):
            if self._reaches_store(node) and not store.readonly and store.current(self.now)[0] == node.name:
                store.holder = None
                node.granted_until = None
        elif isinstance(action, Fence):
            holder, expires, _ = store.current(self.now)
            if store.alive and holder == action.peer and expires > self.now:
                raise Violation(f"{node.name} fences {action.peer}, which holds a valid lease")
            self._check_fence_needed(node, self.nodes[action.peer])
            if any(
                o.fencer == node.name and o.target == action.peer and o.agent == node.boot_at for o in self.fence_ops
            ):
                raise Violation(f"{node.name} fences {action.peer} twice at once")
            ok = action.peer not in self.bmc_broken
            done = self.now + (FENCE_TIME if ok else POWER_TIMEOUT)
            self.fence_ops.append(FenceOp(node.name, action.peer, done, ok, node.boot_at))
            node.fence_results[action.peer] = FenceResult(FenceOutcome.RUNNING, self.now)
            self.log.append(f"{self.now:.1f} {node.name} fences {action.peer} ({action.why})")

    # --- invariants --------------------------------------------------------------------------------------

    def _check_fence_needed(self, fencer: Node, target: Node) -> None:
        """Goal of issue 12: a fence only of a node that is dead, silent on every medium, or holding the VIP.
        A target whose agent runs, which the fencer hears now (its frames are a tick old at most), and which held
        no VIP for three ticks is none: a claim in its newest frame would have to be false."""
        heard = fencer.heard.get(target.name)
        recent = heard is not None and heard[0] >= self.now - TICK - 1e-9
        if target.agent_running and recent and self.now - target.last_vip_at > 3 * TICK + 1e-9:
            raise Violation(
                f"needless fence: {fencer.name} fences {target.name}, heard now, no VIP since "
                f"{target.last_vip_at:.1f} (rule {fencer.last_rule})"
            )

    def _shared_evidence(self, a: Node, b: Node) -> bool:
        if not (a.agent_running and b.agent_running):
            return False
        # A medium is shared when both ends receive on it; a one-way medium informs only one side.
        heartbeat = (a.name, b.name) not in self.hb_cut and (b.name, a.name) not in self.hb_cut
        # A store that cannot grant (read-only) cannot tell two holders apart. Nor can one in the tick it became
        # usable (restarted empty, writable or reachable again): nobody holds the lease yet, and the acquisitions
        # sent in that tick are answered in the next. From the next tick on it counts, so a dual master the lease
        # does not end within one answer is still a violation (test_policy_simfix pins both sides).
        since = [self.store_usable_since.get(n.name) for n in (a, b)]
        lease = all(t is not None and self.now - t >= TICK - 1e-9 for t in since)
        return heartbeat or lease

    def _track_store(self) -> None:
        for node in self.nodes.values():
            if self._reaches_store(node) and not self.store.readonly:
                self.store_usable_since.setdefault(node.name, self.now)
            else:
                self.store_usable_since.pop(node.name, None)

    def holders(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.vip]

    def _check(self) -> None:
        self._track_store()
        for node in self.nodes.values():
            if node.vip:
                node.held_since = node.held_since if node.held_since is not None else self.now
            else:
                node.held_since = None
        holders = self.holders()
        pairs = {frozenset((a.name, b.name)) for a in holders for b in holders if a is not b}
        for pair in list(self.dual_shared_ticks):
            if pair not in pairs:
                del self.dual_shared_ticks[pair]
        for pair in list(self.dual_alone_since):
            if pair not in pairs:
                del self.dual_alone_since[pair]
        self.dual_unwatched &= pairs
        for node in self.nodes.values():
            if not node.agent_running:
                self.running_since[node.name] = None
            elif self.running_since.get(node.name) is None:
                self.running_since[node.name] = self.now
        for pair in pairs:
            a, b = (self.nodes[n] for n in sorted(pair))
            if self._shared_evidence(a, b):
                # One exception, one tick long: two nodes preempting a stepping-down lease holder at once, each
                # unable to hear the other, race for the released lease (L2); the store settles it on the next
                # acquisition (in the agent: one Redis round-trip).
                ticks = self.dual_shared_ticks.get(pair, 0) + 1
                self.dual_shared_ticks[pair] = ticks
                inherited = any(
                    (since := self.running_since.get(n.name)) is not None
                    and n.held_since is not None
                    and n.held_since <= since + 1e-9
                    and self.now - since <= TICK + 1e-9
                    for n in (a, b)
                )
                if (pair in self.dual_unwatched or inherited) and ticks <= 2:
                    # Inherited from keepalived alone: both agents were paused or stopped, or one took the VIP in
                    # the tick its agent resumed (keepalived's timer ran out while the agent was paused, its gate
                    # held open), before that agent decided anything. One decision closes a gate, keepalived drops
                    # the VIP the tick after.
                    continue
                if ticks > 1 or "L2" not in (a.last_rule, b.last_rule):
                    raise Violation(f"rule 1: {a.name} and {b.name} both hold the VIP with shared evidence")
                continue
            if not (a.agent_running or b.agent_running):
                # Both agents stopped: nothing of ours runs on either side (keepalived alone). Not a policy case.
                self.dual_alone_since.pop(pair, None)
                self.dual_unwatched.add(pair)
                continue
            since = self.dual_alone_since.setdefault(pair, self.now)
            self.max_dual_alone = max(self.max_dual_alone, self.now - since)
            if self.now - since > self.max_ttl + POWER_TIMEOUT + 3 * TICK:
                raise Violation(f"rule 1: {sorted(pair)} dual master for {self.now - since:.1f}s while cut off")
        for node in self.nodes.values():
            self._check_start_up(node)
            expired = (
                node.vip
                and node.agent_running
                and node.granted_until is not None
                and node.held_since is not None
                and node.held_since < node.granted_until <= self.now
            )
            blockers = self._unconfirming(node) if expired else set()
            # A peer's MASTER claim withdrawn within one heartbeat (its agent closing the gate the moment its
            # keepalived took the VIP) is not held against this node; a claim (or a silence) standing two ticks
            # is. Counted per peer: two peers each withdrawing a one-tick claim in consecutive ticks are two
            # withdrawn claims, each heard and answered within a heartbeat.
            node.unconfirmed = {p: node.unconfirmed.get(p, 0) + 1 for p in blockers}
            standing = sorted(p for p, ticks in node.unconfirmed.items() if ticks > 1)
            if standing:
                raise Violation(
                    f"rule 2: {node.name} holds the VIP past its lease expiry {node.granted_until:.1f} "
                    f"without {', '.join(standing)}'s confirmation (rule {node.last_rule})"
                )

    def _check_start_up(self, node: Node) -> None:
        """Rule 2 without the failsafe for an agent still in S0: it has not gathered a peer's word yet, so only
        its own lease, as granted, may vouch for a VIP its gate keeps."""
        if not node.agent_running or node.policy.started or not node.vip or node.gate is not Gate.OPEN:
            return
        if node.granted_until is None or node.granted_until <= self.now:
            raise Violation(f"rule 2 at start-up: {node.name} keeps the VIP in S0 past its lease {node.granted_until}")

    def _check_flash(self, before: dict[str, bool]) -> None:
        """Stronger than rule 1 at tick resolution: a node must not even briefly take the VIP from a master
        it hears over a heartbeat (the cut-VRRP-path rule closes its gate before master-down)."""
        for y in self.nodes.values():
            if not y.vip or before[y.name] or not y.agent_running:
                continue
            if self.now - y.last_advert < master_down(y.prio) - 1e-9:
                continue  # preemption after hearing the master: keepalived's own transition
            for x in self.nodes.values():
                heard = y.heard.get(x.name)
                if x is y or not x.vip or not x.agent_running or x.held_since is None or heard is None:
                    continue
                steady = self.now - x.held_since >= 1.5 * ADVERT + 2 * TICK
                if steady and heard[0] >= self.now - TICK - 1e-9 and heard[1].vip and y.boot_at < x.held_since:
                    raise Violation(f"VIP flash: {y.name} took the VIP while hearing {x.name} hold it")

    def _unconfirming(self, node: Node) -> set[str]:
        """The peers whose word the failsafe lacks for `node` this tick (empty: every peer confirms)."""
        missing = set()
        for peer in self.nodes.values():
            if peer is node:
                continue
            # The peer's word counts for deadtime, over a heartbeat or from its BMC (reads here are truthful
            # when taken): a node powered on since its last OFF read cannot hold the VIP within deadtime
            # (its agent starts with the gate closed, and keepalived then waits its master-down interval).
            power, read_at = node.power_reads.get(peer.name, (Power.UNKNOWN, -1e9))
            if power is Power.OFF and self.now - read_at <= DEADTIME:
                continue
            heard = node.heard.get(peer.name)
            if heard is None or self.now - heard[0] > DEADTIME or heard[1].vip:
                missing.add(peer.name)
        return missing

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.step()

    def settled_holder(self) -> Node | None:
        holders = self.holders()
        gates_ok = all(n.gate is Gate.OPEN for n in holders)
        return holders[0] if len(holders) == 1 and gates_ok else None
