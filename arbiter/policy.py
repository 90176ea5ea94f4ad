"""The arbitration policy: who may hold each VIP, decided from evidence alone.

`decide(previous, evidence, config, now) -> Decision(gate, actions, reason, rule, state)` is pure: no IO, no
clock, no globals. The agent calls it once per cycle and on every event (VIP appeared, heartbeat arrived,
lease answer, fence result) and carries out the actions at its edges. "Holding" means keepalived reports
MASTER or the VIP is on the interface. An open gate never makes keepalived take the VIP by itself: it lets
keepalived do what it would do alone, which keeps failover as fast as keepalived's own. A closed gate puts the
instance in FAULT (VIP released, never taken).

Rules, first match wins (the rule id is in every decision and in `policy explain`):

| id  | when                                                                 | gate   | actions                 |
|-----|----------------------------------------------------------------------|--------|-------------------------|
| S0  | before the first full evidence round (reference round, lease answer, | closed |                         |
|     | every peer's heartbeat up or past deadtime), and until the lease     |        |                         |
|     | store answered or a peer was heard (a node started cut off stays)    |        |                         |
|     | restarted agent: the gate found open stays open while the previous   | open   |                         |
|     | agent's persisted decision was open, is younger than TTL − safety    |        |                         |
|     | and, holding, its own lease is valid past safety (and no peer's)     |        |                         |
| Q1  | reference quorum lost here while a live peer reaches it, or no peer  | closed | release lease if mine   |
|     | is heard at all (lost everywhere = not a local fault: go on)         |        |                         |
| F1  | fencing a peer failed, on_failure = "close", and since then it was   | closed | retry after power       |
|     | not heard, not fenced OFF, not confirmed off by hand; holding or not |        | timeout (token; none:   |
|     | (a reopened gate would be a dual master at every master-down); kept  |        | as B4); keep the lease  |
|     | across an agent restart (decisions.json)                             |        |                         |
| S1  | not holding, a live higher-ranked peer (priority, then name) is      | closed |                         |
|     | still starting (its frame says S0, or its gate just opened with its  |        |                         |
|     | keepalived still in FAULT; no VIP): wait for it, for at most         |        |                         |
|     | 2 × deadtime + master-down (start_wait_bound)                        |        |                         |
| P3  | holding, a live lower-priority peer yields to this node (Y1/Y2/Y3,   | open   | acquire                 |
|     | or stepped down for it since this node opened for it, P2), the lease |        |                         |
|     | free or still that peer's (its release not yet seen here)            |        |                         |
| F2  | lease held by a live peer whose last rule was F1 (three nodes): its  | closed |                         |
|     | failed fence holds this node closed too                              |        |                         |
| L4  | holding, lease held by a peer whose BMC read OFF after its newest    | open   |                         |
|     | heartbeat (dead: its lease is not in use; failover at keepalived's   |        |                         |
|     | speed, the lease is taken when it runs out)                          |        |                         |
| L1  | holding, lease held by a peer that is not confirmed BACKUP           | closed |                         |
| L2  | holding, lease held by a peer that confirms BACKUP (handover) in a   | open   | acquire (when released) |
|     | frame at most 1.5 heartbeat intervals old                            |        |                         |
| L3  | not holding, lease renewed by its holder after its adverts stopped   | closed |                         |
|     | (holder alive, VRRP path cut: close before master-down); none seen   |        |                         |
|     | since listening started counts as stopped then                       |        |                         |
| L5  | not holding, lease held by a peer silent (heartbeats and adverts),   | closed |                         |
|     | not read OFF, still valid when keepalived's master-down would fire,  |        |                         |
|     | and: gate already closed, or master-down due within one cycle (a     |        |                         |
|     | holder whose BMC reads OFF before then never closes the gate)        |        |                         |
| V1  | not holding, a live peer says MASTER 1.5 adverts after its last      | closed |                         |
|     | advert seen here, or after listening started if none was seen (VRRP  |        |                         |
|     | path cut: close before master-down)                                  |        |                         |
| P1  | not holding, preemption on (no nopreempt), a single live peer of     | closed |                         |
|     | lower priority holds the VIP with the lease (or the lease free):     |        |                         |
|     | wait for it to yield (keepalived would preempt it, L1 would veto)    |        |                         |
| P2  | as P1, the holder yields (Y1) and no higher-priority peer waits      | open   |                         |
|     | (P1/P2): keepalived preempts it, one move                            |        |                         |
| P4  | not holding, preemption on, lease not mine, a lower-priority peer    | closed |                         |
|     | silent on every heartbeat medium still advertises (VRRP master) a    |        |                         |
|     | deadtime after its last frame: no handover can be agreed with it     |        |                         |
| Y1  | holding, a live higher-priority peer waits (P1/P2), quorum as good,  | open   | release lease if mine   |
|     | every peer confirms not master: yield, for at most deadtime + 2      |        |                         |
|     | adverts + preempt_delay + master-down; or the peer now holds too:    |        |                         |
|     | keepalived steps this node down (no acquire, no fence)               |        |                         |
| Y2  | Y1's peer holds the VIP and this node has not stepped down within    | closed |                         |
|     | one advert (VRRP path cut?)                                          |        |                         |
| Y3  | as Y1, the lease released and the peer ready (P2, keepalived BACKUP, | closed | release lease if mine   |
|     | gate open) for preempt_delay: step down first (priority 0 advert),   |        |                         |
|     | keepalived there takes the VIP after its skew time, no overlap       |        |                         |
| D1  | holding, a live peer also holds, lease mine (or still valid)         | open   | fence it if it has not  |
|     |                                                                      |        | stepped down in deadtime|
| D2  | holding, a live peer also holds and reports the lease as its own     | closed |                         |
| D3  | holding, a live peer also holds, lease free or store unreachable:    | winner | winner: acquire; fence  |
|     | higher priority, then lower name wins                                | open   | after deadtime + delay  |
| D4  | D3's winner whose own lease expired during this hold (rule 2); with  | closed |                         |
|     | none known, one an unanswered acquisition may have got (later        |        |                         |
|     | acquisitions do not extend a known lease)                            |        |                         |
| H1  | holding, lease mine and valid                                        | open   | fence silent peers      |
|     |                                                                      |        | (token), unless a peer  |
|     |                                                                      |        | said it left cleanly    |
| H2  | holding, lease mine but within safety margin of expiry (renewals     | closed |                         |
|     | failing): self-demotion before TTL − safety                          |        |                         |
| H3  | holding, lease free (expired, or Redis restarted empty), for at most | open   | acquire (seeded)        |
|     | TTL − safety (since the hold or the last yield) unless the own       |        |                         |
|     | lease is still valid; then as H4-H6                                  |        |                         |
| H4  | holding, store unreachable (or not granting), own lease still valid  | open   |                         |
| H5  | holding, store unreachable, every peer confirms BACKUP or is fenced  | open   |                         |
|     | OFF (failsafe)                                                       |        |                         |
| H6  | holding, store unreachable, lease expired, a peer silent             | closed | fence a peer silent on  |
|     |                                                                      |        | every medium, as B4     |
| B3  | not holding, a peer silent on every medium (heartbeats, and no       | open   | acquire; fence it       |
|     | advert for 1.5 adverts) last claimed the VIP: fence it with the      |        | (token)                 |
|     | lease before keepalived's master-down fires                          |        |                         |
| B4  | as B3, the lease store unreachable: no token to fence with           | closed | fence it, no token,     |
|     |                                                                      |        | once silent TTL + race  |
|     |                                                                      |        | delay after a last word |
|     |                                                                      |        | without the store       |
|     |                                                                      |        | (H4-H6: rule 3)         |
| B1  | not holding, lease mine                                              | open   | release lease           |
| B2  | not holding                                                          | open   |                         |

Preemption handover (P1, P2, P3, Y1, Y2, Y3): keepalived alone moves the VIP once when a higher-priority node P
returns; L1 on P would veto that move (the holder H has not said BACKUP yet), and P's FAULT hands the VIP straight
back: a flap loop. So P waits with its gate closed (P1) and says so in its heartbeats; H releases its lease and
keeps the VIP (Y1), its hold covered by P's word that it is not master; P opens (P2) and keepalived on P leaves
FAULT for BACKUP, which P's next frame says at once. Keepalived alone would now preempt H after P's master-down
interval and hold the VIP on both nodes until P's advert reaches H (one advert's latency, a few ms of dual
master). Instead H, seeing P ready and the lease released, steps down first (Y3, after preempt_delay): its FAULT
sends priority 0 and P takes the VIP after its skew time, (256 − priority)/256 of an advert interval (VRRPv3) or
of a second (VRRPv2); nobody holds it twice. P holding takes the lease (P3 or H3). If P's keepalived never takes
it, H's keepalived (BACKUP again at once: B2) takes it back after its own master-down interval. A yield not
taken up within its bound ends (H re-acquires, H3) and is not repeated until P stops waiting. With `nopreempt` P
never waits (B2, and keepalived does not preempt); with the lease store unreachable there is no lease to hand
over: P opens (B2), keepalived preempts, and D3 (higher priority wins) keeps P's gate open.

How the safety rules of DESIGN.md follow:
1. No dual master while shared evidence can tell: the lease (L1, D1, D2, L3, L5) or a heartbeat (V1, D2, D3)
   decides before or right after keepalived adds the VIP. Cut off from everything, the overlap ends when the
   lease expires (H2/H6 on the cut-off node) or the fence confirms OFF (H1 on the other); L5 keeps the other
   from taking the VIP before that, unless the holder reads OFF (then nobody holds it, L4).
2. No VIP past lease expiry: H2 and H6 close before TTL − safety; H4/H5 (failsafe) and Y1 need the peer's
   word.
3. No fence of a valid lease holder: fences are issued only with the lease in hand (D1, H1) or on the
   no-lease path after TTL + this node's race delay (D3, H6), by which time a peer's lease has expired.
4. "Fenced" (fenced_off) is only set from a FenceResult whose outcome is OFF, i.e. after a status read.
5. Tokens never go backwards: every acquisition is seeded above the highest token this node has seen,
   its own or reported by a peer (the store also folds in its clock; see arbiter.evidence).
"""

