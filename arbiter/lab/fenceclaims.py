"""What a fencing agent said about a node, beside what that node's BMC saw (issue 13: never claim more than seen).

Pure: the callers read the fencer's `agent.log` and the target BMC's chassis log and pass the text. The chassis
log (arbiter.lab.bmc) has a line per status read, `get power: 0|1`, and per power change, `set power N: done,
power is N`, stamped with the wall clock; agent lines carry `mono`, the host's monotonic clock. Times in the
result are seconds since the lab's t0, as on its timeline.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from arbiter.lab.agentlog import lab_node

OFF_OUTCOMES = ("off", "already-off", "already_off")
ESCALATIONS = ("fence_ineffective", "fence-ineffective")
# A status read is logged by the chassis script before ipmi_sim answers; the agent's line comes after the answer.
# The two clocks meet through a wall-minus-monotonic offset measured once: allow this much between them.
CLOCK_SLACK = 0.01


def chassis_log(text: str, wall_minus_mono: float) -> list[tuple[float, str]]:
    """(monotonic time, message) per line of a BMC chassis log: `2026-12-03T14:52:29.123456789+0000 [PID] MSG`."""
    found = []
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        try:
            wall = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            continue
        found.append((wall - wall_minus_mono, rest.partition("] ")[2]))
    return found


def claims(
    agent_log: str, chassis: list[tuple[float, str]], target: str, since: float, t0: float
) -> dict[str, list[dict[str, Any]]]:
    """From `since` (monotonic) on: the fencer's `fence` lines about lab node `target` (outcome, proof, reason),
    its alert lines and any line naming a `fence_ineffective` escalation, and the target BMC's status reads and
    power changes."""
    fences: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    for line in agent_log.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("mono"), int | float) or obj["mono"] < since:
            continue
        t = round(float(obj["mono"]) - t0, 4)
        event = str(obj.get("event", ""))
        text = json.dumps(obj, sort_keys=True)
        if event == "fence" and lab_node(str(obj.get("peer", ""))) == target:
            fences.append(
                {
                    "t": t,
                    "outcome": str(obj.get("outcome", "")),
                    "proof": str(obj.get("proof") or ""),
                    "reason": str(obj.get("reason") or ""),
                }
            )
        if event == "alert" or any(word in text for word in ESCALATIONS):
            alerts.append({"t": t, "event": event, "kind": str(obj.get("kind", "")), "line": text})
    reads = [
        {"t": round(at - t0, 4), "what": what}
        for at, what in chassis
        if at >= since and (what.startswith("get power") or "done, power is" in what)
    ]
    return {"fence_lines": fences, "alerts": alerts, "bmc_reads": reads}


def unproven_offs(found: dict[str, list[dict[str, Any]]], since: float) -> list[dict[str, Any]]:
    """Every fence line after `since` (seconds since t0) that says the target is off while its BMC answered no
    status read OFF (`get power: 0`) after `since` and after the target's last power-on before the line, or whose
    proof names no read."""
    reads = found["bmc_reads"]

    def backed(t: float) -> bool:
        ons = [x["t"] for x in reads if x["what"].endswith("power is 1") and x["t"] <= t]
        after = max([since, *ons])
        return any(x["what"] == "get power: 0" and after < x["t"] <= t + CLOCK_SLACK for x in reads)

    return [
        line
        for line in found["fence_lines"]
        if line["t"] > since
        and line["outcome"].lower() in OFF_OUTCOMES
        and (not backed(line["t"]) or "read" not in line["proof"])
    ]


def escalations(found: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The alert lines that name a `fence_ineffective` escalation."""
    return [a for a in found["alerts"] if any(word in a["line"] for word in ESCALATIONS)]
