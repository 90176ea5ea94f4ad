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
| L4  | holding, lease held by a peer whose BMC read OFF after its newest    | open   |                         |
|     | heartbeat (dead: its lease is not in use; failover at keepalived's   |        |                         |
|     | speed, the lease is taken when it runs out)                          |        |                         |
| L1  | holding, lease held by a peer that is not confirmed BACKUP           | closed |                         |
| L2  | holding, lease held by a peer that confirms BACKUP (handover)        | open   | acquire (when released) |
| L3  | not holding, lease renewed by its holder after its adverts stopped   | closed |                         |
|     | (holder alive, VRRP path cut: close before master-down)              |        |                         |
| V1  | not holding, a live peer says MASTER 1.5 adverts after its last      | closed |                         |
|     | advert seen here (VRRP path cut: close before master-down)           |        |                         |
| D1  | holding, a live peer also holds, lease mine (or still valid)         | open   | fence it if it has not  |
|     |                                                                      |        | stepped down in deadtime|
| D2  | holding, a live peer also holds and reports the lease as its own     | closed |                         |
| D3  | holding, a live peer also holds, lease free or store unreachable:    | winner | winner: acquire; fence  |
|     | higher priority, then lower name wins                                | open   | after deadtime + delay  |
| D4  | D3's winner whose own lease (or one an unanswered acquisition may    | closed |                         |
|     | have got) expired during this hold (rule 2)                          |        |                         |
| H1  | holding, lease mine and valid                                        | open   | fence silent peers      |
|     |                                                                      |        | (token), unless a peer  |
|     |                                                                      |        | said it left cleanly    |
| H2  | holding, lease mine but within safety margin of expiry (renewals     | closed |                         |
|     | failing): self-demotion before TTL − safety                          |        |                         |
| H3  | holding, lease free (expired, or Redis restarted empty), for at most | open   | acquire (seeded)        |
|     | TTL − safety unless the own lease is still valid; then as H4-H6      |        |                         |
| H4  | holding, store unreachable (or not granting), own lease still valid  | open   |                         |
| H5  | holding, store unreachable, every peer confirms BACKUP or is fenced  | open   |                         |
|     | OFF (failsafe)                                                       |        |                         |
| H6  | holding, store unreachable, lease expired, a peer silent             | closed | with a live peer:       |
|     |                                                                      |        | fence after TTL + delay |
| F1  | fencing a peer failed and on_failure = "close"                       | closed | retry after timeout     |
| B3  | not holding, a peer silent on every medium last claimed the VIP:     | open   | acquire; fence it       |
|     | fence it with the lease before keepalived's master-down fires        |        | (token)                 |
| B1  | not holding, lease mine                                              | open   | release lease           |
| B2  | not holding                                                          | open   |                         |

How the safety rules of DESIGN.md follow:
1. No dual master while shared evidence can tell: the lease (L1, D1, D2, L3) or a heartbeat (V1, D2, D3)
   decides before or right after keepalived adds the VIP. Cut off from everything, the overlap ends when the
   lease expires (H2/H6 on the cut-off node) or the fence confirms OFF (H1 on the other).
2. No VIP past lease expiry: H2 and H6 close before TTL − safety; H4/H5 (failsafe) need the peer's word.
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
    "L1": "holding while the lease is held by a peer: gate closed",
    "L2": "holding while the lease holder confirms BACKUP (handover): open, acquiring when released",
    "L3": "backup, lease renewed by its holder after its adverts stopped (VRRP cut): gate closed",
    "L4": "holding, lease held by a peer whose BMC read OFF after its last heartbeat: open (the holder is dead)",
    "V1": "backup, peer says MASTER but its adverts stopped (VRRP cut): gate closed before master-down",
    "D1": "dual master, lease mine: keep the VIP, the peer must step down (fenced if it does not)",
    "D2": "dual master, the peer reports holding the lease: gate closed",
    "D3": "dual master without a lease: priority then name decides; the winner fences a peer that stays",
    "D4": "dual master without a lease, own lease expired during this hold: the winner self-demotes too",
    "H1": "holding with a valid lease: open; a silent peer last seen holding is fenced",
    "H2": "lease within the safety margin of expiry and not renewed: self-demotion, gate closed",
    "H3": "holding, lease free (expired or store restarted empty): open, acquiring for up to TTL − safety",
    "H4": "holding, store unreachable, own lease still valid: open",
    "H5": "holding, store unreachable, every peer confirms BACKUP or is fenced OFF (failsafe): open",
    "H6": "holding, store unreachable, lease expired, a peer silent: gate closed",
    "F1": "fencing a peer failed (on_failure = close): gate closed, fence retried",
    "B1": "backup holding a stale lease: open, lease released",
    "B3": "backup, a silent peer last claimed the VIP: acquire the lease and fence it before master-down",
    "B2": "backup: gate open, keepalived decides",
}


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
    fenced = set(prev.fenced_off)
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
    since = (prev.holding_since if prev.was_holding else now) if ev.holding else None
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


