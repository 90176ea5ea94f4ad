"""Issue 12 item 6 in the simulated cluster: an agent restart on the master moves no VIP, and what S0 must not
trust (a gate keepalived rewrote at its start, a record that is too old) still closes the gate."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.policy_mutations import blind, careless_resume
from tests.unit.policy_sim import TICK, Edges, Violation, World

HARSH = Edges(late_answers=True, prio0=True)


def converged(**kw: object) -> World:
    world = World(["a", "b"], edges=HARSH, **kw)  # type: ignore[arg-type]
    world.run(60)
    a = world.nodes["a"]
    assert [n.name for n in world.holders()] == ["a"] and a.last_rule == "H1"
    return world


def holders_while(world: World, ticks: int) -> list[list[str]]:
    seen = []
    for _ in range(ticks):
        world.step()
        seen.append([n.name for n in world.holders()])
    return seen


@pytest.mark.parametrize("down_ticks", [0, 3, 5])
def test_agent_restart_on_the_master_moves_no_vip(down_ticks: int) -> None:
    """Crash, restart after up to 1 s (RestartSec plus start-up), first lease answer after the heartbeats."""
    world = converged()
    world.nodes["a"].paused = True  # crashed: no heartbeats, no renewals
    world.run(down_ticks)
    world.restart_agent("a", lease_delay=3 * TICK, reference_delay=2 * TICK)
    seen = holders_while(world, 40)
    assert seen == [["a"]] * 40
    assert world.log == []  # no fence
    assert world.nodes["a"].last_rule == "H1"


def test_a_restart_slower_than_the_lease_allows_closes_at_start() -> None:
    """Down 2.4 s with TTL 3 s, renewals every 1 s: the lease the record names is within the safety margin of
    expiry by the time the new agent starts, so S0 closes (rule 2 before quietness)."""
    world = converged()
    a = world.nodes["a"]
    a.paused = True
    world.run(12)
    world.restart_agent("a", lease_delay=3 * TICK)
    assert a.gate.value == "closed" and not a.vip


def test_without_a_record_the_restart_fails_over_as_before() -> None:
    """Today's start-up (every gate closed at start) in the same world: the VIP moves to b. Shows that the test
    above measures the record, not a world in which nothing can move."""
    world = converged()
    world.nodes["a"].record = None
    world.restart_agent("a", lease_delay=3 * TICK, reference_delay=2 * TICK)
    seen = holders_while(world, 40)
    assert ["b"] in seen


def test_a_stale_record_closes_the_gate_at_start() -> None:
    world = converged()
    a = world.nodes["a"]
    assert a.record is not None
    a.record = replace(a.record, written_at=world.now - 60)  # the previous agent died a minute ago
    world.restart_agent("a", lease_delay=3 * TICK)
    assert a.vip is False and a.gate.value == "closed"


def test_keepalived_restarted_during_s0_keeps_the_gate_closed_until_the_first_full_round() -> None:
    world = converged()
    a = world.nodes["a"]
    world.restart_agent("a", lease_delay=6 * TICK)
    world.step()
    assert (a.gate.value, a.last_rule, a.vip) == ("open", "S0", True)
    world.restart_keepalived("a")  # init_file 1 overwrite: closed
    rules = []
    while not a.policy.started:
        world.step()
        rules.append((a.last_rule, a.gate.value))
    assert rules[:-1] and set(rules[:-1]) == {("S0", "closed")}


@pytest.mark.parametrize(
    "careless",
    [
        pytest.param(blind, id="keeps any gate found open"),
        # Age alone or lease alone is not a mutant here: the record is rewritten at each renewal, so for a holder
        # "younger than TTL − safety" and "lease valid past safety" are one condition (each guards the other).
        pytest.param(
            lambda r, now: replace(r, written_at=now, lease_until=now + 1e9), id="ignores the age and the lease"
        ),
    ],
)
def test_the_simulation_catches_a_careless_restart_keep(careless: object) -> None:
    """The mutation check's S0 mutants in the slow-restart schedule: the master back 2.4 s after its last
    renewal, its lease store answering 1.2 s later. The real S0 closes (test above); a careless one keeps the VIP
    past the lease, and the world says so."""
    decide_fn, resume_fn = careless_resume(careless)  # type: ignore[arg-type]
    world = converged(decide_fn=decide_fn, resume_fn=resume_fn)
    a = world.nodes["a"]
    a.paused = True
    world.run(12)
    world.restart_agent("a", lease_delay=6 * TICK)
    with pytest.raises(Violation, match="rule 2 at start-up"):
        world.run(10)


def test_the_same_slow_restart_is_safe_with_the_real_s0() -> None:
    world = converged()
    world.nodes["a"].paused = True
    world.run(12)
    world.restart_agent("a", lease_delay=6 * TICK)
    world.run(40)
    assert len(world.holders()) == 1


def test_a_restart_does_not_renew_the_hold_window_of_h3() -> None:
    """Found by the mutation check's baseline run: the master's agent restarted, Redis restarted empty and then
    read-only, the backup's agent stuck. The new agent took the VIP as held since its own start, so H3 kept it
    for a fresh TTL − safety past the lease the old agent had (rule 2). The record now carries holding_since."""
    world = World(["a", "b"], edges=HARSH)
    world.run(29)
    world.restart_agent("a")
    world.restart_store_empty()
    world.nodes["b"].paused = True
    world.store.readonly = True
    world.run(13)  # raised "rule 2: a holds the VIP past its lease expiry ... (rule H3)" before the fix
    assert not world.nodes["a"].vip  # it stepped down (H6) when the lease it resumed ran out


def test_l2_handover_on_a_stale_frame() -> None:
    """Both keepalived master-down timers run out in one tick (a's keepalived started again when the faults
    healed); b does not hear a (one-way heartbeat and VRRP cut a→b, 0.8 s ago): a takes the lease (D3), and b
    kept the VIP by L2 on a's last frame, which said BACKUP before the cut. L2 now wants a recent frame."""
    world = World(["a", "b"], edges=Edges(keepalived_starts=True))
    world.run(1)
    world.store.readonly = True
    world.run(2)
    world.nodes["a"].ka_crashed = True
    world.nodes["a"].paused = True
    world.run(66)
    world.heal()
    world.run(16)
    world.hb_cut.add(("a", "b"))
    world.vrrp_cut.add(("a", "b"))
    world.run(5)  # raised "rule 1: a and b both hold the VIP with shared evidence" before the fix
    assert [n.name for n in world.holders()] == ["a"]
