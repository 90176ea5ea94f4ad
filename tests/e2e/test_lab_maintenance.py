"""Maintenance mode on real keepalived with the agent on both nodes: pause both, restart (upgrade) both agents one
after the other, resume both — the VIP never moves and nobody is fenced.

Commands run the way an operator runs them: `keepalived-arbiter lab exec --lab NAME NODE -- keepalived-arbiter
pause ...` inside the node's namespace, with the config the lab wrote for that node. An agent is restarted as
systemd would: SIGTERM, then the node's own start script (`on-boot`) again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from arbiter.lab import agentconf, netns, topology
from arbiter.lab.events import FENCE, VIP_ADD, VIP_DEL
from arbiter.lab.lab import Lab
from arbiter.lab.topology import LabSpec
from tests.e2e.test_lab_operate import exec_in, metrics, mine, settled, status, status_text, wait_status

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]
VIP = topology.VIPS[0]


def restart_agent(lab: Lab, node: str) -> int:
    """SIGTERM the node's agent, wait for it to exit, start it again with the node's start script; the new PID."""
    old = lab.agent_pid(node)
    assert old is not None
    os.kill(old, signal.SIGTERM)
    topology.wait_for(lambda: netns.gone(old), 10, f"node {node}'s agent to exit")
    plan = lab.plan.node(node)
    subprocess.Popen(
        netns.in_ns(plan.netns, ["/bin/sh", str(Path(plan.dir, topology.ON_BOOT))]),
        cwd=plan.dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    topology.wait_for(lambda: lab.agent_pid(node) not in (None, old) and lab.agent_running(node), 10, "new agent")
    topology.wait_for(topology.agent_socket(plan).exists, 15, f"node {node}'s new agent to listen")
    new = lab.agent_pid(node)
    assert new is not None
    return new


def deciding_as(pid: int) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s["pid"] == pid and s["last_cycle_age_s"] is not None


def log_lines(lab: Lab, node: str) -> list[dict[str, object]]:
    lines = []
    for text in Path(lab.plan.node(node).dir, agentconf.AGENT_LOG).read_text().splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


def test_paused_cluster_survives_a_rolling_agent_restart_without_moving_the_vip() -> None:
    with Lab(LabSpec(arbiter=True)) as lab:
        lab.wait_holders(VIP, ["a"], 20)
        lab.wait_agents_ready(30)
        wait_status(lab, "b", lambda s: settled(s, "open", "B2", "H1"), 15, "settled cluster")
        since = time.monotonic()

        for node in ("a", "b"):
            done = exec_in(lab, node, "keepalived-arbiter", "pause", "--reason", "agent upgrade")
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.startswith("paused by ") and "gates held (VI_1 open)" in done.stdout, done.stdout
        again = exec_in(lab, "a", "keepalived-arbiter", "pause")
        assert again.returncode == 0 and "already paused" in again.stdout, again.stdout + again.stderr
        s = status(lab, "a")
        assert s["maintenance"]["paused"] is True and s["maintenance"]["reason"] == "agent upgrade"
        assert s["maintenance"]["gates"] == {"VI_1": "open"}
        assert "MAINTENANCE MODE: node-a PAUSED" in status_text(lab, "a")
        assert "keepalived_arbiter_paused 1.0" in metrics(lab, "b")

        # The upgrade: each agent restarted in turn, the master's first. Each comes back paused and keeps its gate.
        for node in ("a", "b"):
            pid = restart_agent(lab, node)
            back = wait_status(lab, node, deciding_as(pid), 15, "the restarted agent deciding")
            assert back["maintenance"]["paused"] is True and back["maintenance"]["by"] is not None
            assert back["maintenance"]["gates"] == {"VI_1": "open"}
            assert topology.gate_path(lab.plan.node(node), "VI_1").read_text() == "0\n"
            starts = [line for line in log_lines(lab, node) if line.get("event") == "start"]
            assert starts[-1]["gates"] == "held (paused)", starts[-1]
            stops = [line for line in log_lines(lab, node) if line.get("event") == "stop"]
            assert stops[-1]["gates"] == "held (paused)", stops[-1]
            assert lab.holders(VIP) == ["a"]
        # Past the heartbeat deadtime and a few lease TTLs with both paused: whatever the policy would do, nothing.
        time.sleep(4)
        assert lab.holders(VIP) == ["a"]

        for node in ("a", "b"):
            done = exec_in(lab, node, "keepalived-arbiter", "resume")
            assert done.returncode == 0 and done.stdout.startswith("resumed by "), done.stdout + done.stderr
        done = exec_in(lab, "b", "keepalived-arbiter", "resume")
        assert done.returncode == 0 and done.stdout == "not paused; nothing to do\n", done.stdout
        after = wait_status(lab, "b", lambda s: settled(s, "open", "B2", "H1"), 15, "settled after resume")
        assert after["maintenance"]["paused"] is False and mine(after)["withheld"] == []
        from_a = wait_status(lab, "a", lambda s: settled(s, "open", "H1", "B2"), 15, "a holding after resume")
        assert mine(from_a)["lease"]["status"] == "mine"
        time.sleep(2)  # a few decision cycles after resume: still no move and no fence

        events = [e for e in lab.timeline.sorted() if e.t >= since]
        moves = [e for e in events if e.kind in (VIP_ADD, VIP_DEL) and e.detail.startswith(VIP)]
        assert moves == [], moves
        assert lab.holders(VIP) == ["a"]
        lab.record_agents_and_power()
        fences = [e for e in lab.timeline.sorted() if e.kind == FENCE and e.t >= since]
        assert fences == [], fences
        for node in ("a", "b"):
            final = status(lab, node)
            assert final["last_fence"] is None and final["peers"][0]["fence"] is None, final["last_fence"]
            assert topology.node_powered(lab.plan.node(node))