def _fence_failed(state: PolicyState, peers: tuple[PeerView, ...]) -> PeerView | None:
    for peer in peers:
        asked = _get(state.fence_requested, peer.name)
        if (
            asked is not None
            and peer.fence is not None
            and peer.fence.outcome is FenceOutcome.FAILED
            and peer.fence.at >= asked
            and not peer.alive
            and peer.name not in state.fenced_off
        ):
            return peer
    return None


def _expired_while_holding(state: PolicyState, cfg: PolicyConfig, now: float) -> bool:
    """A lease this node held, or may have held (an acquisition whose answer never came), ran out during the
    current hold: past that, only a peer's word may keep the VIP here (rule 2)."""
    known = [t for t in (state.lease_valid_until, state.lease_maybe_until) if t is not None]
    since = state.holding_since
    until = max(known) if known else None
    return until is not None and since is not None and since < until - cfg.safety <= now


def _confirms_backup(state: PolicyState, peer: PeerView) -> bool:
    """The peer's word that it is not master counts only if sent after this node took the VIP: an older
    frame may predate the peer's own takeover behind a cut VRRP path."""
    fresh = peer.heard_at is not None and state.holding_since is not None and peer.heard_at >= state.holding_since
    return bool(peer.alive) and not peer.claims_vip and fresh


def _still_off(state: PolicyState, peer: PeerView, cfg: PolicyConfig, now: float) -> bool:
    """Fenced (or read OFF after its last heartbeat), and a power status read within deadtime still says OFF:
    proof enough for the failsafe."""
    fresh = peer.power_at is not None and now - peer.power_at <= cfg.deadtime
    return (peer.name in state.fenced_off or _seen_off(peer, cfg, now)) and peer.power is Power.OFF and fresh


