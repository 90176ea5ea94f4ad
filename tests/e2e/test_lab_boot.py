"""Issue 12 item 9 on real keepalived: a node powered on (through its BMC) while its serial cable is still cut
runs its agent with the serial medium down, instead of refusing to start and leaving keepalived alone; the
cable healed, the medium opens without a restart. No dual master at any moment of it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest

from arbiter.lab import checker, topology
from arbiter.lab.lab import Lab
from arbiter.lab.topology import LabSpec
from tests.e2e.test_lab_operate import VIP, exec_in, wait_status

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]


def wait_booted(lab: Lab, node: str, want: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> Any:
    """`wait_status` for a node that is still booting: no answer yet (agent not listening) is not a failure."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        sock = str(topology.agent_socket(lab.plan.node(node)))
        done = exec_in(lab, node, "keepalived-arbiter", "status", "--json", "--socket", sock)
        last = done.stdout + done.stderr
        if done.returncode == 0:
            got = json.loads(done.stdout)
            if want(got):
                return got
        time.sleep(0.3)
    tails = lab.agent_log_tails(20)
    raise AssertionError(f"node {node}: timed out after {timeout:g}s waiting for {what}; agents:\n{tails}\n{last}")


def test_backup_powered_on_with_its_serial_cable_cut_runs_its_agent() -> None:
    with Lab(LabSpec(arbiter=True)) as lab:
        lab.wait_holders(VIP, ["a"], 20)
        lab.wait_agents_ready(30)
        before = wait_status(lab, "b", lambda s: s["peers"][0]["alive"] is True, 15, "node-a heard")
        serial = next(m["medium"] for m in before["peers"][0]["media"] if m["medium"].startswith("serial:"))

        lab.power("b", "off")
        topology.wait_for(lambda: not topology.node_powered(lab.plan.node("b")), 10, "b powered off")
        time.sleep(1.0)  # off for a while, as a fenced node is (a fences it now: it is silent)
        heal = lab.faults.serial_cut()
        lab.power("b", "on")
        start = time.monotonic()
        down = wait_booted(
            lab, "b", lambda s: s["heartbeat"]["media"][serial]["failures"] >= 2, 30, "the serial medium down here"
        )
        link = down["heartbeat"]["media"][serial]
        assert link["open"] is False and "No such file" in link["reason"], link
        assert lab.agent_running("b")
        # b heard a over UDP and stays a backup with its gate decided, not left as init_file wrote it.
        wait_status(lab, "b", lambda s: s["peers"][0]["alive"] is True, 15, "node-a heard over UDP")
        assert lab.holders(VIP) == ["a"]

        heal()
        wait_status(lab, "b", lambda s: s["heartbeat"]["media"][serial]["open"], 15, "the serial medium open")
        wait_status(
            lab,
            "b",
            lambda s: any(m["medium"] == serial and m["up"] for m in s["peers"][0]["media"]),
            15,
            "node-a heard on the serial cable",
        )
        assert lab.holders(VIP) == ["a"]
        end = time.monotonic()
        intervals = checker.hold_intervals(lab.timeline.events, ["a", "b"], VIP, end)
        overlaps = [p for p in checker.dual_periods(intervals) if p.end > start - 1]
        assert overlaps == [], overlaps