from __future__ import annotations

from dataclasses import replace

from arbiter.model import (
    AcquireLease,
    Action,
    Alert,
    Decision,
    Evidence,
    Fence,
    FenceOutcome,
    Gate,
    LeaseStatus,
    PeerView,
    PolicyConfig,
    PolicyState,
    Power,
    ReleaseLease,
    Resumed,
    SendGarp,
    VrrpState,
)

RULES: dict[str, str] = {
    "S0": "start-up: gate closed until the first full evidence round and some shared evidence (lease or peer); "
    "after an agent restart an open gate is kept while the previous agent's fresh decision and lease vouch for it",
    "Q1": "reference quorum lost here (a live peer still reaches it, or no peer is heard): gate closed",
    "S1": "start-up together: a higher-ranked peer is still starting (S0); gate closed until it has decided",
    "P3": "handover: holding the VIP a lower-priority peer yields; open, acquiring the lease",
    "L1": "holding while the lease is held by a peer: gate closed",
    "F2": "the lease holder holds a failed fence (F1): gate closed here too, no VIP beside the silent node",
    "L2": "holding while the lease holder confirms BACKUP in a recent frame (handover): open, acquiring when released",
    "L3": "backup, lease renewed by its holder after its adverts stopped or none was seen (VRRP cut): gate closed",
    "L4": "holding, lease held by a peer whose BMC read OFF after its last heartbeat: open (the holder is dead)",
    "L5": "backup, lease held by a silent peer not read OFF: gate closed until it expires, reads OFF or is released",
    "V1": "backup, peer says MASTER but no advert from it for 1.5 adverts (VRRP cut): gate closed before master-down",
    "P1": "handover: a lower-priority peer holds the VIP; gate closed until it yields (keepalived would preempt)",
    "P2": "handover: the lower-priority holder yields; gate open, keepalived preempts it",
    "P4": "a lower-priority VRRP master not heard on heartbeats: no handover possible; gate closed while it adverts",
    "Y1": "handover: a higher-priority peer waits; lease released, VIP kept until keepalived's preemption",
    "Y2": "handover: the higher-priority peer holds the VIP and this node did not step down: gate closed",
    "Y3": "handover: the higher-priority peer is ready and the lease released: this node steps down first",
    "D1": "dual master, lease mine: keep the VIP, the peer must step down (fenced if it does not)",
    "D2": "dual master, the peer reports holding the lease: gate closed",
    "D3": "dual master without a lease: priority then name decides; the winner fences a peer that stays",
    "D4": "dual master without a lease, own lease expired during this hold: the winner self-demotes too",
    "H1": "holding with a valid lease: open; a silent peer last seen holding is fenced",
    "H2": "lease within the safety margin of expiry and not renewed: self-demotion, gate closed",
    "H3": "holding, lease free (expired or store restarted empty): open, acquiring for up to TTL − safety",
    "H4": "holding, store unreachable, own lease still valid: open",
    "H5": "holding, store unreachable, every peer confirms BACKUP or is fenced OFF (failsafe): open",
    "H6": "holding, store unreachable, lease expired, a peer silent: gate closed; a peer silent on every medium "
    "for a TTL is fenced without a token",
    "F1": "fencing a peer failed (on_failure = close): gate closed, holding or not, until a fence succeeds, the "
    "peer is heard or an operator confirms it off; fence retried",
    "B1": "backup holding a stale lease: open, lease released",
    "B3": "backup, a peer silent (heartbeats and adverts) last claimed the VIP: acquire the lease and fence it "
    "before master-down",
    "B4": "backup, a silent peer last claimed the VIP and the lease store is unreachable: gate closed, the peer "
    "fenced without a token after a TTL of silence",
    "B2": "backup: gate open, keepalived decides",
}


# Rules of a node waiting to preempt a lower-priority holder, and of a holder yielding to it (the handover).
WAITING = frozenset({"P1", "P2"})
YIELDING = frozenset({"Y1", "Y2", "Y3"})
# Rules of a node holding the VIP without a lease store answer: a peer whose last word was one of these held no
# lease it could renew, so after a TTL of silence none of its is valid (rule 3 for the fences of H6, B4 and F1).
STORELESS = frozenset({"H4", "H5", "H6"})


