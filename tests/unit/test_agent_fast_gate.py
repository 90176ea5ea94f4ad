"""The gate of an instance whose VIP appears is written inside the netlink callback, before anything else.

Decision latency (VIP appears → gate written) is dual-master time while keepalived holds a VIP against the
lease. These tests drive the agent's VIP callback directly (no event loop turn in between) and read the gate
file keepalived would read; they assert order and content, never a wall-clock time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arbiter.agent.daemon import Agent
from arbiter.agent.gate import GateFile
from arbiter.model import Gate, LeaseStatus, LeaseView, PolicyState
from tests.unit.agentfakes import FakeVips, Rig, load_config


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The callbacks run on the agent's event loop (their actions are spawned as tasks there): a loop of the
    test's own, not whatever an earlier test left (asyncio.run leaves none)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def agent(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> tuple[Agent, FakeVips, list[dict[str, Any]]]:
    cfg = load_config(tmp_path, node="node-b", peer="node-a", instances=(("VI_1", 100), ("VI_2", 100)))
    rig = Rig(cfg, clock=time.monotonic)
    a = rig.agent()
    vips, lines = rig.vips, rig.lines
    # Past start-up: the loop has run, both gates are open, node-a holds both leases (valid for 3 s).
    now = time.monotonic()
    for name in a.instances:
        a.state[name] = PolicyState(started=True, gate=Gate.OPEN, rule="B2")
        a.lease_views[name] = LeaseView(LeaseStatus.PEER, "node-a", 7, now + 3.0)
        a.gates[name].write(Gate.OPEN)
    return a, vips, lines


def test_vip_appearing_writes_its_gate_before_the_callback_returns(
    agent: tuple[Agent, FakeVips, list[dict[str, Any]]],
) -> None:
    a, vips, lines = agent
    a.cycle_at = time.monotonic()
    vips.held.add("VI_1")
    a._vip_changed("VI_1", True, time.monotonic())
    # No turn of the event loop happened: the gate on disk is already closed (L1: node-a holds the lease).
    assert GateFile(a.instances["VI_1"].track_file).read() is Gate.CLOSED
    decided = [line for line in lines if line.get("event") == "decision"]
    assert [(d["instance"], d["rule"], d["gate"], d["trigger"]) for d in decided] == [("VI_1", "L1", "closed", "vip")]
    assert decided[0]["latency_ms"] >= 0
    # The other instance is left to the loop's cycle, which the callback wakes.
    assert GateFile(a.instances["VI_2"].track_file).read() is Gate.OPEN
    assert a._wake.is_set()


def test_the_loops_next_cycle_does_not_log_the_vip_decision_twice(
    agent: tuple[Agent, FakeVips, list[dict[str, Any]]],
) -> None:
    a, vips, lines = agent
    a.cycle_at = time.monotonic()
    vips.held.add("VI_1")
    a._vip_changed("VI_1", True, time.monotonic())
    a.run_cycle()
    woken = [line for line in lines if line.get("event") == "decision" and line.get("trigger") == "vip"]
    assert [d["instance"] for d in woken] == ["VI_1"]
    assert a.state["VI_1"].rule == "L1"
    assert GateFile(a.instances["VI_1"].track_file).read() is Gate.CLOSED


def test_before_the_loops_first_cycle_a_vip_event_only_wakes_the_loop(
    agent: tuple[Agent, FakeVips, list[dict[str, Any]]],
) -> None:
    a, vips, lines = agent
    assert a.cycle_at is None
    vips.held.add("VI_1")
    a._vip_changed("VI_1", True, time.monotonic())
    assert GateFile(a.instances["VI_1"].track_file).read() is Gate.OPEN  # start-up decides, not the event
    assert not [line for line in lines if line.get("event") == "decision"]
    assert a._wake.is_set()
    a.run_cycle()
    decided = [line for line in lines if line.get("event") == "decision"]
    assert ("VI_1", "L1", "vip") in [(d["instance"], d["rule"], d.get("trigger")) for d in decided]


def test_a_vip_event_during_a_clean_stop_reopens_no_gate(
    agent: tuple[Agent, FakeVips, list[dict[str, Any]]],
) -> None:
    """Found in the lab: SIGTERM closed the gates, keepalived dropped the VIP, and the VIP's removal, decided on
    the fast path, wrote the gate open again (B1) while the agent was still stopping: its keepalived took the VIP
    back without an agent."""
    a, vips, lines = agent
    a.cycle_at = time.monotonic()
    vips.held.add("VI_1")
    a.stop()
    for gate in a.gates.values():
        gate.write(Gate.CLOSED)  # what shutdown() does first
    vips.held.discard("VI_1")
    a._vip_changed("VI_1", False, time.monotonic())
    assert GateFile(a.instances["VI_1"].track_file).read() is Gate.CLOSED
    assert not [line for line in lines if line.get("event") == "decision"]
