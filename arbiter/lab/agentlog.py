"""The agents' decisions on the lab's timeline: each node's `agent.log` (one JSON line per decision) read back
into `Event`s. Pure apart from `read_agent_log`: parsing takes the text and the clock offset as arguments.

A decision line carries `time`, `instance`, `rule`, `reason` and `gate`; lines that are not JSON objects
(tracebacks, start-up messages) are skipped. Times: a monotonic stamp (`mono`/`monotonic`) is used as it is;
a wall-clock one (`time`/`ts`/`timestamp`: epoch seconds or ISO 8601) is moved onto the monotonic clock with
the offset `wall - monotonic` measured by the lab.

The timeline gets changes only — a decision repeated every cycle would drown the picture:
- `GATE` when an instance's gate changes, `DECISION` when only its rule does;
- `FENCE` for every fencing line: a decision whose actions fence a peer (requested), or a fence result
  (`OFF`/already off = confirmed; anything else = failed). The event's node is the node fenced.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from arbiter.lab.events import DECISION, FENCE, GATE, Event

MONO_KEYS = ("mono", "monotonic", "t_mono")
WALL_KEYS = ("time", "ts", "timestamp", "t")
CONFIRMED = ("off", "already-off", "confirmed")


@dataclass(frozen=True)
class AgentRecord:
    """One line of an agent's log that the lab understands."""

    t: float  # monotonic seconds
    node: str  # lab node whose agent wrote it
    instance: str
    rule: str
    reason: str
    gate: str  # "open", "closed" or "" (a line about something else, e.g. a fence result)
    fence_target: str = ""  # lab node name, when the line is about fencing
    fence_state: str = ""  # "requested", "confirmed" or "failed"
    fence_detail: str = ""


def lab_node(name: str) -> str:
    """Arbiter node `node-a` is lab node `a` (see agentconf.arbiter_name)."""
    return name.removeprefix("node-")


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _when(obj: Mapping[str, Any], wall_minus_mono: float) -> float | None:
    for key in MONO_KEYS:
        value = _number(obj.get(key))
        if value is not None:
            return value
    for key in WALL_KEYS:
        raw = obj.get(key)
        value = _number(raw)
        if value is None and isinstance(raw, str):
            try:
                value = datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
            except ValueError:
                value = None
        if value is not None and value > 1e9:  # epoch seconds; smaller numbers are not wall-clock stamps
            return value - wall_minus_mono
    return None


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _gate(value: object) -> str:
    text = _text(value).strip().lower()
    if text in ("open", "0", "false"):
        return "open"
    if text in ("closed", "close", "1", "true"):
        return "closed"
    return text.removeprefix("gate.")


def _fence_of(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(target, state, detail) when the line is about fencing, else ("", "", "").

    `event: fence-attempt` (one level tried: `result`) is an "attempt"; `event: fence` with an `outcome` is the
    fence's end: "confirmed" when the outcome is off (or already off), else "failed"; a decision whose actions
    fence a peer is "requested" (its target may be unnamed: see `timeline_events`)."""
    kind = " ".join(_text(obj.get(k)) for k in ("event", "kind", "type")).lower()
    if "fence" in kind:
        target = lab_node(_text(obj.get("peer") or obj.get("target")))
        if "attempt" in kind:
            result = _text(obj.get("result") or obj.get("outcome"))
            parts = [
                f"level {_text(obj.get('level'))}" if obj.get("level") is not None else "",
                _text(obj.get("device") or obj.get("driver")),
                result,
            ]
            if obj.get("duration_ms") is not None:
                parts.append(f"{_text(obj.get('duration_ms'))} ms")
            return target, "attempt", " ".join(p for p in parts if p)
        outcome = _text(obj.get("outcome") or obj.get("result")).lower()
        if not outcome or outcome in ("requested", "started", "dispatched"):
            state = "requested"
        else:
            state = "confirmed" if outcome.replace("_", "-") in CONFIRMED else "failed"
        proof = _text(obj.get("proof") or obj.get("reason"))
        return target, state, "; ".join(x for x in (outcome, proof) if x)
    for action in obj.get("actions") or ():
        text = _text(action)
        if "fence" not in text.lower():
            continue
        target = ""
        if isinstance(action, Mapping):
            target = _text(action.get("peer") or action.get("target"))
        else:
            words = text.replace("(", " ").replace(",", " ").replace("=", " ").replace("'", " ").split()
            target = next((w for w in words if w.startswith("node-")), "")
        return lab_node(target), "requested", _text(obj.get("rule"))
    return "", "", ""


def parse_line(line: str, node: str, wall_minus_mono: float) -> AgentRecord | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    t = _when(obj, wall_minus_mono)
    if t is None:
        return None
    target, state, detail = _fence_of(obj)
    gate = _gate(obj.get("gate"))
    if not gate and not state:
        return None
    return AgentRecord(
        t=t,
        node=node,
        instance=_text(obj.get("instance")),
        rule=_text(obj.get("rule")),
        reason=_text(obj.get("reason")),
        gate=gate,
        fence_target=target,
        fence_state=state,
        fence_detail=detail,
    )


def parse_log(text: str, node: str, wall_minus_mono: float) -> list[AgentRecord]:
    records = [parse_line(line, node, wall_minus_mono) for line in text.splitlines()]
    return sorted((r for r in records if r is not None), key=lambda r: r.t)


def read_agent_log(path: Path, node: str, wall_minus_mono: float) -> list[AgentRecord]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return parse_log(text, node, wall_minus_mono)


def _why(record: AgentRecord) -> str:
    return f"{record.rule}: {record.reason}" if record.rule else record.reason


def timeline_events(records: Iterable[AgentRecord], nodes: Sequence[str] = ()) -> list[Event]:
    """The changes in `records` (any number of nodes) as timeline events, in time order. A fence requested
    without naming its target is put on the one other node of `nodes` (two-node labs), else on "?"."""
    events: list[Event] = []
    last: dict[tuple[str, str], tuple[str, str]] = {}
    pending: set[tuple[str, str]] = set()  # (fencer, target) with a request shown and no result yet
    for r in sorted(records, key=lambda r: r.t):
        if r.gate:
            key = (r.node, r.instance)
            before = last.get(key)
            if before is None or before[0] != r.gate:
                events.append(Event(r.t, GATE, r.node, f"{r.instance} {r.gate} {_why(r)}".strip()))
            elif before[1] != r.rule:
                events.append(Event(r.t, DECISION, r.node, f"{r.instance} {r.gate} {_why(r)}".strip()))
            last[key] = (r.gate, r.rule)
        if r.fence_state:
            others = [n for n in nodes if n != r.node]
            target = r.fence_target or (others[0] if len(others) == 1 else "")
            request = (r.node, target)
            if r.fence_state == "requested":
                if request in pending:
                    continue  # the same request, decided again every cycle until its result
                pending.add(request)
            elif r.fence_state != "attempt":
                pending.discard(request)
            detail = f"by {r.node}: {r.fence_state}" + (f" ({r.fence_detail})" if r.fence_detail else "")
            events.append(Event(r.t, FENCE, target or "?", detail))
    return events
