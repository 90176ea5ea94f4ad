"""arbiter.lab.fenceclaims: an OFF claim counts only when the target's BMC answered a status read OFF since."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from arbiter.lab.fenceclaims import chassis_log, claims, escalations, unproven_offs

T0 = 1000.0  # the lab's t0 on the monotonic clock
WALL_MINUS_MONO = 1_780_000_000.0  # wall clock - monotonic clock, as the lab measures it
POWER_ON = T0 + 5.0
HELD = "fenced 1.4s ago (hold-down 60s); not fencing again"


def agent(mono: float, **fields: Any) -> str:
    return json.dumps({"ts": mono + WALL_MINUS_MONO, "mono": mono, "node": "node-a", **fields})


def fence(mono: float, outcome: str, proof: str = "status OFF read from ipmi 10.0.9.22:623", reason: str = "") -> str:
    return agent(mono, event="fence", peer="node-b", token=7, outcome=outcome, proof=proof, reason=reason)


def bmc(mono: float, message: str) -> str:
    stamp = datetime.fromtimestamp(mono + WALL_MINUS_MONO, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123+0000"
    return f"{stamp} [4242] {message}"


def found(agent_lines: list[str], bmc_lines: list[str]) -> dict[str, list[dict[str, Any]]]:
    chassis = chassis_log("\n".join(bmc_lines), WALL_MINUS_MONO)
    return claims("\n".join(agent_lines), chassis, "b", POWER_ON, T0)


def test_chassis_log_lines_land_on_the_monotonic_clock() -> None:
    parsed = chassis_log(bmc(T0 + 1.5, "get power: 0") + "\nnot a log line\n", WALL_MINUS_MONO)
    assert len(parsed) == 1
    assert abs(parsed[0][0] - (T0 + 1.5)) < 1e-5 and parsed[0][1] == "get power: 0"


def test_held_down_offs_while_the_bmc_reads_on_are_unproven() -> None:
    """What main's agent did: OFF every cycle inside the hold-down on the proof of the first fence."""
    lines = [
        fence(T0 + 3.6, "off"),
        fence(POWER_ON + 0.4, "off", reason=HELD),
        fence(POWER_ON + 0.5, "off", reason=HELD),
    ]
    reads = [bmc(T0 + 3.5, "get power: 0"), bmc(POWER_ON + 0.1, "set power 1: done, power is 1")]
    reads += [bmc(POWER_ON + 0.39, "get power: 1"), bmc(POWER_ON + 0.49, "get power: 1")]
    f = found(lines, reads)
    assert [x["t"] for x in f["fence_lines"]] == [5.4, 5.5]  # the fence before the power-on is not this story
    assert [x["what"] for x in f["bmc_reads"]] == ["set power 1: done, power is 1", "get power: 1", "get power: 1"]
    assert len(unproven_offs(f, POWER_ON - T0)) == 2


def test_an_off_read_since_the_power_on_backs_the_claim() -> None:
    lines = [fence(POWER_ON + 2.0, "off")]
    reads = [bmc(POWER_ON + 1.7, "set power 0: done, power is 0"), bmc(POWER_ON + 1.9, "get power: 0")]
    assert unproven_offs(found(lines, reads), POWER_ON - T0) == []


def test_an_off_without_a_read_in_its_proof_is_unproven() -> None:
    lines = [fence(POWER_ON + 2.0, "off", proof="fenced earlier")]
    assert len(unproven_offs(found(lines, [bmc(POWER_ON + 1.9, "get power: 0")]), POWER_ON - T0)) == 1


def test_outcomes_that_claim_nothing_are_not_counted() -> None:
    lines = [fence(POWER_ON + 1.0, "failed", proof=""), fence(POWER_ON + 1.1, "held-down", proof="", reason=HELD)]
    assert unproven_offs(found(lines, []), POWER_ON - T0) == []


def test_a_fence_ineffective_escalation_is_found_as_an_alert_or_in_a_fence_line() -> None:
    lines = [
        agent(POWER_ON + 1.0, event="alert", instance="VI_1", kind="split-brain", detail="x"),
        agent(POWER_ON + 1.1, event="alert", kind="fence_ineffective", peer="node-b"),
        fence(POWER_ON + 1.2, "on", proof="", reason="fence-ineffective: node-b reads ON inside the hold-down"),
    ]
    f = found(lines, [])
    assert [a["t"] for a in f["alerts"]] == [6.0, 6.1, 6.2]
    assert [a["t"] for a in escalations(f)] == [6.1, 6.2]


def test_a_read_from_before_the_power_on_backs_nothing_after_it() -> None:
    """The read between the scenario's power-on and the BMC switching on still said 0: it proves nothing later."""
    lines = [fence(POWER_ON + 0.5, "off", reason=HELD)]
    reads = [bmc(POWER_ON + 0.05, "get power: 0"), bmc(POWER_ON + 0.1, "set power 1: done, power is 1")]
    assert len(unproven_offs(found(lines, reads), POWER_ON - T0)) == 1


def test_a_refence_after_the_power_on_backs_the_claims_after_it() -> None:
    lines = [fence(POWER_ON + 1.0, "off", reason=HELD), fence(POWER_ON + 3.0, "off")]
    reads = [bmc(POWER_ON + 0.1, "set power 1: done, power is 1"), bmc(POWER_ON + 2.5, "set power 0: done, power is 0")]
    reads += [bmc(POWER_ON + 2.9, "get power: 0")]
    assert [x["t"] for x in unproven_offs(found(lines, reads), POWER_ON - T0)] == [6.0]
