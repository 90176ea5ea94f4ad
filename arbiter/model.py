"""Frozen value types the pure policy decides on: evidence in, decision out.

Times are monotonic seconds on the deciding node's clock (the edges convert whatever they observe to it).
Nothing here does IO; everything is hashable and comparable so tests can build it from plain data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from arbiter.config import Config


class VrrpState(enum.Enum):
    MASTER = "MASTER"
    BACKUP = "BACKUP"
    FAULT = "FAULT"
    STOP = "STOP"
    UNKNOWN = "UNKNOWN"


class Gate(enum.Enum):
    OPEN = "open"  # track_file 0: keepalived decides as it would alone
    CLOSED = "closed"  # track_file non-zero: instance in FAULT, VIP released, never taken


class LeaseStatus(enum.Enum):
    PENDING = "pending"  # no answer from the lease store yet since start
    MINE = "mine"
    PEER = "peer"
    FREE = "free"
    UNKNOWN = "unknown"  # store unreachable / timed out


class Power(enum.Enum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class FenceOutcome(enum.Enum):
    RUNNING = "running"
    OFF = "off"  # a status read (or the configured weaker proof) showed power OFF
    FAILED = "failed"


@dataclass(frozen=True)
class LeaseView:
    status: LeaseStatus
    holder: str | None = None
    token: int | None = None
    # Local monotonic estimate of when the lease expires (for MINE: measured from the renewal's send time).
    expires_at: float | None = None


@dataclass(frozen=True)
class FenceResult:
    outcome: FenceOutcome
    at: float
    proof: str = ""
    # FAILED because the peer, fenced OFF earlier, read ON again inside the hold-down while still silent (it was
    # powered on): not power-cycled again until the hold-down ends; not a fence that failed (no F1).
    ineffective: bool = False
    # OFF on an operator's word (`keepalived-arbiter fence NODE confirm-off --yes`), not on a power read.
    by_hand: bool = False


@dataclass(frozen=True)
class Timings:
    """A node's timings as its own config sets them, in seconds; each node sends its own in its heartbeats, so
    that a peer judges its lease renewals and heartbeats by them rather than by the peer's own settings."""

    ttl: float  # lease TTL: what its renewals set the lease's expiry to
    renew: float
    safety: float
    interval: float  # heartbeat interval
    deadtime: float
    advert_int: float | None = None  # VRRP advert interval of the instance the view is about, if it says


@dataclass(frozen=True)
class PeerView:
    """What this node knows about one peer for one instance."""

    name: str
    # Any heartbeat medium up (heard within deadtime_ms). None before the first deadtime after start.
    alive: bool | None
    heard_at: float | None = None  # send-time of the newest frame, in this node's clock
    state: VrrpState = VrrpState.UNKNOWN  # as the peer reported in that frame
    vip_present: bool = False
    priority: int = 0
    quorate: bool | None = None  # the peer's own reference quorum
    lease_holder: str | None = None  # who the peer's own lease view names as holder
    highest_token: int = 0
    # Newest VRRP advert from this peer seen on the instance's interface (after the host firewall); None when
    # none was seen. Whether "none seen" means anything is `listening_since`'s to say.
    adverts_at: float | None = None
    # Since when every advert of this peer reaching the interface would have been seen here (the listener's
    # start); None when adverts are not observed at all (no raw socket, or packets that may be this peer's
    # adverts were refused), which disables the cut-path rules (V1, L3) for a peer with no advert seen.
    listening_since: float | None = None
    fence: FenceResult | None = None  # newest fencing result against this peer
    # Newest power status read of this peer (BMC), if any: the edge re-reads it while the peer is fenced.
    power: Power = Power.UNKNOWN
    power_at: float | None = None
    # The peer's newest frame said it was stopping cleanly, with every gate closed and no VIP held: its silence
    # after that is a stop, not a failure (its gates stay closed until its agent runs again).
    left: bool = False
    # The peer's gate and the rule of its last decision, as its newest frame said (None: not said, e.g. a
    # version 1 frame): the preemption handover reads them (P1 waiting, Y1 yielding).
    gate_open: bool | None = None
    rule: str | None = None
    # The peer's own timings, from its newest heartbeat frame; None from a peer whose frames do not carry them.
    timings: Timings | None = None

    @property
    def claims_vip(self) -> bool:
        return self.state is VrrpState.MASTER or self.vip_present

    @property
    def adverts_stopped_at(self) -> float | None:
        """No advert from this peer has been seen here since this time: its newest advert, or with none seen,
        the start of listening; None when adverts are not observed at all."""
        return self.adverts_at if self.adverts_at is not None else self.listening_since


@dataclass(frozen=True)
class Evidence:
    instance: str
    state: VrrpState  # local keepalived state for the instance
    vip_present: bool  # VIP seen on the local interface (netlink)
    priority: int
    reference_quorate: bool | None  # None: no reference round completed yet
    lease: LeaseView
    peers: tuple[PeerView, ...]
    # What the gate file said just before this decision (read during start-up only; None: not read, or absent).
    # keepalived's `init_file 1 overwrite` rewrites it closed whenever keepalived starts.
    gate_found: Gate | None = None

    @property
    def holding(self) -> bool:
        return self.state is VrrpState.MASTER or self.vip_present