def _get(pairs: tuple[tuple[str, float], ...], name: str) -> float | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def _put(pairs: tuple[tuple[str, float], ...], name: str, value: float | None) -> tuple[tuple[str, float], ...]:
    rest = tuple(p for p in pairs if p[0] != name)
    return rest if value is None else (*rest, (name, value))


def _remember(prev: PolicyState, ev: Evidence, cfg: PolicyConfig, now: float) -> PolicyState:
    """Fold this cycle's evidence into what the policy remembers."""
    highest = max([prev.highest_token, ev.lease.token or 0, *(p.highest_token for p in ev.peers)])
    valid_until = prev.lease_valid_until
    if ev.lease.status is LeaseStatus.MINE:
        valid_until = ev.lease.expires_at
    elif ev.lease.status is LeaseStatus.PEER:
        valid_until = None
    maybe_until = prev.lease_maybe_until
    if ev.lease.status is LeaseStatus.PEER or (maybe_until is not None and now >= maybe_until and not ev.holding):
        maybe_until = None  # another node holds it now, or it ran out while this node held no VIP
    silent, dual, requested = prev.silent_since, prev.dual_since, prev.fence_requested
    fenced, failing = set(prev.fenced_off), set(prev.fence_failing)
    for peer in ev.peers:
        if peer.alive:
            silent = _put(silent, peer.name, None)
            if peer.fence is not None and peer.heard_at is not None and peer.heard_at > peer.fence.at:
                fenced.discard(peer.name)  # it came back after the fence
            if ev.holding and peer.claims_vip:
                if _get(dual, peer.name) is None:
                    dual = _put(dual, peer.name, now)
            else:
                dual = _put(dual, peer.name, None)
        else:
            dual = _put(dual, peer.name, None)
            if peer.alive is False and _get(silent, peer.name) is None:
                silent = _put(silent, peer.name, now)
        fence = peer.fence
        if fence is not None and fence.outcome is FenceOutcome.OFF and (peer.heard_at or -1.0) <= fence.at:
            fenced.add(peer.name)
        if fence is not None and peer.power is Power.ON and (peer.power_at or -1.0) > fence.at:
            fenced.discard(peer.name)  # powered on again (by an operator) since the fence
        asked = _get(prev.fence_requested, peer.name)
        if peer.alive or peer.name in fenced or (fence is not None and fence.outcome is FenceOutcome.OFF):
            failing.discard(peer.name)
        elif (
            fence is not None
            and fence.outcome is FenceOutcome.FAILED
            and not fence.ineffective
            and asked is not None
            and fence.at >= asked
        ):
            failing.add(peer.name)
    since = (prev.holding_since if prev.was_holding else now) if ev.holding else None
    yield_to, yield_since, spent, yielded_at = prev.yield_to, prev.yield_since, prev.yield_spent, prev.yielded_at
    ready_since = prev.ready_since
    target = next((p for p in ev.peers if p.name == yield_to), None)
    if not ev.holding:
        yield_to, yield_since, spent, yielded_at, ready_since = None, None, False, None, None
    elif target is None or not target.alive or (target.rule not in WAITING and not target.claims_vip):
        # It stopped waiting: a later wait gets a new yield.
        yield_to, yield_since, spent, ready_since = None, None, False, None
    return replace(
        prev,
        holding_since=since,
        lease_valid_until=valid_until,
        lease_maybe_until=maybe_until,
        highest_token=highest,
        silent_since=silent,
        dual_since=dual,
        fence_requested=requested,
        fenced_off=frozenset(fenced),
        fence_failing=frozenset(failing),
        yield_to=yield_to,
        yield_since=yield_since,
        yield_spent=spent,
        yielded_at=yielded_at,
        ready_since=ready_since,
    )


def _may_fence(state: PolicyState, peer: PeerView, cfg: PolicyConfig, now: float) -> bool:
    """A fence is due unless one is running, or one succeeded within the hold-down and the peer has not come
    back since (a failed one is retried after the power timeout)."""
    if peer.name not in cfg.fenceable or peer.name in state.fenced_off:
        return False
    asked = _get(state.fence_requested, peer.name)
    if asked is None:
        return True
    result = peer.fence
    if result is not None and result.at >= asked and result.outcome is FenceOutcome.RUNNING:
        return False
    if result is not None and result.at >= asked and result.outcome is FenceOutcome.FAILED:
        return now - result.at >= min(cfg.power_timeout, cfg.hold_down)
    # Back since the fence: heard again, or its BMC reads ON (powered on by an operator, possibly unheard
    # because it came back cut off; its keepalived may take the VIP again, so it may be fenced again).
    heard_back = peer.heard_at is not None and peer.heard_at > asked
    powered_back = peer.power is Power.ON and peer.power_at is not None and peer.power_at > asked
    return heard_back or powered_back or now - asked >= cfg.hold_down


def _fences_failed(state: PolicyState, peers: tuple[PeerView, ...]) -> list[PeerView]:
    """Peers whose fence (asked by this policy) failed and that have not come back since (`fence_failing`): not
    heard again, not fenced OFF since (nor confirmed off by an operator). A fence found ineffective (the peer read
    ON again inside the hold-down) is not a failed one: the lease, not the fence, keeps that peer out (README)."""
    return [peer for peer in peers if peer.name in state.fence_failing]


def _powered_on_unheard(peer: PeerView) -> bool:
    """Fenced OFF (or found ON again inside the hold-down), its BMC read ON since and not heard since: powered on
    by someone, booting or cut off. Its silence alone is no reason to power it off again (a booting node is
    silent until its agent runs, and that agent keeps its gate closed while it sees this node's lease or hears
    nobody): it is fenced again only on a sign that it holds the VIP (its VRRP adverts: only a master sends
    them). It no longer counts as OFF anywhere (`_remember` drops it from fenced_off on that read)."""
    result = peer.fence
    if result is None or not (result.outcome is FenceOutcome.OFF or result.ineffective):
        return False
    powered = peer.power is Power.ON and peer.power_at is not None and peer.power_at > result.at
    return powered and (peer.heard_at is None or peer.heard_at <= result.at)


def _storeless_silent(state: PolicyState, peer: PeerView, cfg: PolicyConfig, now: float) -> bool:
    """A fence without a token may reach this peer (rule 3): its last word says it held the VIP without a lease
    store answer (STORELESS), and it has been silent for a lease TTL since, so a lease it may still have had
    then has run out; and this node's race delay has passed on top (the agent's orchestrator does not wait it
    again), so that of two partitioned nodes the one with the shorter delay acts first, as for D3. A peer last
    seen with the store (H1…) may still renew a lease it holds: not fenced blind."""
    since = _get(state.silent_since, peer.name)
    waited = since is not None and now - since >= cfg.ttl + cfg.fence_delay
    return peer.alive is False and waited and peer.rule in STORELESS


