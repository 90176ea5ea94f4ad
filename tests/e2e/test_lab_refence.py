"""Fencing that never claims more than it saw (issue 13), on real keepalived with an agent on every node.

- `refence-after-power-on`: every heartbeat medium cut, a fences b; b is powered on again while still cut off.
  a must fence b again or escalate (`fence_ineffective`), and never say b is off without a status read made after
  b's power-on: the BMC's own chassis log is the judge of what was read.
- `witness-down-isolate`: Redis down, then the master cut off from everything but its BMC. b must fence a (a
  status read proves it off), keep the VIP (the failsafe) and take it once, not flash it every master-down.

Each test builds its own lab and checks afterwards that nothing of it is left (tests/e2e/conftest.py).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from arbiter.lab import agentconf
from arbiter.lab.fenceclaims import OFF_OUTCOMES, escalations, unproven_offs
from arbiter.lab.scenarios import Timing, run_scenario
from arbiter.lab.topology import LabSpec

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]

DEADTIME_S = 1.0  # agentconf: deadtime_ms = max(1000, 5 * heartbeat interval), 1 s at these advert intervals
FENCE_S = 3.0  # an IPMI power-off and its status read in the lab take 0.3 s; margin for a loaded host
# A fence without a token waits a lease TTL of silence first (rule 3: any lease the silent node held has run
# out), then the race delay (arbiter.policy, B4 / H6).
TTL_S = agentconf.LEASE_TTL_MS / 1000


def _phases(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["phase"]: p for p in r["phases"]}


def _events(r: dict[str, Any], kind: str, node: str, start: float, end: float = float("inf")) -> list[dict[str, Any]]:
    return [e for e in r["timeline"] if e["kind"] == kind and e["node"] == node and start <= e["t"] < end]


def test_a_fenced_node_powered_on_again_is_fenced_again_never_taken_for_off() -> None:
    r = run_scenario("refence-after-power-on", seed=1, arbiter=True, advert_int=0.1, vrrp_version=3)
    claims = r["refence"]
    phases = _phases(r)
    on_at, heal_at = phases["power-on"]["from_s"], phases["heal"]["from_s"]
    # The set-up: a, the holder, fenced b with a status read before the power-on.
    assert claims["fenced_off_s"] is not None, "a never fenced b: the scenario did not reach its point"
    assert [e["detail"] for e in _events(r, "power", "b", 0, on_at)] == ["off"]
    problems = []  # every goal is judged, so that one run says all that is wrong

    # Nothing says b is off on an old proof: every OFF after the power-on rests on a read made since.
    unproven = unproven_offs(claims, on_at)
    reads = sorted({x["what"] for x in claims["bmc_reads"] if x["t"] > on_at})
    if unproven:
        problems.append(f"{len(unproven)} fence lines say b is off (its BMC answered {reads}): {unproven[:2]}")

    # b, on and silent, is fenced again (a power-off in the BMC's log) or the fencer escalates.
    refenced = [e for e in _events(r, "power", "b", on_at, heal_at) if e["detail"] == "off"]
    if not refenced and not escalations(claims):
        problems.append("b powered on and silent: neither fenced again nor a fence_ineffective alert")

    # b's agent reaches Redis and sees a's lease: it keeps its gate closed, no second master at any phase.
    dual = {name: p["dual_master_ms"] for name, p in phases.items()}
    if dual["fault"] or dual["power-on"] or dual["heal"]:
        problems.append(f"dual master (ms per phase): {dual}")
    if r["holders_at_end"] != ["a"]:
        problems.append(f"holders at the end: {r['holders_at_end']}")
    assert not problems, "\n".join(problems)


def test_witness_down_the_isolated_master_is_fenced_and_the_backup_holds() -> None:
    r = run_scenario("witness-down-isolate", seed=1, arbiter=True)
    claims = r["witness_down"]
    phases = _phases(r)
    fault_at, heal_at = phases["fault"]["from_s"], phases["heal"]["from_s"]
    timing = Timing.of(LabSpec(arbiter=True))
    race = agentconf.RACE_DELAY_MS["b"] / 1000
    problems = []  # every goal is judged, so that one run says all that is wrong

    # b fenced a with a status read as proof, after the deadtime, a lease TTL and its race delay.
    offs = [x for x in claims["fence_lines"] if x["outcome"].lower() in OFF_OUTCOMES and fault_at <= x["t"] < heal_at]
    if not offs:
        problems.append(f"b never fenced a: fence lines {claims['fence_lines'][:3]}")
    elif offs[0]["t"] - fault_at > DEADTIME_S + TTL_S + race + FENCE_S:
        problems.append(f"b fenced a {offs[0]['t'] - fault_at:.1f} s after the isolation: {offs[0]}")
    if unproven_offs(claims, fault_at):
        problems.append(f"OFF claims with no status read OFF: {unproven_offs(claims, fault_at)[:2]}")
    powered = [e["detail"] for e in _events(r, "power", "a", fault_at, heal_at)]
    if powered != ["off"]:
        problems.append(f"a's BMC power changes during the fault: {powered}")

    # b takes the VIP once and holds it to the end of the fault: no flash every master-down.
    adds = _events(r, "vip-add", "b", fault_at, heal_at)
    dels = _events(r, "vip-del", "b", fault_at, heal_at)
    if len(adds) != 1:
        problems.append(f"b added the VIP {len(adds)} times during the fault: {[e['t'] for e in adds]}")
    if not adds or [e for e in dels if e["t"] > adds[-1]["t"]]:
        problems.append(f"b does not hold the VIP at the end of the fault: adds {len(adds)}, removals {len(dels)}")
    # A master again within deadtime + TTL + race delay + fence + master-down (plus a second for a loaded host).
    bound = DEADTIME_S + TTL_S + race + FENCE_S + timing.master_down + 1.0
    if adds and adds[0]["t"] - fault_at > bound:
        problems.append(f"b took the VIP {adds[0]['t'] - fault_at:.1f} s after the isolation (bound {bound:.1f} s)")
    if phases["fault"]["dual_master_ms"]:
        problems.append(f"dual master during the fault: {phases['fault']['dual_master_ms']} ms")
    assert not problems, "\n".join(problems)
