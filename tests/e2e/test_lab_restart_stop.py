"""Issue 12 item 6 on real keepalived: the master's agent stopped for a restart (SIGUSR2, the same stop as the one
systemd's restart job gets, arbiter.agent.stopmode) and started again moves no VIP; a stop for good hands over."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from arbiter.lab import netns, topology
from arbiter.lab.agentconf import AGENT_LOG
from arbiter.lab.events import FENCE, VIP_ADD, VIP_DEL
from arbiter.lab.lab import Lab
from arbiter.lab.topology import LabSpec
from tests.e2e.test_lab_operate import mine, settled, status, wait_status
from tests.e2e.test_lab_restart import answers, start_agent

pytestmark = pytest.mark.e2e
VIP = topology.VIPS[0]


def stop_agent(lab: Lab, node: str, sig: signal.Signals) -> tuple[int, float]:
    """Signal the node's agent and wait for it to exit; returns its PID and how long its stop took (seconds)."""
    old = lab.agent_pid(node)
    assert old is not None
    sent = time.monotonic()
    netns.kill_pids([old], sig)
    topology.wait_for(lambda: netns.gone(old), 10, "the agent to exit")
    return old, time.monotonic() - sent


def log_events(lab: Lab, node: str) -> list[dict[str, Any]]:
    lines = Path(lab.plan.node(node).dir, AGENT_LOG).read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.parametrize(("node", "rule", "other", "other_rule"), [("a", "H1", "b", "B2")])
def test_agent_stopped_for_a_restart_moves_no_vip(node: str, rule: str, other: str, other_rule: str) -> None:
    """The master's agent, holding the VIP and the lease, its peer holding none."""
    with Lab(LabSpec(arbiter=True)) as lab:
        lab.wait_holders(VIP, ["a"], 20)
        lab.wait_agents_ready(30)
        wait_status(lab, "b", lambda s: settled(s, "open", "B2", "H1"), 15, "settled cluster")
        gate = topology.gate_path(lab.plan.node(node), "VI_1")
        started = time.monotonic()
        old, took = stop_agent(lab, node, signal.SIGUSR2)
        assert gate.read_text().strip() == "0"  # left open for the next agent
        record = json.loads(Path(lab.plan.node(node).dir, "state", "decisions.json").read_text())
        assert record["instances"]["VI_1"]["gate"] == "open"
        assert bool(record["instances"]["VI_1"]["lease_token"]) is (rule == "H1")
        events = log_events(lab, node)
        handed = [e for e in events if e.get("event") == "restarting"]
        renewed = ["VI_1"] if rule == "H1" else []
        assert handed and handed[-1]["renewed"] == renewed and handed[-1]["recorded"] is True, handed
        assert [e["mode"] for e in events if e.get("event") == "stop"][-1:] == ["restart"]
        assert not [e for e in events if e.get("event") == "leaving"]
        start_agent(lab, node)
        topology.wait_for(lambda: answers(lab, node), 30, "the new agent to answer status")
        back = wait_status(
            lab, node, lambda s: lab.agent_pid(node) != old and mine(s)["decision"]["rule"] == rule, 15, rule
        )
        resumed = time.monotonic() - started
        assert mine(back)["gate"] == "open"
        time.sleep(2)  # past the peer's deadtime: it must not act on the silence during the restart
        moved = [e for e in lab.timeline.sorted() if e.t >= started and e.kind in (VIP_ADD, VIP_DEL, FENCE)]
        assert moved == [], moved
        assert lab.holders(VIP) == ["a"]
        final = status(lab, other)
        assert final["last_fence"] is None and mine(final)["decision"]["rule"] == other_rule
        events = log_events(lab, node)
        handed_at = [e["ts"] for e in events if e.get("event") == "restarting"][-1]
        started_at = [e["ts"] for e in events if e.get("event") == "start"][-1]
        assert [e["gates"] for e in events if e.get("event") == "start"][-1] == {"VI_1": "kept open"}
        print(
            f"{node}: restart stop took {took * 1000:.0f} ms; record written to the new agent's start "
            f"{(started_at - handed_at) * 1000:.0f} ms; signal to {rule} seen in status {resumed * 1000:.0f} ms"
        )


def test_backup_agent_asked_to_restart_says_leaving_and_is_not_fenced() -> None:
    """The holder fences a silent peer that did not say "leaving" (H1) after the deadtime, shorter than a
    restart: a backup asked to restart while its peer holds the lease stops cleanly instead."""
    with Lab(LabSpec(arbiter=True)) as lab:
        lab.wait_holders(VIP, ["a"], 20)
        lab.wait_agents_ready(30)
        wait_status(lab, "b", lambda s: settled(s, "open", "B2", "H1"), 15, "settled cluster")
        started = time.monotonic()
        old, _took = stop_agent(lab, "b", signal.SIGUSR2)
        stops = [e for e in log_events(lab, "b") if e.get("event") == "stop"]
        assert stops[-1]["mode"] == "stop" and "would fence a silent node" in stops[-1]["why"], stops[-1]
        start_agent(lab, "b")
        topology.wait_for(lambda: answers(lab, "b"), 30, "the new agent to answer status")
        wait_status(lab, "b", lambda s: lab.agent_pid("b") != old and mine(s)["decision"]["rule"] == "B2", 15, "B2")
        time.sleep(2)
        moved = [e for e in lab.timeline.sorted() if e.t >= started and e.kind in (VIP_ADD, VIP_DEL, FENCE)]
        assert moved == [], moved
        assert lab.holders(VIP) == ["a"] and status(lab, "a")["last_fence"] is None


def test_master_agent_stopped_for_good_hands_the_vip_over() -> None:
    """Control: SIGTERM outside systemd (no restart job) is `systemctl stop`: gate closed, VIP to the peer."""
    with Lab(LabSpec(arbiter=True)) as lab:
        lab.wait_holders(VIP, ["a"], 20)
        lab.wait_agents_ready(30)
        wait_status(lab, "b", lambda s: settled(s, "open", "B2", "H1"), 15, "settled cluster")
        gate = topology.gate_path(lab.plan.node("a"), "VI_1")
        _old, took = stop_agent(lab, "a", signal.SIGTERM)
        assert gate.read_text().strip() == "1"  # closed, and not reopened when the VIP went (fast path)
        stops = [e for e in log_events(lab, "a") if e.get("event") == "stop"]
        assert stops and stops[-1]["mode"] == "stop" and stops[-1]["gates"] == "closed"
        lab.wait_holders(VIP, ["b"], 15)
        print(f"clean stop took {took * 1000:.0f} ms")
