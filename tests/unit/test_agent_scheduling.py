"""The agent's CPU scheduling, as the systemd unit sets it and as the lab reproduces it.

A normal-priority agent is preempted for milliseconds at the gate write on a busy host (measured with `lab bench
decision`: p99 6-13 ms at load 11 on 2 cores, 0.9 ms with SCHED_RR); the unit gives the agent's own thread the
lowest realtime priority, and no thread or child it starts inherits it.
"""

from __future__ import annotations

from arbiter.lab import agentconf
from arbiter.lab.topology import LabSpec
from tests.unit.test_lab_arbiter_plumbing import make_plan
from tests.unit.test_systemd_unit import UNIT, one, parse_unit


def test_the_unit_runs_the_agent_realtime_without_handing_it_down() -> None:
    service = parse_unit(UNIT)["Service"]
    assert one(service, "CPUSchedulingPolicy") == "rr"
    assert one(service, "CPUSchedulingPriority") == "1"  # the lowest: keepalived's vrrp_rt_priority stays above
    assert one(service, "CPUSchedulingResetOnFork") == "yes"  # IPMI workers, fence_* and ssh run normal
    assert one(service, "RestrictRealtime") == "yes"  # nothing else in the unit may raise itself


def test_the_lab_starts_the_agent_as_the_unit_does() -> None:
    plan = make_plan(LabSpec(arbiter=True), prefix="kal0000")
    exec_line = agentconf.on_boot_script(plan, plan.nodes[0]).splitlines()[-1]
    assert exec_line.startswith("exec chrt --rr --reset-on-fork 1 ")