def _expired_while_holding(state: PolicyState, cfg: PolicyConfig, now: float) -> bool:
    """A lease this node held, or, with none known during this hold, one it may have held (an acquisition whose
    answer never came), ran out during the current hold: past that, only a peer's word may keep the VIP here
    (rule 2). Acquisitions after a known lease do not extend it: the store may answer each with "free" (a
    read-only one never grants), and a lease granted unseen only makes the step-down early, never late."""
    since = state.holding_since
    if since is None:
        return False
    for until in (state.lease_valid_until, state.lease_maybe_until):
        if until is not None and since < until - cfg.safety:
            return until - cfg.safety <= now
    return False


def _confirms_backup(state: PolicyState, peer: PeerView) -> bool:
    """The peer's word that it is not master counts only if sent after this node took the VIP: an older
    frame may predate the peer's own takeover behind a cut VRRP path."""
    fresh = peer.heard_at is not None and state.holding_since is not None and peer.heard_at >= state.holding_since
    return bool(peer.alive) and not peer.claims_vip and fresh


def _recent_word(peer: PeerView, cfg: PolicyConfig, now: float) -> bool:
    """L2's proof that the lease holder is not master: its newest frame is at most one heartbeat interval old
    (half an interval more for the sender's timer and the link; the agent decides on the VIP event, before the
    holder's next frame). An older frame may predate the holder's own takeover behind a cut path, even one sent
    after this node took the VIP: both masters, one with the lease, for as long as the peer counts as alive."""
    return peer.heard_at is not None and now - peer.heard_at <= 1.5 * cfg.cycle


def _still_off(state: PolicyState, peer: PeerView, cfg: PolicyConfig, now: float) -> bool:
    """Fenced (or read OFF after its last heartbeat), and a power status read within deadtime still says OFF:
    proof enough for the failsafe."""
    if peer.name in state.fenced_off and peer.fence is not None and peer.fence.by_hand:
        return True  # an operator confirmed it off (no BMC could): their word stands until it is heard or reads ON
    fresh = peer.power_at is not None and now - peer.power_at <= cfg.deadtime
    return (peer.name in state.fenced_off or _seen_off(peer, cfg, now)) and peer.power is Power.OFF and fresh


def _seen_off(peer: PeerView, cfg: PolicyConfig, now: float) -> bool:
    """A power status read taken after the peer's newest heartbeat, within deadtime, says OFF: the peer is dead,
    whatever its last frame said (a BMC reads OFF only when the node's power is off)."""
    if peer.power is not Power.OFF or peer.power_at is None or now - peer.power_at > cfg.deadtime:
        return False
    return peer.heard_at is None or peer.power_at > peer.heard_at


def _advertising(peer: PeerView, cfg: PolicyConfig, now: float) -> bool:
    """Its VRRP adverts still arrive here (within 1.5 adverts): keepalived here stays BACKUP by itself."""
    return peer.adverts_at is not None and now - peer.adverts_at < cfg.cut_after


def _ranks_before(prio: int, name: str, other_prio: int, other_name: str) -> bool:
    """Higher priority first, then the smaller name: the order both sides compute alike (as `_winner`)."""
    return (-prio, name) < (-other_prio, other_name)


def start_wait_bound(cfg: PolicyConfig) -> float:
    """How long a node waits for a higher-ranked peer that is still starting (S1): its first full evidence round
    needs its heartbeats up or past deadtime, and its frame saying so needs a deadtime more; then keepalived
    there needs a master-down interval. A peer stuck starting longer than that is not waited for."""
    return 2 * cfg.deadtime + cfg.master_down


def handover_bound(cfg: PolicyConfig) -> float:
    """How long a holder yields: the waiting peer hears the yield and opens its gate (a heartbeat and a cycle,
    within deadtime), keepalived there hears a first advert, waits preempt_delay and then its master-down
    interval (this node's own is the longer: lower priority, larger skew), and its advert reaches this node."""
    return cfg.deadtime + cfg.preempt_delay + cfg.master_down + 2 * cfg.advert_int


def _yield_target(state: PolicyState, ev: Evidence, alive: list[PeerView]) -> PeerView | None:
    """The live higher-priority peer this holder hands the VIP to: the first in rank among those waiting to
    preempt it (P1/P2), or the one it yielded to that now holds the VIP too; never one of worse quorum."""
    quorum = 1 if ev.reference_quorate else 0
    candidates = [
        p
        for p in alive
        if p.priority > ev.priority
        and (p.rule in WAITING or (p.name == state.yield_to and p.claims_vip))
        and (1 if p.quorate else 0) >= quorum
    ]
    return min(candidates, key=lambda p: (-p.priority, p.name), default=None)


def _silent_holder(
    previous: PolicyState, holder: PeerView, expires_at: float | None, cfg: PolicyConfig, now: float
) -> str | None:
    """Why a backup must keep keepalived from taking the VIP of this lease holder (rule L5), or None.

    The holder (not read OFF, not fenced; the caller checks) is silent: no heartbeat for two heartbeat
    intervals (when the agent starts reading its BMC) and no advert within 1.5 adverts (`cut_after`). If it
    is alive, merely cut off, it keeps the VIP until its lease runs out (H2), and keepalived here, taking the
    VIP at master-down while that lease is valid, would be vetoed at once (L1): a dual master of a few ms and
    a FAULT whose priority-0 advert hands the VIP straight back, every master-down until the lease expires.

    But a closed gate puts keepalived in FAULT, and leaving FAULT restarts its master-down timer: a close
    followed by a BMC read of OFF costs a whole master-down interval. So:
    - nothing closes when keepalived would fire only after the lease ran out and the agent has re-read it:
      half a master-down interval after the expiry, at most the lease's safety margin (the slack this design
      already grants the store's answers), at least two decision cycles. Keepalived fires `master_down`
      after the later of the holder's last advert seen here (its last heartbeat when adverts are not seen)
      and the gate's last opening, or after a reopening now when the gate is closed. So a closed gate
      reopens once master-down from now falls that long after the lease's expiry: keepalived takes the VIP
      after the expiry, without a veto (an expired view not yet re-read would close the gate too: H6). At
      VRRPv2 (3.6 s) with a 3 s TTL, the lease of a holder that stopped advertising runs out first: no close;
    - otherwise the gate closes only in the last decision cycle before keepalived fires, unless the BMC
      has read OFF by then (then L4 keeps the VIP keepalived takes, at keepalived's own speed). An ON read
      earlier proves nothing for failover: a node whose power is being cut still reads ON until the cut
      completes (the lab's power-off takes a few hundred ms from the links going down to the BMC reading
      OFF), and closing on it would turn an OFF read a moment later into a close/reopen. An isolated holder is
      closed out just as well at the last moment (a cycle that comes too late lets keepalived take the VIP
      once: L1 vetoes it, and the closed gate then stays closed);
    - a gate already closed stays closed (keeping it closed costs nothing more: keepalived waits its
      master-down interval after any reopening).
    So a dead holder that reads OFF before master-down never causes a close/reopen; one that reads OFF only
    after it costs what a veto of the VIP taken would have (L1), without the VIP taken.

    Silence counts from the holder's newest heartbeat or advert; a holder whose last frame said it was
    stopping cleanly (gates closed, VIPs released) is not waited for.
    """
    if holder.left:
        return None
    if holder.heard_at is not None and now - holder.heard_at <= 2 * cfg.cycle:
        return None
    if _advertising(holder, cfg, now):
        return None  # its keepalived still advertises: keepalived here stays BACKUP by itself
    basis = holder.adverts_at if holder.adverts_at is not None else holder.heard_at
    if previous.gate is Gate.CLOSED:
        fires_at = now + cfg.master_down
    else:
        starts = [t for t in (basis, previous.opened_at) if t is not None]
        fires_at = max(starts) + cfg.master_down if starts else now
    reread = max(2 * cfg.cycle, min(cfg.master_down / 2, cfg.safety))
    if expires_at is not None and expires_at <= fires_at - reread:
        return None  # the lease runs out (and is re-read) before keepalived would take the VIP: nothing to veto
    if previous.gate is Gate.CLOSED:
        return "gate kept closed"
    if now >= fires_at - cfg.cycle:
        left = max(0.0, fires_at - now) * 1000
        return f"keepalived's master-down due in {left:.0f} ms and no BMC read OFF"
    return None


