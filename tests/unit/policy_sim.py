"""A discrete-time cluster in which every node runs `decide` on its own partial, delayed view.

Not a mock of keepalived or Redis for the agent's IO code: a model of the world the pure policy lives in, so
the safety rules can be checked after every step of random fault sequences. It simulates:
- keepalived per node (FAULT while the gate is closed; BACKUP → MASTER after the master-down interval without
  adverts; preemption by priority unless nopreempt; a MASTER yields to a higher-priority advert),
- VRRP adverts and heartbeat frames over directed links that can be cut,
- a lease store with real expiry, SET NX acquisition, owner-checked renew/release, a token counter seeded by
  the acquirer and folded with the store's clock (as the Lua script does), and restarts that lose every key,
- fencing that powers a node off after `fence_time` (or fails when its BMC is broken), with results fed back,
- agents that can be paused (SIGSTOP) and nodes powered off and on (agent restarts with a fresh state and the
  highest token it persisted).

`Violation` is raised the moment a safety rule is broken; liveness is checked by `run_until_settled`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arbiter.model import (
    AcquireLease,
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
    VrrpState,
)
from arbiter.policy import decide

TICK = 0.2
ADVERT = 1.0
TTL = 3.0
RENEW = 1.0
DEADTIME = 1.0
FENCE_TIME = 0.6
POWER_TIMEOUT = 2.0


class Violation(AssertionError):  # noqa: N818 - a broken safety rule, named as the rules call it
    pass


def master_down(prio: int) -> float:
    return 3 * ADVERT + (256 - prio) / 256


@dataclass
class Snapshot:
    """What a heartbeat frame carries."""

    state: VrrpState
    vip: bool
    prio: int
    quorate: bool
    lease_holder: str | None
    highest_token: int


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


class World:
    def __init__(self, names: list[str], nopreempt: bool = False, fold_clock: bool = True) -> None:
        prios = [150, 100, 50]
        delays = [0.0, 5.0, 10.0]
        self.nodes = {n: Node(n, prios[i], nopreempt, delays[i]) for i, n in enumerate(names)}
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
        self.max_dual_alone = 0.0
        self.fenced_by: dict[str, str] = {}
        self.off_reads: set[tuple[str, str, float]] = set()  # (reader, target, time) of status reads showing OFF
        self.log: list[str] = []
        self.cfgs = {n: self._policy_config(node) for n, node in self.nodes.items()}

    # --- configuration -------------------------------------------------------------------------------

    def _policy_config(self, node: Node) -> PolicyConfig:
        peers = tuple(n for n in self.nodes if n != node.name)
        return PolicyConfig(
            node=node.name,
            peers=peers,
            fenceable=frozenset(peers),
            ttl=TTL,
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
        node.policy = PolicyState(highest_token=node.persisted_token)
        node.heard, node.adverts_at, node.fence_results = {}, {}, {}
        node.boot_at, node.granted_until, node.held_since = self.now, None, None
        self.fenced_by.pop(name, None)

    def restart_store_empty(self, skew: float = 0.0) -> None:
        self.clock_stepped_back |= skew < self.store.skew
        self.store = Store(alive=True, skew=skew, issued=self.store.issued)

    def restart_agent(self, name: str) -> None:
        node = self.nodes[name]
        if node.powered:
            node.paused = False
            # The agent's first act on start is writing every gate closed (S0), before it can be stopped again.
            node.gate = Gate.CLOSED
            node.policy = PolicyState(highest_token=node.persisted_token)
            node.heard, node.adverts_at, node.fence_results, node.power_reads = {}, {}, {}, {}
            node.boot_at = self.now

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
            if op.succeeds:
                if self.nodes[op.target].powered:
                    self.power_off(op.target)
                    self.fenced_by[op.target] = op.fencer
                    if self.fenced_by.get(op.fencer) == op.target:
                        raise Violation(f"mutual kill: {op.fencer} and {op.target} powered each other off")
                fencer.fence_results[op.target] = FenceResult(FenceOutcome.OFF, self.now, "status OFF")
                self.off_reads.add((op.fencer, op.target, self.now))
                fencer.power_reads[op.target] = (Power.OFF, self.now)
            else:
                fencer.fence_results[op.target] = FenceResult(FenceOutcome.FAILED, self.now, "BMC timeout")

    def _keepalived(self, node: Node) -> None:
        if node.ka_crashed:
            node.kstate = VrrpState.STOP
            return
        if node.gate is Gate.CLOSED:
            node.kstate = VrrpState.FAULT
            return
        if node.kstate in (VrrpState.FAULT, VrrpState.STOP):
            node.kstate = VrrpState.BACKUP
            node.backup_since = self.now
        masters = [
            m
            for m in self.nodes.values()
            if m is not node and m.vip and not m.ka_crashed and (m.name, node.name) not in self.vrrp_cut
        ]
        if node.kstate is VrrpState.MASTER:
            if any((m.prio, m.name) > (node.prio, node.name) for m in masters):
                node.kstate = VrrpState.BACKUP
                node.backup_since = node.last_advert = self.now
            return
        if masters:
            node.last_advert = self.now
            if not node.nopreempt and all(node.prio > m.prio for m in masters):
                node.kstate = VrrpState.MASTER
            return
        if self.now - max(node.backup_since, node.last_advert) >= master_down(node.prio) - 1e-9:
            node.kstate = VrrpState.MASTER

    def _adverts_and_heartbeats(self) -> None:
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
        holder = self._lease_view(node).holder
        return Snapshot(
            node.kstate,
            node.vip,
            node.prio,
            node.name not in self.reference_lost,
            holder,
            max(node.policy.highest_token, node.persisted_token),
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

    def _agent(self, node: Node) -> None:
        store = self.store
        # The edge re-reads the BMC of a fenced peer, and of a peer whose heartbeats paused (is it dead?).
        suspects = {name for name, heard in node.heard.items() if self.now - heard[0] > 2 * TICK}
        for name in set(node.policy.fenced_off) | suspects:
            if name not in self.bmc_broken:
                off = not self.nodes[name].powered
                node.power_reads[name] = (Power.OFF if off else Power.ON, self.now)
        if self._reaches_store(node) and not store.readonly and self.now - node.last_renew >= RENEW - 1e-9:
            holder, _, _ = store.current(self.now)
            if holder == node.name:  # the renewal loop: compare-owner PEXPIRE
                store.expires = self.now + TTL
                node.granted_until = store.expires
                node.last_renew = self.now
        evidence = Evidence(
            instance="VI_1",
            state=node.kstate,
            vip_present=node.vip,
            priority=node.prio,
            reference_quorate=node.name not in self.reference_lost,
            lease=self._lease_view(node),
            peers=tuple(self._peer_view(node, peer) for peer in self.nodes.values() if peer is not node),
        )
        decision = decide(node.policy, evidence, self.cfgs[node.name], self.now)
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
        node.gate = decision.gate
        if node.gate is Gate.CLOSED and node.kstate is not VrrpState.STOP:
            node.kstate = VrrpState.FAULT  # track_file change: keepalived drops the VIP at once (inotify)

    def _peer_view(self, node: Node, peer: Node) -> PeerView:
        heard = node.heard.get(peer.name)
        power, power_at = node.power_reads.get(peer.name, (Power.UNKNOWN, None))
        if heard is None:
            alive: bool | None = None if self.now - node.boot_at < DEADTIME else False
            return PeerView(
                peer.name,
                alive,
                adverts_at=node.adverts_at.get(peer.name, node.boot_at),
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
            adverts_at=node.adverts_at.get(peer.name, node.boot_at),
            fence=node.fence_results.get(peer.name),
            power=power,
            power_at=power_at,
        )

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
            store.holder, store.expires, store.token = node.name, self.now + TTL, token
            node.granted_until, node.last_renew = store.expires, self.now
        elif isinstance(action, ReleaseLease):
            if self._reaches_store(node) and not store.readonly and store.current(self.now)[0] == node.name:
                store.holder = None
                node.granted_until = None
        elif isinstance(action, Fence):
            holder, expires, _ = store.current(self.now)
            if store.alive and holder == action.peer and expires > self.now:
                raise Violation(f"{node.name} fences {action.peer}, which holds a valid lease")
            if any(o.fencer == node.name and o.target == action.peer for o in self.fence_ops):
                raise Violation(f"{node.name} fences {action.peer} twice at once")
            ok = action.peer not in self.bmc_broken
            done = self.now + (FENCE_TIME if ok else POWER_TIMEOUT)
            self.fence_ops.append(FenceOp(node.name, action.peer, done, ok))
            node.fence_results[action.peer] = FenceResult(FenceOutcome.RUNNING, self.now)
            self.log.append(f"{self.now:.1f} {node.name} fences {action.peer} ({action.why})")

    # --- invariants --------------------------------------------------------------------------------------

    def _shared_evidence(self, a: Node, b: Node) -> bool:
        if not (a.agent_running and b.agent_running):
            return False
        # A medium is shared when both ends receive on it; a one-way medium informs only one side.
        heartbeat = (a.name, b.name) not in self.hb_cut and (b.name, a.name) not in self.hb_cut
        # A store that cannot grant (read-only) cannot tell two holders apart.
        lease = self._reaches_store(a) and self._reaches_store(b) and not self.store.readonly
        return heartbeat or lease

    def holders(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.vip]

    def _check(self) -> None:
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
        for pair in pairs:
            a, b = (self.nodes[n] for n in sorted(pair))
            if self._shared_evidence(a, b):
                # One exception, one tick long: two nodes preempting a stepping-down lease holder at once, each
                # unable to hear the other, race for the released lease (L2); the store settles it on the next
                # acquisition (in the agent: one Redis round-trip).
                ticks = self.dual_shared_ticks.get(pair, 0) + 1
                self.dual_shared_ticks[pair] = ticks
                if ticks > 1 or "L2" not in (a.last_rule, b.last_rule):
                    raise Violation(f"rule 1: {a.name} and {b.name} both hold the VIP with shared evidence")
                continue
            if not (a.agent_running or b.agent_running):
                # Both agents stopped: nothing of ours runs on either side (keepalived alone). Not a policy case.
                self.dual_alone_since.pop(pair, None)
                continue
            since = self.dual_alone_since.setdefault(pair, self.now)
            self.max_dual_alone = max(self.max_dual_alone, self.now - since)
            if self.now - since > TTL + POWER_TIMEOUT + 3 * TICK:
                raise Violation(f"rule 1: {sorted(pair)} dual master for {self.now - since:.1f}s while cut off")
        for node in self.nodes.values():
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
