"""The arbiter on real keepalived: every scenario of issue 6 with an agent on every node, judged on the goals
that are not timings (0 dual master where promised, who ends with the VIP, fencing before keeping the VIP, no
violations). The timings live in `keepalived-arbiter lab bench`.

Each test builds its own lab (keepalived, the agents, redis, sshd, ipmi_sim BMCs, socat cables in namespaces it
creates) and checks afterwards that nothing of it is left.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from arbiter.lab.bench.scenarios import transitions_after_fault
from arbiter.lab.scenarios import run_scenario

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]


def _run(name: str, **kw: Any) -> dict[str, Any]:
    result = run_scenario(name, seed=1, arbiter=True, **kw)
    assert result["scenario"] == name
    assert result["arbiter"] is True
    assert all(figures["decisions"] for figures in result["agents"].values()), result["agents"]
    return result


def _not_about_overlap(violations: list[str]) -> list[str]:
    """Violations other than the dual-master figures (bounded overlaps are a timing goal, in the bench)."""
    return [v for v in violations if "dual master" not in v]


def _kinds(result: dict[str, Any], kind: str, node: str) -> list[dict[str, Any]]:
    return [e for e in result["timeline"] if e["kind"] == kind and e["node"] == node]


@pytest.mark.parametrize("name", ["vrrp-cut", "hb-cut"])
def test_a_cut_vrrp_path_never_makes_a_second_master(name: str) -> None:
    r = _run(name)
    assert r["dual_master_ms"] == 0
    assert r["arp_flaps"] == 0
    assert r["holders_at_end"] == ["a"]
    assert r["violations"] == []
    # The backup's gate closed during the cut: the arbiter, not luck, kept it from taking the VIP.
    assert any("closed" in e["detail"] for e in _kinds(r, "gate", "b")), r["agents"]["b"]


def test_isolate_the_cut_off_master_lets_go_with_a_proof() -> None:
    r = _run("isolate")
    assert r["holders_at_end"] == ["b"]
    assert r["released_by"] in ("fence", "step-down"), r["released_by"]
    assert _not_about_overlap(r["violations"]) == []


def test_pause_agent_isolate_b_fences_a_before_it_keeps_the_vip() -> None:
    r = _run("pause-agent-isolate")
    assert r["holders_at_end"] == ["b"]
    assert r["released_by"] == "fence"
    assert r["fence_before_keep"] is True
    assert any("confirmed" in e["detail"] for e in _kinds(r, "fence", "a"))
    assert [e["detail"] for e in _kinds(r, "power", "a")] == ["off"]
    # The fence lands before keepalived's master-down makes b master (rule B3): no overlap at all.
    assert r["dual_master_ms"] == 0
    assert r["violations"] == []


@pytest.mark.parametrize(("advert_int", "version"), [(1.0, 2), (0.1, 3)], ids=["v2-1s", "v3-0.1s"])
def test_power_off_the_backup_takes_over(advert_int: float, version: int) -> None:
    r = _run("power-off", advert_int=advert_int, vrrp_version=version)
    assert r["holders_at_end"] == ["b"]
    # The failover itself (start-up is judged in tests/e2e/test_lab_transitions.py, cold-start).
    dual = {p["phase"]: p["dual_master_ms"] for p in r["phases"]}
    assert dual["fault"] == 0 and dual["steady"] == 0, dual
    # Start-up on a loaded host (CI, 2 cores) has shown up to one advert interval of dual master at VRRPv3/0.1 s:
    # that is issue 12's start-up goal, judged and reported in tests/e2e/test_lab_transitions.py; bounded here.
    assert dual["start-up"] <= advert_int * 1000, dual
    assert r["failover_ms"] is not None
    assert _not_about_overlap(r["violations"]) == []


def test_reference_lost_on_the_master_the_backup_takes_the_vip() -> None:
    r = _run("reference-lost")
    phases = {p["phase"]: p for p in r["phases"]}
    fault, heal = phases["fault"], phases["heal"]
    # During the fault a's own agent stepped down (Q1) and b took the VIP: the one failover.
    closed = [e for e in r["timeline"] if e["kind"] == "gate" and e["node"] == "a" and " closed Q1:" in e["detail"]]
    assert closed and fault["from_s"] <= closed[0]["t"] < heal["from_s"], closed
    assert any(
        e["kind"] == "vip-add" and e["node"] == "b" and fault["from_s"] <= e["t"] < heal["from_s"]
        for e in r["timeline"]
    )
    assert fault["vip_moves"] == 1
    # Healed, a (priority 150, preemption on) takes it back in one move: b steps down first (Y3), no overlap.
    assert r["holders_at_end"] == ["a"] and heal["vip_moves"] == 1
    assert r["dual_master_ms"] == 0
    assert r["violations"] == []


def test_redis_restart_empty_changes_nothing_and_tokens_still_rise() -> None:
    r = _run("redis-restart-empty")
    assert r["holders_at_end"] == ["a"]
    assert transitions_after_fault(r["timeline"]) == 0
    tokens = r["tokens"]
    assert tokens["before"] is not None and tokens["after"] is not None
    assert tokens["after"] > tokens["before"]
    assert r["violations"] == []