def _seen_off(peer: PeerView, cfg: PolicyConfig, now: float) -> bool:
    """A power status read taken after the peer's newest heartbeat, within deadtime, says OFF: the peer is dead,
    whatever its last frame said (a BMC reads OFF only when the node's power is off)."""
    if peer.power is not Power.OFF or peer.power_at is None or now - peer.power_at > cfg.deadtime:
        return False
    return peer.heard_at is None or peer.power_at > peer.heard_at


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
        if any(isinstance(a, AcquireLease) for a in actions):
            state = replace(state, lease_maybe_until=now + cfg.ttl)
        return Decision(gate, tuple(dict.fromkeys(actions)), reason, rule, state)

    def fence(peer: PeerView, token: int | None, why: str) -> None:
        nonlocal state
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
    seed = state.highest_token

    # Q1 -------------------------------------------------------------------------------------------------
    if ev.reference_quorate is False:
        better = [p.name for p in alive if p.quorate]
        if better or not alive:
            if mine:
                actions.append(ReleaseLease())
            where = f"{', '.join(better)} still reaches it" if better else "no peer is heard"
            return out(Gate.CLOSED, "Q1", f"reference quorum lost here and {where}; gate closed")

    # L1 / L2 / L3 ---------------------------------------------------------------------------------------
    holder_valid = lease.expires_at is None or now < lease.expires_at
    if lease.status is LeaseStatus.PEER and holder_valid and lease.holder != cfg.node:
        holder = next((p for p in ev.peers if p.name == lease.holder), None)
        token = f" (token {lease.token})" if lease.token is not None else ""
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
            if holder is not None and holder.alive and not holder.claims_vip:
                actions.append(AcquireLease(seed))
                return out(
                    Gate.OPEN,
                    "L2",
                    f"handover: lease holder {lease.holder}{token} confirms {holder.state.value}; acquiring",
                )
            return out(Gate.CLOSED, "L1", f"lease held by {lease.holder}{token}; gate closed")
        if holder is not None and holder.adverts_at is not None and lease.expires_at is not None:
            renewed_at = lease.expires_at - cfg.ttl
            if now - holder.adverts_at >= cfg.cut_after and renewed_at > holder.adverts_at + cfg.advert_int:
                return out(
                    Gate.CLOSED,
                    "L3",
                    f"lease renewed by {lease.holder}{token} {renewed_at - holder.adverts_at:.1f}s after its "
                    "last VRRP advert: VRRP path cut; gate closed before master-down",
                )

    # V1 -------------------------------------------------------------------------------------------------
    if not ev.holding:
        for peer in alive:
            if peer.state is VrrpState.MASTER and peer.adverts_at is not None and peer.heard_at is not None:
                gap = peer.heard_at - peer.adverts_at
                if gap >= cfg.cut_after:
                    if mine:
                        actions.append(ReleaseLease())
                    return out(
                        Gate.CLOSED,
                        "V1",
                        f"{peer.name} says MASTER but its VRRP adverts stopped {gap:.1f}s before that: "
                        "VRRP path cut; gate closed before master-down",
                    )

    # D1 / D2 / D3 ---------------------------------------------------------------------------------------
    rivals = [p for p in alive if p.claims_vip] if ev.holding else []
    lease_valid_mine = mine and lease.expires_at is not None and now < lease.expires_at - cfg.safety
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
        failed = _fence_failed(state, ev.peers)
        # A silent peer may hold the VIP even if its last word was BACKUP: its agent may be stuck while its
        # keepalived, with the gate left open, takes the VIP behind a cut VRRP path. Only fencing bounds that.
        # A peer that stopped cleanly (gates closed, VIPs released, then said so) is not fenced for its silence.
        silent = [p for p in ev.peers if p.alive is False and p.name not in state.fenced_off and not p.left]
        # H1 / H2 -------------------------------------------------------------------------------------------
        if mine and lease_valid_mine:
            for peer in silent:
                fence(peer, lease.token, "silent on every heartbeat medium while this node holds the lease")
            if failed is not None and cfg.on_fence_failure == "close":
                return out(
                    Gate.CLOSED,
                    "F1",
                    f"fencing {failed.name} failed ({failed.fence.proof if failed.fence else ''}); gate closed",
                )
            return out(Gate.OPEN, "H1", f"holding the VIP with the lease (token {lease.token})")
        if mine:
            return out(Gate.CLOSED, "H2", "lease not renewed and within the safety margin of expiry; self-demotion")
        # H3 ------------------------------------------------------------------------------------------------
        if lease.status is LeaseStatus.FREE:
            actions.append(AcquireLease(seed))
            # Acquisition gets as long as a lease would last; a store that answers but never grants (a
            # read-only replica) is then treated like an unreachable one (H4-H6).
            held_for = now - (state.holding_since if state.holding_since is not None else now)
            if own_valid or held_for < cfg.ttl - cfg.safety:
                return out(Gate.OPEN, "H3", f"lease free; acquiring with the token seeded above {seed}")
        # H4 / H5 / H6 --------------------------------------------------------------------------------------
        if own_valid and state.lease_valid_until is not None:
            left = state.lease_valid_until - now
            return out(Gate.OPEN, "H4", f"lease store unreachable; own lease valid for {left:.1f}s more")
        confirmed = all(_confirms_backup(state, p) or _still_off(state, p, cfg, now) for p in ev.peers)
        if confirmed:
            return out(Gate.OPEN, "H5", "failsafe: lease store unreachable, every peer confirms it is not master")
        names = ", ".join(p.name for p in ev.peers if not p.alive) or "a peer"
        return out(Gate.CLOSED, "H6", f"lease store unreachable, own lease expired and {names} silent; gate closed")

    # B3 -------------------------------------------------------------------------------------------------
    # A peer silent on every medium whose last word claimed the VIP may still hold it (its agent stuck, its
    # keepalived master behind a cut path). Fence it with the lease before keepalived's master-down makes this
    # node master beside it; with TTL + fence time below master-down the fence lands first.
    settled = state.fenced_off | off
    claimants = [p for p in ev.peers if p.alive is False and p.claims_vip and p.name not in settled]
    if claimants:
        names = ", ".join(p.name for p in claimants)
        if lease_valid_mine:
            for peer in claimants:
                fence(peer, lease.token, "silent on every heartbeat medium; its last word claimed the VIP")
            return out(Gate.OPEN, "B3", f"{names} silent, last seen holding the VIP: fencing with token {lease.token}")
        if lease.status is LeaseStatus.FREE:
            actions.append(AcquireLease(seed))
            return out(Gate.OPEN, "B3", f"{names} silent, last seen holding the VIP: acquiring the lease to fence")

    # B1 / B2 --------------------------------------------------------------------------------------------
    if mine:
        actions.append(ReleaseLease())
        return out(Gate.OPEN, "B1", "not holding the VIP; releasing the lease")
    return out(Gate.OPEN, "B2", "backup: gate open, keepalived decides")
