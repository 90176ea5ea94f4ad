"""Rule L3 judges the lease holder's renewals by the holder's own TTL (issue 12, item 7).

L3 reads when the holder last renewed from the lease's expiry: renewed at = expires at − TTL. The TTL is the
holder's, sent in its heartbeats; with this node's own, nodes configured differently misjudge each other. Here
node a (TTL 3 s) watches node b, the holder, whose adverts stopped at 100.0 and whose heartbeats are silent too:
only the lease can tell whether b is still alive behind a cut VRRP path.
"""

from __future__ import annotations

from arbiter.model import (
    Evidence,
    Gate,
    LeaseStatus,
    LeaseView,
    PeerView,
    PolicyConfig,
    PolicyState,
    Timings,
    VrrpState,
)
from arbiter.policy import decide

CUT_AT = 100.0  # b's last VRRP advert seen here
NOW = 101.6  # past cut_after (1.5 adverts)

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


def timings(ttl: float) -> Timings:
    return Timings(ttl=ttl, renew=ttl / 3, safety=0.5, interval=0.2, deadtime=1.0, advert_int=1.0)


def decide_with_holder(renewed_at: float, ttl: float, sent: Timings | None) -> tuple[Gate, str]:
    """b renewed at `renewed_at` with its TTL `ttl` (so the lease expires at their sum); `sent` is what its
    heartbeats told this node about its timings."""
    holder = PeerView(
        name="b",
        alive=False,  # heartbeats cut as well: V1 cannot see b, only the lease can
        heard_at=CUT_AT,
        state=VrrpState.MASTER,
        vip_present=True,
        priority=100,
        adverts_at=CUT_AT,
        timings=sent,
    )
    evidence = Evidence(
        instance="VI_1",
        state=VrrpState.BACKUP,
        vip_present=False,
        priority=150,
        reference_quorate=True,
        lease=LeaseView(LeaseStatus.PEER, "b", 7, renewed_at + ttl),
        peers=(holder,),
    )
    decision = decide(STARTED, evidence, CFG, NOW)
    return decision.gate, decision.rule


def test_a_holder_with_a_shorter_ttl_that_renews_behind_a_cut_path_closes_the_gate() -> None:
    # b (TTL 2 s) renewed at 101.2, after its adverts stopped: alive behind a cut VRRP path. Judged by a's 3 s,
    # the renewal seems to date from 100.2, before the cut: the gate would stay open and a take the VIP beside b.
    assert decide_with_holder(renewed_at=101.2, ttl=2.0, sent=timings(2.0)) == (Gate.CLOSED, "L3")


def test_a_holder_with_a_longer_ttl_that_stopped_renewing_does_not_close_the_gate() -> None:
    # b (TTL 5 s) last renewed at 99.5, before its adverts stopped: nothing says it lives. Judged by a's 3 s,
    # the renewal seems to date from 101.5, after the cut: L3 would hold the gate closed until the lease expires.
    gate, rule = decide_with_holder(renewed_at=99.5, ttl=5.0, sent=timings(5.0))
    assert rule != "L3" and gate is Gate.OPEN


def test_without_the_holders_timings_l3_falls_back_to_this_nodes_ttl() -> None:
    # A holder whose frames carry no timings (an older agent): judged by this node's TTL, as before.
    assert decide_with_holder(renewed_at=101.2, ttl=3.0, sent=None) == (Gate.CLOSED, "L3")
    assert decide_with_holder(renewed_at=99.5, ttl=3.0, sent=None)[1] != "L3"
