"""The lab's named scenarios, played in the simulated cluster: the safety checks run after every tick
(policy_sim raises Violation), and each test asserts who ends up holding the VIP and how."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from arbiter.model import Gate
from tests.unit.policy_sim import TICK, World, master_down

BOTH = [("a", "b"), ("b", "a")]


def booted(names: list[str] | None = None, nopreempt: bool = False) -> World:
    world = World(names or ["a", "b"], nopreempt=nopreempt)
    world.run(40)
    assert [n.name for n in world.holders()] == ["a"]
    return world


def run_seconds(world: World, seconds: float) -> None:
    world.run(round(seconds / TICK))


def holder_names(world: World) -> list[str]:
    return [n.name for n in world.holders()]


def took_vip_at(world: World, name: str, limit: float) -> float | None:
    start = world.now
    while world.now - start < limit:
        world.step()
        if world.nodes[name].vip:
            return world.now - start
    return None


def test_vrrp_cut_with_heartbeat_and_lease_up_never_flashes() -> None:
    world = booted()
    world.vrrp_cut |= set(BOTH)
    run_seconds(world, 15)
    assert holder_names(world) == ["a"]
    assert world.nodes["b"].gate is Gate.CLOSED
    assert world.nodes["b"].last_rule in ("L3", "V1")
    world.heal()
    run_seconds(world, 6)
    assert holder_names(world) == ["a"]
    assert world.nodes["b"].gate is Gate.OPEN


def test_vrrp_cut_with_redis_down_heartbeat_decides() -> None:
    world = booted()
    world.store.alive = False
    world.vrrp_cut |= set(BOTH)
    run_seconds(world, 15)
    assert holder_names(world) == ["a"]
    assert world.nodes["a"].last_rule == "H5"  # failsafe: b confirms BACKUP over the heartbeat
    assert world.nodes["b"].last_rule == "V1"


def test_every_heartbeat_medium_and_vrrp_cut_lease_holder_fences_the_silent_peer() -> None:
    world = booted()
    world.vrrp_cut |= set(BOTH)
    world.hb_cut |= set(BOTH)
    run_seconds(world, 15)
    assert holder_names(world) == ["a"]
    assert not world.nodes["b"].powered
    assert any("a fences b (silent on every heartbeat medium" in line for line in world.log)


def test_every_heartbeat_medium_and_vrrp_cut_without_fencing_the_lease_closes_the_backup() -> None:
    world = booted()
    world.cfgs["a"] = replace(world.cfgs["a"], fenceable=frozenset())
    world.vrrp_cut |= set(BOTH)
    world.hb_cut |= set(BOTH)
    run_seconds(world, 15)
    assert holder_names(world) == ["a"]
    assert world.nodes["b"].powered
    assert (world.nodes["b"].gate, world.nodes["b"].last_rule) == (Gate.CLOSED, "L3")


def test_isolate_master_steps_down_and_is_fenced() -> None:
    world = booted()
    world.vrrp_cut |= set(BOTH)
    world.hb_cut |= set(BOTH)
    world.redis_cut.add("a")
    run_seconds(world, 10)
    assert holder_names(world) == ["b"]
    assert not world.nodes["a"].powered
    assert any("b fences a" in line for line in world.log)
    assert world.max_dual_alone == 0.0


def test_power_off_failover_is_keepalived_own_master_down() -> None:
    world = booted()
    world.power_off("a")
    took = took_vip_at(world, "b", 10)
    assert took is not None
    assert took <= master_down(100) + TICK
    run_seconds(world, 2)
    assert holder_names(world) == ["b"]
    assert world.nodes["b"].gate is Gate.OPEN


def test_pause_agent_and_isolate_other_node_fences_before_it_holds_alone() -> None:
    world = booted()
    world.nodes["a"].paused = True
    world.vrrp_cut |= set(BOTH)
    world.hb_cut |= set(BOTH)
    run_seconds(world, 12)
    assert holder_names(world) == ["b"]
    assert not world.nodes["a"].powered
    assert world.max_dual_alone <= 0.6 + 3 * TICK  # bounded by the fence time


def test_reference_lost_on_master_backup_takes_over_within_failover_plus_ttl() -> None:
    world = booted()
    world.reference_lost.add("a")
    took = took_vip_at(world, "b", 10)
    assert took is not None
    assert took <= master_down(100) + 3.0 + TICK
    run_seconds(world, 2)
    assert holder_names(world) == ["b"]
    assert world.nodes["a"].last_rule == "Q1"


def test_redis_restart_empty_no_transition_token_increases() -> None:
    world = booted()
    before = world.store.token
    world.restart_store_empty()
    for _ in range(30):
        world.step()
        assert holder_names(world) == ["a"]
    assert world.store.holder == "a"
    assert world.store.token > before


def test_keepalived_crash_backup_takes_over() -> None:
    world = booted()
    world.nodes["a"].ka_crashed = True
    took = took_vip_at(world, "b", 10)
    assert took is not None
    run_seconds(world, 2)
    assert holder_names(world) == ["b"]
    assert world.nodes["a"].powered  # a's agent still speaks: it is not fenced


def test_nopreempt_return_adds_no_transition() -> None:
    world = booted(nopreempt=True)
    world.power_off("a")
    run_seconds(world, 8)
    assert holder_names(world) == ["b"]
    world.power_on("a")
    changes = 0
    last = holder_names(world)
    for _ in range(100):
        world.step()
        now = holder_names(world)
        changes += now != last
        last = now
    assert (last, changes) == (["b"], 0)


@pytest.mark.parametrize(
    "fault",
    [
        lambda w: w.vrrp_cut.update(BOTH),
        lambda w: w.redis_cut.add("a"),
        lambda w: setattr(w.store, "alive", False),
        lambda w: w.hb_cut.update(BOTH),
    ],
    ids=["vrrp", "redis-partition", "redis-stop", "hb"],
)
def test_three_nodes_single_faults_keep_one_holder(fault: Callable[[World], None]) -> None:
    world = booted(["a", "b", "c"])
    fault(world)
    run_seconds(world, 15)
    assert len(holder_names(world)) == 1
