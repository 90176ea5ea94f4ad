"""Chaos (issue 14) in `make test`: three fixed short schedules of overlapping faults on real keepalived with the
arbiter, a client writing to the VIP all along, judged over the whole history by arbiter/lab/chaos/verdict.py;
and one schedule with keepalived alone, where the same checker must find the split and what it did to the data.

The schedules are the files in tests/e2e/chaos/ (`keepalived-arbiter lab replay FILE --arbiter` runs one by
hand). Each test also checks that what it relies on happened: every fault injected and healed, the client's
writes acknowledged and stored, the witness's lease seen changing hands.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from arbiter.lab.chaos.runner import run_chaos
from arbiter.lab.chaos.schedule import Schedule

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]

SCHEDULES = Path(__file__).parent / "chaos"


def _run(name: str, arbiter: bool) -> tuple[Schedule, dict[str, Any]]:
    schedule = Schedule.from_json((SCHEDULES / name).read_text())
    return schedule, run_chaos(schedule, arbiter=arbiter)


def _every_fault_injected(schedule: Schedule, result: dict[str, Any]) -> None:
    assert result["nemesis_errors"] == []
    injected = [f for f in result["faults"] if f["kind"] == "fault"]
    for event in schedule.events:
        kind = event.fault.kind.replace("agent-restart", "agent restart").replace("keepalived-restart", "keepalived")
        kind = kind.replace("sentinel-failover", "sentinel")
        assert any(kind.split("-")[0] in f["detail"] for f in injected), (event.fault.describe(), injected)
    assert len(injected) >= len(schedule.events)


def _data_flowed(result: dict[str, Any]) -> None:
    writes = result["writes"]
    assert result["converged"] == "yes"
    assert writes["acknowledged"] >= 1000, writes
    assert writes["missing"] == 0 and writes["stored"] >= writes["acknowledged"]


@pytest.mark.parametrize(
    ("name", "movers"),
    [
        # Also the regression of a late write (found by chaos): the write a's service sent while a was cut off from
        # the store was delivered after the heal (kernel retransmission, a client retry) with a token whose lease
        # had run out. Then a fenced while cut off: b writes, then a again after its return.
        ("isolate-restart-empty.json", 2),
        ("poweroff-vrrpcut-kill.json", 2),  # a powered off: b writes
        # Also the regression of a Sentinel failover (found by chaos): the old master stays writable ~10 s, and the
        # holder renewed its lease there while it ran out on the new master (883 stale writes before the fix).
        ("three-nodes-partition-pause.json", 1),
    ],
)
def test_a_fixed_schedule_with_the_arbiter_keeps_every_verdict(name: str, movers: int) -> None:
    schedule, result = _run(name, arbiter=True)
    assert result["violations"] == []
    assert result["stale_writes"] == 0
    _every_fault_injected(schedule, result)
    _data_flowed(result)
    assert len(result["writes"]["writers"]) >= movers, result["writes"]
    assert result["lease_changes"] >= 2  # the watcher saw the lease taken (and moved)
    assert result["holders_at_end"] in (["a"], ["b"], ["c"])


def test_the_same_checker_finds_keepalived_alones_split_and_its_writes() -> None:
    schedule, result = _run("alone-vrrp-cut.json", arbiter=False)
    _every_fault_injected(schedule, result)
    _data_flowed(result)
    kinds = {v.split(":", 1)[0] for v in result["violations"]}
    assert "dual master" in kinds, result["violations"]
    assert result["dual_master"]["longest_ms"] > 5000  # the whole cut, less keepalived's master-down interval
    assert result["lease_changes"] == 0  # no agent, no lease: nothing of the arbiter ran