def initial_state(highest_token: int = 0, resumed: Resumed | None = None) -> PolicyState:
    """The state an agent starts from: the highest token it persisted and, after a restart, the previous
    agent's last decision; a lease it held is counted valid until the expiry that agent knew (H4, D4), and a
    VIP it held as held since then (a restart does not renew H3's window)."""
    until = resumed.lease_until if resumed is not None and resumed.lease_token is not None else None
    since = resumed.holding_since if resumed is not None and resumed.holding else None
    return PolicyState(
        highest_token=highest_token,
        resumed=resumed,
        lease_valid_until=until,
        was_holding=since is not None,
        holding_since=since,
        fence_failing=frozenset(resumed.fence_failing) if resumed is not None else frozenset(),
    )


def may_resume(resumed: Resumed, gate_found: Gate | None, cfg: PolicyConfig, now: float) -> bool:
    """The part of S0's keep that needs no evidence: the gate found open, the previous agent's last decision
    open and younger than TTL − safety, and a lease it held still valid past the safety margin. The agent
    checks it before anything else at start, and closes the gate at once when it fails."""
    age = now - resumed.written_at
    if gate_found is not Gate.OPEN or resumed.gate is not Gate.OPEN or not 0 <= age < cfg.ttl - cfg.safety:
        return False
    return not resumed.holding or (resumed.lease_until is not None and now < resumed.lease_until - cfg.safety)


def _keeps_found_open(resumed: Resumed | None, ev: Evidence, cfg: PolicyConfig, now: float) -> str | None:
    """Why an open gate found at start may stay open until the first full evidence round, or None.

    Open on disk means the previous agent opened it and keepalived has not restarted since (`init_file 1
    overwrite` writes it closed). Kept only while that agent's last decision was open and younger than
    TTL − safety (it may have died long ago), and, when holding, while its own lease is still valid past the
    safety margin (rule 2) and no peer's lease answer contradicts it.
    """
    if resumed is None or not may_resume(resumed, ev.gate_found, cfg, now):
        return None
    age = now - resumed.written_at
    if not ev.holding:
        return f"{resumed.rule} {age:.1f}s ago, not holding the VIP"
    lease = ev.lease
    if lease.status is LeaseStatus.PEER:
        return None
    until = lease.expires_at if lease.status is LeaseStatus.MINE else resumed.lease_until
    if not resumed.holding or resumed.lease_token is None or until is None or now >= until - cfg.safety:
        return None
    return f"{resumed.rule} {age:.1f}s ago with the lease (token {resumed.lease_token}) valid {until - now:.1f}s more"


def _winner(ev: Evidence, cfg: PolicyConfig, rivals: list[PeerView]) -> str:
    """Deterministic tie-break both sides compute alike: higher priority, then the smaller name."""
    contenders = [(ev.priority, cfg.node), *((p.priority, p.name) for p in rivals)]
    return min(contenders, key=lambda c: (-c[0], c[1]))[1]


