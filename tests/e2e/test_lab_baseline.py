"""keepalived alone in the lab: what it really does under each scenario (the baseline later figures beat).

Each test builds its own lab (real keepalived, redis, sshd, ipmi_sim BMCs, socat cables in namespaces it
creates) and checks afterwards that nothing of it is left: no namespace, no process.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from arbiter.lab.scenarios import SCENARIOS, Timing, run_scenario
from arbiter.lab.topology import LabSpec

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]


def _run(name: str, **kw: Any) -> dict[str, Any]:
    result = run_scenario(name, seed=1, **kw)
    assert result["scenario"] == name
    assert result["arbiter"] is False
    assert result["timeline"], "nothing was recorded"
    return result


def test_vrrp_cut_keepalived_alone_holds_the_vip_on_both_until_healed() -> None:
    r = _run("vrrp-cut")
    assert r["dual_master_ms"] > 0
    assert r["dual_until_heal"], r["violations"]
    assert r["holders_at_end"] == ["a"]
    assert any("dual master" in v for v in r["violations"])


def test_hb_cut_keepalived_alone_splits_too() -> None:
    r = _run("hb-cut")
    assert r["dual_until_heal"]


@pytest.mark.parametrize("name", ["isolate", "pause-agent-isolate"])  # alone, the second is the first: no agent
def test_isolate_keepalived_alone_both_hold(name: str) -> None:
    r = _run(name)
    assert r["dual_master_ms"] > 0


def test_power_off_failover_is_about_three_adverts_plus_skew() -> None:
    r = _run("power-off")
    expected_ms = Timing.of(LabSpec()).master_down * 1000
    assert r["failover_ms"] is not None
    assert expected_ms * 0.8 <= r["failover_ms"] <= expected_ms + 1500, r["failover_ms"]
    assert r["dual_master_ms"] == 0
    assert r["holders_at_end"] == ["b"]


def test_power_off_vrrp3_fast_adverts() -> None:
    r = _run("power-off", advert_int=0.1, vrrp_version=3)
    expected_ms = Timing.of(LabSpec(advert_int=0.1, vrrp_version=3)).master_down * 1000
    assert r["failover_ms"] is not None
    assert r["failover_ms"] <= expected_ms + 1000, r["failover_ms"]
    assert r["holders_at_end"] == ["b"]


def test_keepalived_crash_backup_takes_over() -> None:
    r = _run("keepalived-crash")
    assert r["failover_ms"] is not None


def test_pause_keepalived_backup_takes_over_and_the_paused_master_still_holds() -> None:
    r = _run("pause-keepalived")
    assert r["failover_ms"] is not None
    assert r["dual_master_ms"] > 0  # the stopped keepalived never removed its VIP


@pytest.mark.parametrize("name", ["serial-cut", "redis-restart-empty", "reference-lost"])
def test_faults_keepalived_does_not_see_change_nothing(name: str) -> None:
    r = _run(name)
    assert r["dual_master_ms"] == 0
    assert r["failover_ms"] is None
    assert r["holders_at_end"] == ["a"]


def test_nopreempt_return_the_old_master_stays_backup() -> None:
    r = _run("nopreempt-return")
    assert r["holders_at_end"] == ["b"]
    adds = [e for e in r["timeline"] if e["kind"] == "vip-add" and e["detail"] == "10.0.0.100"]
    assert [e["node"] for e in adds] == ["a", "b"]  # no third transition when a returns


def test_dual_instance_both_vips_split() -> None:
    r = _run("dual-instance")
    assert set(r["per_vip"]) == {"10.0.0.100", "10.0.0.101"}
    for figures in r["per_vip"].values():
        assert figures["dual_master_ms"] > 0


def test_every_scenario_has_a_test() -> None:
    covered = {
        "vrrp-cut", "hb-cut", "isolate", "pause-agent-isolate", "power-off", "keepalived-crash", "pause-keepalived",
        "serial-cut", "redis-restart-empty", "reference-lost", "nopreempt-return", "dual-instance",
        # the transitions of issue 12, with the arbiter in tests/e2e/test_lab_transitions.py
        "cold-start", "staggered-start", "agent-restart-master", "agent-restart-backup", "rolling-upgrade",
        "keepalived-restart", "return-preempt", "heal-preempt",
        # fencing claims (issue 13), with the arbiter in tests/e2e/test_lab_refence.py
        "refence-after-power-on", "witness-down-isolate",
        # random VRRP loss (issue 14), in tests/e2e/test_lab_faults_more.py
        "vrrp-loss",
    }  # fmt: skip
    assert covered == set(SCENARIOS)