@dataclass(frozen=True)
class PolicyConfig:
    """The slice of the config that the policy reads, in seconds; built once at start-up."""

    node: str
    peers: tuple[str, ...]
    fenceable: frozenset[str]  # peers with at least one fence level
    ttl: float
    safety: float
    cycle: float  # heartbeat interval: the decision loop's own period
    advert_int: float
    master_down: float
    nopreempt: bool
    fence_delay: float  # static + drawn random race delay of this node
    power_timeout: float
    hold_down: float
    on_fence_failure: str  # "close" | "keep"
    deadtime: float
    preempt_delay: float = 0.0  # keepalived's preempt_delay (mirrored in the agent's config)

    @property
    def cut_after(self) -> float:
        """Adverts missing this long while heartbeats say MASTER = the VRRP path is cut."""
        return 1.5 * self.advert_int

    @classmethod
    def from_config(cls, cfg: Config, instance: str, drawn_delay_ms: int = 0) -> PolicyConfig:
        inst = next(i for i in cfg.instance if i.name == instance)
        return cls(
            node=cfg.node.name,
            peers=tuple(p.name for p in cfg.peer),
            fenceable=frozenset(p.name for p in cfg.peer if p.fence),
            ttl=cfg.lease.ttl_ms / 1000,
            safety=cfg.lease.safety_ms / 1000,
            cycle=cfg.heartbeat.interval_ms / 1000,
            advert_int=inst.advert_int_ms / 1000,
            master_down=inst.master_down_ms / 1000,
            nopreempt=inst.nopreempt,
            fence_delay=(cfg.fencing.delay_ms + drawn_delay_ms) / 1000,
            power_timeout=cfg.fencing.power_timeout_ms / 1000,
            hold_down=cfg.fencing.hold_down_ms / 1000,
            on_fence_failure=cfg.fencing.on_failure,
            deadtime=cfg.heartbeat.deadtime_ms / 1000,
            preempt_delay=inst.preempt_delay_ms / 1000,
        )


# --- actions: what the agent's edges carry out after a decision -----------------------------------------


@dataclass(frozen=True)
class AcquireLease:
    seed: int  # the new token must exceed this (highest token this node has seen, its own or a peer's)


@dataclass(frozen=True)
class ReleaseLease:
    pass


@dataclass(frozen=True)
class Fence:
    peer: str
    token: int | None  # the lease token in hand; None only on the no-lease race path
    why: str


@dataclass(frozen=True)
class SendGarp:
    pass


@dataclass(frozen=True)
class Alert:
    kind: str
    detail: str


Action = AcquireLease | ReleaseLease | Fence | SendGarp | Alert


@dataclass(frozen=True)
class Resumed:
    """The previous agent's last decision for one instance, as persisted in state_dir, with its times converted
    to this node's monotonic clock (the edge drops a record written before the last reboot)."""

    gate: Gate
    rule: str
    holding: bool  # it held the VIP then
    lease_token: int | None  # the lease it held then (LeaseStatus.MINE), if any
    lease_until: float | None  # until when that lease was known valid
    written_at: float
    # Since when it held the VIP: a restart must not restart the clock of rules that bound a hold (H3, D4).
    holding_since: float | None = None
    # Peers whose failed fence held its gate closed (F1): the hold outlives a restart of the agent.
    fence_failing: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between cycles (returned inside every Decision)."""

    started: bool = False
    gate: Gate = Gate.CLOSED
    rule: str = "start"
    # Until when this node's own lease is known valid (kept while the store is unreachable).
    lease_valid_until: float | None = None
    # An acquisition asked for may have been granted even if its answer never came (the store died after the
    # SET): until then this node may hold a lease it does not know of (rule 2 counts it; see D4).
    lease_maybe_until: float | None = None
    highest_token: int = 0
    # Peer name → time it was first seen silent / first seen in dual master / fence requested.
    silent_since: tuple[tuple[str, float], ...] = ()
    dual_since: tuple[tuple[str, float], ...] = ()
    fence_requested: tuple[tuple[str, float], ...] = ()
    # Peers whose OFF was confirmed since they were last heard; holding on that proof is allowed.
    fenced_off: frozenset[str] = field(default_factory=frozenset)
    # Peers whose fence failed and that have not come back since (heard, fenced OFF, confirmed off by hand): F1
    # holds the gate closed while one is here, also while its retry runs.
    fence_failing: frozenset[str] = field(default_factory=frozenset)
    was_holding: bool = False
    holding_since: float | None = None  # when keepalived last took the VIP here
    # Preemption handover, on the holder: the higher-priority peer this node yields to (Y1), since when, whether
    # that yield ran out of time (not repeated until the peer stops waiting), and the last cycle it yielded in
    # (H3's window to re-acquire the lease released for the yield starts there).
    yield_to: str | None = None
    yield_since: float | None = None
    yield_spent: bool = False
    yielded_at: float | None = None
    # Since when that peer is ready to take the VIP (keepalived BACKUP there, gate open): this node steps down
    # (Y3) once keepalived's preempt_delay has run from then.
    ready_since: float | None = None
    # S1: since when this node waits for a higher-ranked peer that is still starting (None: not waiting).
    start_wait_since: float | None = None
    # Preemption handover, on the returning node: the holder it last opened for (P2), and when.
    handover_from: str | None = None
    handover_at: float | None = None
    # When the gate last opened: keepalived left FAULT then, and its master-down timer started over (L5).
    opened_at: float | None = None
    # An agent restarted on this node: what the previous one decided last (S0 keeps an open gate on it).
    resumed: Resumed | None = None


@dataclass(frozen=True)
class Decision:
    gate: Gate
    actions: tuple[Action, ...]
    reason: str
    rule: str
    state: PolicyState