def decide(previous: PolicyState, evidence: Evidence, config: PolicyConfig, now: float) -> Decision:
    ev, cfg = evidence, config
    state = _remember(previous, ev, cfg, now)
    actions: list[Action] = []

    def out(gate: Gate, rule: str, reason: str) -> Decision:
        nonlocal state
        if gate is Gate.OPEN and ev.holding and previous.dual_since and not state.dual_since:
            actions.append(SendGarp())  # the other side stepped down: make clients forget its MAC
        if gate is Gate.OPEN and ev.holding and state.fenced_off - previous.fenced_off:
            actions.append(SendGarp())
        state = replace(state, gate=gate, rule=rule, was_holding=ev.holding)
        if gate is Gate.OPEN and previous.gate is Gate.CLOSED:
            state = replace(state, opened_at=now)
        if any(isinstance(a, AcquireLease) for a in actions):
            state = replace(state, lease_maybe_until=now + cfg.ttl)
        return Decision(gate, tuple(dict.fromkeys(actions)), reason, rule, state)

    def fence(peer: PeerView, token: int | None, why: str) -> None:
        nonlocal state
        if _powered_on_unheard(peer) and not _advertising(peer, cfg, now):
            return  # booting after its fence: the lease keeps it out; only a sign it holds the VIP escalates
        if _may_fence(state, peer, cfg, now):
            actions.append(Fence(peer.name, token, why))
            state = replace(state, fence_requested=_put(state.fence_requested, peer.name, now))

    # S0 -------------------------------------------------------------------------------------------------
    if not state.started:
        ready = (
            ev.reference_quorate is not None
            and ev.lease.status is not LeaseStatus.PENDING
            and all(p.alive is not None for p in ev.peers)
        )
        cut_off = ev.lease.status is LeaseStatus.UNKNOWN and not any(p.alive for p in ev.peers)
        if not ready or cut_off:
            kept = _keeps_found_open(state.resumed, ev, cfg, now)
            if kept is not None:
                return out(Gate.OPEN, "S0", f"agent restarted: gate kept open as found ({kept})")
            # Once closed, never reopened before the first full round: the record vouched for the gate as found.
            state = replace(state, resumed=None)
        if not ready:
            return out(
                Gate.CLOSED,
                "S0",
                "start-up: waiting for the first reference round, lease answer and heartbeats",
            )
        # A node that starts cut off from everything (no lease answer, no peer heard) may have been fenced and
        # powered on again where nobody can see it: the peer still counts it OFF. It waits for shared evidence.
        if cut_off:
            return out(
                Gate.CLOSED,
                "S0",
                "start-up: cut off from the lease store and every peer; waiting for either before opening",
            )
        state = replace(state, started=True)

    # A peer whose BMC read OFF after its newest heartbeat is dead even while its deadtime runs.
    off = {p.name for p in ev.peers if _seen_off(p, cfg, now)}
    alive = [p for p in ev.peers if p.alive and p.name not in off]
    lease = ev.lease
    mine = lease.status is LeaseStatus.MINE
    lease_valid_mine = mine and lease.expires_at is not None and now < lease.expires_at - cfg.safety
    seed = state.highest_token

    # Q1 -------------------------------------------------------------------------------------------------
    if ev.reference_quorate is False:
        better = [p.name for p in alive if p.quorate]
        if better or not alive:
            if mine:
                actions.append(ReleaseLease())
            where = f"{', '.join(better)} still reaches it" if better else "no peer is heard"
            return out(Gate.CLOSED, "Q1", f"reference quorum lost here and {where}; gate closed")

    # F1 -------------------------------------------------------------------------------------------------
    # A fence that failed holds, holding or not: the silent peer may have the VIP, and reopening (B2, B3) would
    # make keepalived here master beside it at every master-down. The gate stays closed until a fence succeeds
    # (retried with the lease's token, or without one once any lease the peer held has run out), the peer is
    # heard again, or an operator confirms it off by hand. The lease is kept meanwhile (no B1 release).
    failed = _fences_failed(state, ev.peers) if cfg.on_fence_failure == "close" else []
    if failed:
        for peer in failed:
            if lease_valid_mine:
                fence(peer, lease.token, "retrying a failed fence: still silent on every heartbeat medium")
            elif lease.status is LeaseStatus.UNKNOWN and _storeless_silent(state, peer, cfg, now):
                fence(peer, None, "retrying a failed fence without the lease store: silent for a lease TTL")
        if lease.status is LeaseStatus.FREE:
            actions.append(AcquireLease(seed))  # the retry then carries a token
        said = failed[0].fence.proof if failed[0].fence is not None and failed[0].fence.proof else "no proof of OFF"
        names = ", ".join(p.name for p in failed)
        return out(
            Gate.CLOSED,
            "F1",
            f"fencing {names} failed ({said}); gate closed until a fence succeeds, {names} is heard again or an "
            f"operator confirms it off (keepalived-arbiter fence NODE confirm-off --yes)",
        )

    # S1 -------------------------------------------------------------------------------------------------
    # Nodes starting together: keepalived alone elects the highest priority, every node's master-down timer
    # starting at keepalived's start. With the arbiter each timer starts when that node's gate opens: a
    # lower-priority node whose agent opened first (by more than the skew difference, 20 ms at VRRPv3/0.1 s)
    # would win the election, then hand the VIP over (P1/Y1): a move, and keepalived's own preemption overlap.
    # So a node that holds nothing waits, gate closed, while a higher-ranked live peer is still starting.
    if not ev.holding:
        # Starting: still in S0; or, while this node waits for it or itself just left S0, out of S0 with its gate
        # open but keepalived there not yet out of FAULT (on a busy host keepalived reads the gate late): its
        # master-down timer has not started. (A FAULT of its keepalived later on is a failover, not a start.)
        fresh = state.start_wait_since is not None or not previous.started
        starting = [
            p.name
            for p in alive
            if (p.rule == "S0" or (fresh and p.gate_open is True and p.state is VrrpState.FAULT))
            and not p.claims_vip
            and _ranks_before(p.priority, p.name, ev.priority, cfg.node)
        ]
        since = state.start_wait_since if starting else None
        state = replace(state, start_wait_since=since if since is not None or not starting else now)
        if starting and now - (since if since is not None else now) < start_wait_bound(cfg):
            if mine:
                actions.append(ReleaseLease())
            return out(
                Gate.CLOSED,
                "S1",
                f"{', '.join(starting)} (higher priority) still starting; gate closed until it has decided, "
                "so that keepalived elects it as it would alone",
            )

    # P3 -------------------------------------------------------------------------------------------------
    # The handover's last step: keepalived here preempted a holder that yields. Its lease is released or about
    # to be (a late answer): L1 and D2 must not veto the one move the handover was for.
    if ev.holding:
        yielder = next((p for p in alive if p.rule in YIELDING and p.priority < ev.priority), None)
        opened_at = state.handover_at
        if yielder is None and opened_at is not None and now - opened_at <= handover_bound(cfg):
            # It stepped down first (Y3) and was BACKUP again (B2) before keepalived here took the VIP: the lease it
            # released may still be shown as its own by a read made before the release.
            yielder = next(
                (p for p in alive if p.name == state.handover_from and not p.claims_vip and p.name == lease.holder),
                None,
            )
        if yielder is not None and (
            lease.status is LeaseStatus.FREE or (lease.status is LeaseStatus.PEER and lease.holder == yielder.name)
        ):
            actions.append(AcquireLease(seed))
            return out(Gate.OPEN, "P3", f"handover: holding the VIP {yielder.name} yields; acquiring the lease")

    # L1 / L2 / L3 ---------------------------------------------------------------------------------------
    holder_valid = lease.expires_at is None or now < lease.expires_at
    if lease.status is LeaseStatus.PEER and holder_valid and lease.holder != cfg.node:
        holder = next((p for p in ev.peers if p.name == lease.holder), None)
        token = f" (token {lease.token})" if lease.token is not None else ""
        if holder is not None and holder.alive and holder.rule == "F1":
            # Three nodes: the holder keeps the lease while its failed fence holds it closed, so that no node takes
            # the VIP beside the silent one; this node must not take it either (L2 would hand it over, B2 open).
            return out(
                Gate.CLOSED,
                "F2",
                f"lease holder {lease.holder}{token} holds a failed fence (F1): gate closed, as its is, until that "
                "fence succeeds, the silent node is heard or an operator confirms it off there",
            )
        if ev.holding and holder is not None and holder.name in off:
            # The holder is powered off: its lease cannot be in use. Keep what keepalived took; the lease is
            # acquired as soon as it runs out (H3), and the holder is fenced (already off) with the token (H1).
            return out(
                Gate.OPEN,
                "L4",
                f"lease held by {lease.holder}{token}, but its BMC read OFF after its last heartbeat; "
                "keeping the VIP until the lease runs out",
            )
        if ev.holding:
            if holder is not None and holder.alive and not holder.claims_vip and _recent_word(holder, cfg, now):
                actions.append(AcquireLease(seed))
                return out(
                    Gate.OPEN,
                    "L2",
                    f"handover: lease holder {lease.holder}{token} confirms {holder.state.value}; acquiring",
                )
            return out(Gate.CLOSED, "L1", f"lease held by {lease.holder}{token}; gate closed")
        stopped = holder.adverts_stopped_at if holder is not None else None
        if stopped is not None and lease.expires_at is not None:
            # The holder renews with its own TTL: judged by this node's, a peer with other timings is misread.
            renewed_at = lease.expires_at - (
                holder.timings.ttl if holder is not None and holder.timings is not None else cfg.ttl
            )
            if now - stopped >= cfg.cut_after and renewed_at > stopped + cfg.advert_int:
                seen = holder is not None and holder.adverts_at is not None
                last = "last VRRP advert" if seen else "listening start (no VRRP advert from it seen since)"
                return out(
                    Gate.CLOSED,
                    "L3",
                    f"lease renewed by {lease.holder}{token} {renewed_at - stopped:.1f}s after its {last}: "
                    "VRRP path cut; gate closed before master-down",
                )
        if holder is not None and holder.name not in state.fenced_off | off:
            why = _silent_holder(previous, holder, lease.expires_at, cfg, now)
            if why is not None:
                return out(
                    Gate.CLOSED,
                    "L5",
                    f"lease held by {lease.holder}{token}, silent and not read OFF ({why}): gate closed until the "
                    "lease expires, the holder reads OFF or releases it",
                )

    # V1 -------------------------------------------------------------------------------------------------
    if not ev.holding:
        for peer in alive:
            stopped = peer.adverts_stopped_at
            if peer.state is VrrpState.MASTER and stopped is not None and peer.heard_at is not None:
                gap = peer.heard_at - stopped
                if gap >= cfg.cut_after:
                    if mine:
                        actions.append(ReleaseLease())
                    what = (
                        f"its VRRP adverts stopped {gap:.1f}s before that"
                        if peer.adverts_at is not None
                        else f"no VRRP advert from it was seen in the {gap:.1f}s of listening before that"
                    )
                    return out(
                        Gate.CLOSED,
                        "V1",
                        f"{peer.name} says MASTER but {what}: VRRP path cut; gate closed before master-down",
                    )

    # P1 / P2 --------------------------------------------------------------------------------------------
    # keepalived here would preempt a lower-priority holder as soon as the gate opens, and L1 would then veto
    # the new hold while the holder has not yet said BACKUP: its FAULT hands the VIP back (a flap loop). So
    # wait, gate closed, until the holder yields; only the first-ranked waiting node opens.
    claimants = [p for p in alive if p.claims_vip]
    if not ev.holding and not cfg.nopreempt and len(claimants) == 1 and claimants[0].priority < ev.priority:
        held = claimants[0]
        its_lease = lease.status is LeaseStatus.PEER and lease.holder == held.name and holder_valid
        if its_lease or lease.status is LeaseStatus.FREE:
            first = [p for p in alive if p.rule in WAITING and _ranks_before(p.priority, p.name, ev.priority, cfg.node)]
            if held.rule in ("Y1", "Y3") and not first:
                state = replace(state, handover_from=held.name, handover_at=now)
                return out(Gate.OPEN, "P2", f"handover: {held.name} yields the VIP; gate open, keepalived preempts it")
            why = f"{first[0].name} takes it over first" if first else f"waiting for {held.name} to yield it"
            return out(Gate.CLOSED, "P1", f"handover: {held.name} (priority {held.priority}) holds the VIP; {why}")

    # P4 -------------------------------------------------------------------------------------------------
    # The same preemption with a holder this node cannot hear on any heartbeat medium but sees advertising
    # (only a VRRP master advertises): no handover can be agreed, and keepalived here would take the VIP beside
    # it, vetoed only once a lease answer names the holder. So wait, gate closed, while its adverts last; when
    # they stop (it died, or stepped down), the gate opens and keepalived here takes over.
    if not ev.holding and not cfg.nopreempt and not mine:
        advertising = [
            p
            for p in ev.peers
            if not p.alive
            and p.name not in off
            and p.heard_at is not None
            and p.priority < ev.priority
            and _advertising(p, cfg, now)
            and p.adverts_at is not None
            # Still advertising a deadtime after its last frame: not a dead node (heartbeats and adverts stop
            # together then, and failover must stay keepalived's own), a cut heartbeat path.
            and p.adverts_at >= p.heard_at + cfg.deadtime
        ]
        if advertising:
            held = advertising[0]
            return out(
                Gate.CLOSED,
                "P4",
                f"{held.name} (priority {held.priority}) advertises as VRRP master but is not heard on any heartbeat "
                "medium: no handover can be agreed; gate closed while its adverts last",
            )

    # Y1 / Y2 --------------------------------------------------------------------------------------------
    target = _yield_target(state, ev, alive) if ev.holding else None
    if target is not None and target.claims_vip:
        # It took the VIP (keepalived preempted this node): keepalived here steps down on its advert; closing
        # the gate after one advert bounds the overlap if that advert does not arrive.
        state = replace(state, yield_to=target.name, yielded_at=now)
        if mine:
            actions.append(ReleaseLease())
        since = _get(state.dual_since, target.name)
        if since is not None and now - since >= cfg.advert_int:
            return out(Gate.CLOSED, "Y2", f"handover: {target.name} holds the VIP and this node has not stepped down")
        return out(Gate.OPEN, "Y1", f"handover: {target.name} holds the VIP; keepalived steps this node down")
    if target is not None and lease.status in (LeaseStatus.MINE, LeaseStatus.FREE):
        fresh = state.yield_to != target.name or state.yield_since is None
        began = now if fresh else state.yield_since
        spent = state.yield_spent and not fresh
        # Holding without the lease rests on every peer's word that it is not master (rule 2, as H5).
        confirmed = all(_confirms_backup(state, p) or _still_off(state, p, cfg, now) for p in ev.peers)
        if confirmed and not spent and began is not None:
            bound = handover_bound(cfg)
            if now - began < bound:
                ready = target.rule == "P2" and target.gate_open is True and target.state is VrrpState.BACKUP
                since = (now if fresh or state.ready_since is None else state.ready_since) if ready else None
                state = replace(
                    state, yield_to=target.name, yield_since=began, yield_spent=False, yielded_at=now, ready_since=since
                )
                if mine:
                    actions.append(ReleaseLease())
                if since is not None and lease.status is LeaseStatus.FREE and now - since >= cfg.preempt_delay:
                    # keepalived would preempt this node after its master-down interval and hold the VIP beside
                    # it until its advert arrives here (a few ms of dual master). Stepping down first instead
                    # sends priority 0: keepalived there takes the VIP after its skew time, nobody holds it twice.
                    return out(
                        Gate.CLOSED,
                        "Y3",
                        f"handover: {target.name} is ready (BACKUP, gate open) and the lease is released; "
                        "stepping down first so that it takes the VIP with no overlap",
                    )
                return out(
                    Gate.OPEN,
                    "Y1",
                    f"handover: yielding to {target.name} (priority {target.priority}); lease released, VIP kept "
                    f"until keepalived there preempts (at most {began + bound - now:.1f}s more)",
                )
            state = replace(state, yield_to=target.name, yield_since=began, yield_spent=True)

    # D1 / D2 / D3 ---------------------------------------------------------------------------------------
    rivals = [p for p in alive if p.claims_vip] if ev.holding else []
    own_valid = state.lease_valid_until is not None and now < state.lease_valid_until - cfg.safety
    if rivals:
        if not previous.dual_since:
            actions.append(Alert("split-brain", f"VIP also held by {', '.join(p.name for p in rivals)}"))
        if lease_valid_mine or (lease.status is LeaseStatus.UNKNOWN and own_valid):
            for peer in rivals:
                since = _get(state.dual_since, peer.name) or now
                if now - since >= cfg.deadtime:
                    fence(peer, lease.token if mine else None, "dual master: did not step down for the lease")
            token = f" (token {lease.token})" if lease.token is not None else ""
            names = ", ".join(p.name for p in rivals)
            return out(Gate.OPEN, "D1", f"dual master with {names}: lease is mine{token}; they must step down")
        claimant = next((p for p in rivals if p.lease_holder == p.name), None)
        if claimant is not None:
            return out(Gate.CLOSED, "D2", f"dual master: {claimant.name} reports holding the lease; gate closed")
        if lease.status is LeaseStatus.FREE:
            actions.append(AcquireLease(seed))
        winner = _winner(ev, cfg, rivals)
        if winner != cfg.node:
            return out(Gate.CLOSED, "D3", f"dual master without a lease: {winner} wins on priority/name; gate closed")
        if _expired_while_holding(state, cfg, now):
            # Rule 2: winning on priority does not extend a lease that ran out under this hold.
            return out(Gate.CLOSED, "D4", "dual master, own lease expired while holding and unconfirmed; self-demotion")
        for peer in rivals:
            since = _get(state.dual_since, peer.name) or now
            if now - since >= cfg.deadtime + cfg.ttl + cfg.fence_delay:
                fence(peer, None, "dual master without a lease: did not step down")
        names = ", ".join(p.name for p in rivals)
        return out(Gate.OPEN, "D3", f"dual master without a lease: this node wins over {names}; they must step down")

    if ev.holding:
        # A silent peer may hold the VIP even if its last word was BACKUP: its agent may be stuck while its
        # keepalived, with the gate left open, takes the VIP behind a cut VRRP path. Only fencing bounds that.
        # A peer that stopped cleanly (gates closed, VIPs released, then said so) is not fenced for its silence.
        silent = [p for p in ev.peers if p.alive is False and p.name not in state.fenced_off and not p.left]
        # H1 / H2 -------------------------------------------------------------------------------------------
        if mine and lease_valid_mine:
            for peer in silent:
                fence(peer, lease.token, "silent on every heartbeat medium while this node holds the lease")
            return out(Gate.OPEN, "H1", f"holding the VIP with the lease (token {lease.token})")
        if mine:
            return out(Gate.CLOSED, "H2", "lease not renewed and within the safety margin of expiry; self-demotion")
        # H3 ------------------------------------------------------------------------------------------------
        if lease.status is LeaseStatus.FREE:
            actions.append(AcquireLease(seed))
            # Acquisition gets as long as a lease would last; a store that answers but never grants (a
            # read-only replica) is then treated like an unreachable one (H4-H6).
            # A yield released the lease on purpose: the window to take it back starts at its end.
            start = max(
                t
                for t in (state.holding_since if state.holding_since is not None else now, state.yielded_at)
                if t is not None
            )
            held_for = now - start
            if own_valid or held_for < cfg.ttl - cfg.safety:
                return out(Gate.OPEN, "H3", f"lease free; acquiring with the token seeded above {seed}")
        # H4 / H5 / H6 --------------------------------------------------------------------------------------
        if own_valid and state.lease_valid_until is not None:
            left = state.lease_valid_until - now
            return out(Gate.OPEN, "H4", f"lease store unreachable; own lease valid for {left:.1f}s more")
        confirmed = all(_confirms_backup(state, p) or _still_off(state, p, cfg, now) for p in ev.peers)
        if confirmed:
            return out(Gate.OPEN, "H5", "failsafe: lease store unreachable, every peer confirms it is not master")
        # Without the store nothing else ends this: fence each peer silent on every medium once any lease it held
        # has run out (a TTL of silence, then this node's race delay), and on its confirmed OFF
        # H5 opens again (the failsafe).
        for peer in silent:
            if _storeless_silent(state, peer, cfg, now) and not _advertising(peer, cfg, now):
                fence(peer, None, "silent on every medium with the lease store unreachable")
        names = ", ".join(p.name for p in ev.peers if not p.alive) or "a peer"
        return out(Gate.CLOSED, "H6", f"lease store unreachable, own lease expired and {names} silent; gate closed")

    # B3 -------------------------------------------------------------------------------------------------
    # A peer silent on every medium whose last word claimed the VIP may still hold it (its agent stuck, its
    # keepalived master behind a cut path). Fence it with the lease before keepalived's master-down makes this
    # node master beside it; with TTL + fence time below master-down the fence lands first.
    # While its adverts arrive, keepalived here stays BACKUP (no master-down to beat): a master whose heartbeats
    # are cut is not fenced for that, least of all on a lease answer a store restart may since have voided.
    settled = state.fenced_off | off
    claimants = [
        p
        for p in ev.peers
        if p.alive is False and p.claims_vip and p.name not in settled and not _advertising(p, cfg, now)
    ]
    if claimants:
        names = ", ".join(p.name for p in claimants)
        if lease_valid_mine:
            for peer in claimants:
                fence(peer, lease.token, "silent on every heartbeat medium; its last word claimed the VIP")
            return out(Gate.OPEN, "B3", f"{names} silent, last seen holding the VIP: fencing with token {lease.token}")
        if lease.status is LeaseStatus.FREE:
            actions.append(AcquireLease(seed))
            return out(Gate.OPEN, "B3", f"{names} silent, last seen holding the VIP: acquiring the lease to fence")
        if lease.status is LeaseStatus.UNKNOWN:
            # No store, no token: keepalived here would take the VIP at master-down and H6 would close at once (a
            # VIP flash every master-down). Stay closed; fence without a token once any lease the claimant held
            # has run out, after this node's race delay; its confirmed OFF settles it and B2 opens.
            for peer in claimants:
                if _storeless_silent(state, peer, cfg, now):
                    fence(peer, None, "silent on every medium, its last word claimed the VIP; lease store unreachable")
            return out(
                Gate.CLOSED,
                "B4",
                f"{names} silent, last seen holding the VIP, lease store unreachable: gate closed until it is "
                "fenced OFF without a token (after a lease TTL of silence and the race delay) or heard again",
            )

    # B1 / B2 --------------------------------------------------------------------------------------------
    if mine:
        actions.append(ReleaseLease())
        return out(Gate.OPEN, "B1", "not holding the VIP; releasing the lease")
    return out(Gate.OPEN, "B2", "backup: gate open, keepalived decides")


