"""Nodes starting together elect as keepalived alone would (issue 12 item 5, rule S1).

keepalived alone starts every node's master-down timer at its own start: the highest priority wins. With the
arbiter each timer starts when that node's gate opens, so a lower-priority node whose agent opened first won
the election and then handed the VIP over (in the lab at VRRPv3/0.1 s: a move and up to 365 ms of dual master
at cold start). A node that holds nothing now waits while a higher-ranked peer's frames say it is starting.
"""

from __future__ import annotations

from dataclasses import replace

from arbiter.model import Gate, PolicyState, ReleaseLease
from arbiter.policy import decide, start_wait_bound
from tests.unit.test_policy_preempt import FREE, NOW, STARTED, B, F, M, config, evidence, lease_of, view

A_CFG = config("a", ("b",), 150)
B_CFG = config("b", ("a",), 100)
JUST_STARTED = PolicyState()  # S0 passes on the first full round below


def test_a_lower_priority_node_waits_for_a_higher_one_still_starting() -> None:
    starting_a = view("a", F, 150, "S0")
    first = decide(JUST_STARTED, evidence(F, 100, FREE, (starting_a,)), B_CFG, NOW)
    assert (first.gate, first.rule) == (Gate.CLOSED, "S1"), first.reason
    assert "a (higher priority) still starting" in first.reason
    # a has decided (its gate open, B2): b opens after it, so a's master-down timer fires first.
    later = decide(
        first.state, evidence(F, 100, FREE, (view("a", B, 150, "B2", heard_at=NOW + 0.2),)), B_CFG, NOW + 0.2
    )
    assert (later.gate, later.rule) == (Gate.OPEN, "B2")
    assert later.state.start_wait_since is None


def test_the_wait_is_bounded() -> None:
    starting_a = view("a", F, 150, "S0")
    first = decide(JUST_STARTED, evidence(F, 100, FREE, (starting_a,)), B_CFG, NOW)
    bound = start_wait_bound(B_CFG)
    still = decide(
        first.state,
        evidence(F, 100, FREE, (replace(starting_a, heard_at=NOW + bound - 0.1),)),
        B_CFG,
        NOW + bound - 0.1,
    )
    assert still.rule == "S1"
    past = decide(still.state, evidence(F, 100, FREE, (replace(starting_a, heard_at=NOW + bound),)), B_CFG, NOW + bound)
    assert (past.gate, past.rule) == (Gate.OPEN, "B2")


def test_no_wait_for_a_starting_peer_that_holds_the_vip_or_ranks_lower() -> None:
    # A master whose agent restarts keeps its VIP (S0, kept open): the backup must stay ready to take over.
    restarting_master = view("a", M, 150, "S0", lease_holder="a")
    d = decide(STARTED, evidence(B, 100, lease_of("a", "b"), (restarting_master,)), B_CFG, NOW)
    assert d.rule != "S1" and d.gate is Gate.OPEN
    # The higher-priority node does not wait for a lower one.
    d = decide(JUST_STARTED, evidence(F, 150, FREE, (view("b", F, 100, "S0"),)), A_CFG, NOW)
    assert (d.gate, d.rule) == (Gate.OPEN, "B2")
    # Equal priority: the smaller name ranks first (as D3's tie-break), so a does not wait for b.
    d = decide(JUST_STARTED, evidence(F, 100, FREE, (view("b", F, 100, "S0"),)), config("a", ("b",), 100), NOW)
    assert d.rule == "B2"


def test_a_holder_never_waits_and_a_waiting_node_lets_go_of_a_stale_lease() -> None:
    d = decide(
        replace(STARTED, was_holding=True, holding_since=NOW - 5),
        evidence(M, 100, lease_of("b", "b"), (view("a", F, 150, "S0"),)),
        B_CFG,
        NOW,
    )
    assert d.rule != "S1" and d.gate is Gate.OPEN
    d = decide(STARTED, evidence(F, 100, lease_of("b", "b"), (view("a", F, 150, "S0"),)), B_CFG, NOW)
    assert d.rule == "S1" and ReleaseLease() in d.actions


def test_the_wait_lasts_until_keepalived_there_has_left_fault() -> None:
    """Found in `make test` on a loaded host (power-off at VRRPv3/0.1 s: 19 ms of dual master at start-up): a
    opened its gate, b heard B2 and opened 10 ms later, but keepalived on a read its gate 30 ms late. Its
    master-down timer started after b's, b became master 20 ms (the skew difference) before a, and a preempted it.
    b now waits until a's keepalived has left FAULT, so a's timer always starts first."""
    starting_a = view("a", F, 150, "S0")
    first = decide(JUST_STARTED, evidence(F, 100, FREE, (starting_a,)), B_CFG, NOW)
    assert first.rule == "S1"
    opened = view("a", F, 150, "B2", heard_at=NOW + 0.2)  # a's gate open, its keepalived still in FAULT
    waiting = decide(first.state, evidence(F, 100, FREE, (opened,)), B_CFG, NOW + 0.2)
    assert (waiting.gate, waiting.rule) == (Gate.CLOSED, "S1")
    backup = view("a", B, 150, "B2", heard_at=NOW + 0.25)  # keepalived there left FAULT: its timer runs
    done = decide(waiting.state, evidence(F, 100, FREE, (backup,)), B_CFG, NOW + 0.25)
    assert (done.gate, done.rule) == (Gate.OPEN, "B2")


def test_a_fault_of_the_master_later_on_is_a_failover_not_a_start() -> None:
    """Once running, a higher-priority peer whose keepalived goes FAULT with its gate open (a track script of the
    operator's failed) is not waited for: keepalived here takes over on its priority-0 advert."""
    running = replace(STARTED, rule="B2", gate=Gate.OPEN)
    d = decide(running, evidence(B, 100, lease_of("a", "b"), (view("a", F, 150, "B2", vip_present=False),)), B_CFG, NOW)
    assert d.rule != "S1" and d.gate is Gate.OPEN, d.reason
