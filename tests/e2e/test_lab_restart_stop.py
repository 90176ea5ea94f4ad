"""Issue 12 item 6 on real keepalived: the master's agent stopped for a restart (SIGUSR2, the same stop as the one
systemd's restart job gets, arbiter.agent.stopmode) and started again moves no VIP; a stop for good hands over."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

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


def stop_agent(lab: Lab, sig: signal.Signals) -> tuple[int, float]:
    """Signal a's agent and wait for it to exit; returns its PID and how long its stop took (seconds)."""
    old = lab.agent_pid("a")
    assert old is not None
    sent = time.monotonic()
    netns.kill_pids([old], sig)
    topology.wait_for(lambda: netns.gone(old), 10, "the agent to exit")
    return old, time.monotonic() - sent


def log_lines(lab: Lab) -> list[str]:
    return Path(lab.plan.node("a").dir, AGENT_LOG).read_text(errors="replace").splitlines()


def test_master_agent_stopped_for_a_restart_moves_no_vip() -> None:
    with Lab(LabSpec(arbiter=True)) as lab:
        lab.wait_holders(VIP, ["a"], 20)
        lab.wait_agents_ready(30)
        wait_status(lab, "b", lambda s: settled(s, "open", "B2", "H1"), 15, "settled cluster")
        gate = topology.gate_path(lab.plan.node("a"), "VI_1")
        started = time.monotonic()
        old, took = stop_agent(lab, signal.SIGUSR2)
        assert gate.read_text().strip() == "0"  # left open for the next agent
        record = json.loads(Path(lab.plan.node("a").dir, "state", "decisions.json").read_text())
        assert record["instances"]["VI_1"]["gate"] == "open" and record["instances"]["VI_1"]["lease_token"]
        events = [json.loads(line) for line in log_lines(lab) if line.startswith("{")]
        handed = [e for e in events if e.get("event") == "restarting"]
        assert handed and handed[-1]["renewed"] == ["VI_1"] and handed[-1]["recorded"] is True, handed
        assert [e["mode"] for e in events if e.get("event") == "stop"][-1:] == ["restart"]
        assert not [e for e in events if e.get("event") == "leaving"]
        start_agent(lab, "a")
        topology.wait_for(lambda: answers(lab, "a"), 30, "the new agent to answer status")
        back = wait_status(
            lab, "a", lambda s: lab.agent_pid("a") != old and mine(s)["decision"]["rule"] == "H1", 15, "H1 again"
        )
        resumed = time.monotonic() - started
        assert mine(back)["gate"] == "open"
        time.sleep(2)  # past b's deadtime: b must not act on a's silence during the restart
        moved = [e for e in lab.timeline.sorted() if e.t >= started and e.kind in (VIP_ADD, VIP_DEL, FENCE)]
        assert moved == [], moved
        assert lab.holders(VIP) == ["a"]
        final = status(lab, "b")
        assert final["last_fence"] is None and mine(final)["decision"]["rule"] == "B2"
        events = [json.loads(line) for line in log_lines(lab) if line.startswith("{")]
        handed_at = [e["ts"] for e in events if e.get("event") == "restarting"][-1]
        started_at = [e["ts"] for e in events if e.get("event") == "start"][-1]
        assert [e["gates"] for e in events if e.get("event") == "start"][-1] == {"VI_1": "kept open"}
        print(
            f"restart stop took {took * 1000:.0f} ms; record written to the new agent's start "
            f"{(started_at - handed_at) * 1000:.0f} ms; signal to H1 seen in status {resumed * 1000:.0f} ms"
        )


def test_master_agent_stopped_for_good_hands_the_vip_over() -> None:
    """Control: SIGTERM outside systemd (no restart job) is `systemctl stop`: gate closed, VIP to the peer."""
    with Lab(LabSpec(arbiter=True)) as lab:
        lab.wait_holders(VIP, ["a"], 20)
        lab.wait_agents_ready(30)
        wait_status(lab, "b", lambda s: settled(s, "open", "B2", "H1"), 15, "settled cluster")
        gate = topology.gate_path(lab.plan.node("a"), "VI_1")
        _old, took = stop_agent(lab, signal.SIGTERM)
        assert gate.read_text().strip() != "0", "\n".join(log_lines(lab)[-15:])
        stops = [json.loads(line) for line in log_lines(lab) if line.startswith('{"') and '"stop"' in line]
        assert stops and stops[-1]["event"] == "stop" and stops[-1]["gates"] == "closed"
        lab.wait_holders(VIP, ["b"], 15)
        print(f"clean stop took {took * 1000:.0f} ms")