# Maintenance mode (`keepalived-arbiter pause`): the actions a paused agent does not carry out.
WITHHELD_WHEN_PAUSED = (AcquireLease, ReleaseLease, Fence)


def withhold(
    previous: PolicyState, evidence: Evidence, config: PolicyConfig, now: float, decision: Decision, gate: Gate
) -> tuple[Decision, tuple[Action, ...]]:
    """Maintenance mode: `decision` (what `decide` returned for the same arguments) as a paused agent carries it
    out — the gate held at `gate`, no fence, no lease acquired or released — and the actions withheld.

    The state returned forgets the withheld actions: no fence counts as requested and no acquisition as maybe
    granted (D4 would otherwise demote a holder whose acquisition was never sent). So at resume `decide` asks at
    once for whatever is still due, which is what the paused agent logged it would do.
    """
    withheld = tuple(a for a in decision.actions if isinstance(a, WITHHELD_WHEN_PAUSED))
    kept = tuple(a for a in decision.actions if not isinstance(a, WITHHELD_WHEN_PAUSED))
    state = replace(decision.state, gate=gate, fence_requested=previous.fence_requested)
    if any(isinstance(a, AcquireLease) for a in withheld):
        state = replace(state, lease_maybe_until=_remember(previous, evidence, config, now).lease_maybe_until)
    return replace(decision, gate=gate, actions=kept, state=state), withheld
