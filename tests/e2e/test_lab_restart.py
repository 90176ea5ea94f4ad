"""Issue 12 item 6 on real keepalived: the master's agent killed (a crash) and started again moves no VIP."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from arbiter.lab import netns, topology
from arbiter.lab.events import FENCE, VIP_ADD, VIP_DEL
from arbiter.lab.lab import Lab
from arbiter.lab.topology import LabSpec
from tests.e2e.test_lab_operate import mine, settled, status, wait_status

pytestmark = pytest.mark.e2e
VIP = topology.VIPS[0]


def start_agent(lab: Lab, node: str) -> None:
    """What systemd's Restart= does: the node's start script again (the gates exist: it starts at once)."""
    plan = lab.plan.node(node)
    subprocess.Popen(
        netns.in_ns(plan.netns, ["/bin/sh", str(Path(plan.dir, topology.ON_BOOT))]),
        cwd=plan.dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def answers(lab: Lab, node: str) -> bool:
    try:
        status(lab, node)
    except AssertionError:  # the old agent's socket until the new one listens
        return False
    return True


def test_master_agent_killed_and_restarted_moves_no_vip() -> None:
    with Lab(LabSpec(arbiter=True)) as lab:
        lab.wait_holders(VIP, ["a"], 20)
        lab.wait_agents_ready(30)
        wait_status(lab, "b", lambda s: settled(s, "open", "B2", "H1"), 15, "settled cluster")
        time.sleep(1.5)  # a renewal or two: the decision record is current
        record = json.loads(Path(lab.plan.node("a").dir, "state", "decisions.json").read_text())
        assert record["instances"]["VI_1"]["gate"] == "open" and record["instances"]["VI_1"]["rule"] == "H1"

        killed_at = time.monotonic()
        old = lab.agent_pid("a")
        assert old is not None
        netns.kill_pids([old], signal.SIGKILL)
        topology.wait_for(lambda: netns.gone(old), 5, "the agent to die")
        start_agent(lab, "a")
        topology.wait_for(lambda: answers(lab, "a"), 30, "the new agent to answer status")
        back = wait_status(
            lab, "a", lambda s: lab.agent_pid("a") != old and mine(s)["decision"]["rule"] == "H1", 15, "H1 again"
        )
        assert mine(back)["gate"] == "open"
        time.sleep(2)  # past b's deadtime: b must not act on a's silence during the restart

        moved = [e for e in lab.timeline.sorted() if e.t >= killed_at and e.kind in (VIP_ADD, VIP_DEL, FENCE)]
        assert moved == [], moved
        assert lab.holders(VIP) == ["a"]
        final = status(lab, "b")
        assert final["last_fence"] is None and mine(final)["decision"]["rule"] == "B2"
