"""`keepalived-arbiter lab compare DIR_A DIR_B`: two runs' reports side by side (what `make demo` prints).

Each DIR is a `lab run --report DIR` directory: `result.json` holds the figures and the timeline, and
`timeline.svg` the picture. Figures first (one row each, both runs), then both timelines in two columns,
with times relative to each run's fault so that the two reactions line up.
"""

from __future__ import annotations

import json
from itertools import zip_longest
from pathlib import Path
from typing import Any

from arbiter.lab.netns import LabError

COLUMN = 76
FIGURES = (
    ("dual_master_ms", "dual master (ms)"),
    ("arp_flaps", "ARP flaps"),
    ("failover_ms", "failover (ms)"),
    ("settled_ms", "failover that stuck (ms)"),
    ("no_master_ms", "no master (ms)"),
    ("holders_at_end", "holders at end"),
    ("released_by", "old master released by"),
    ("fence_before_keep", "fence before keep"),
    ("violations", "violations"),
)


def load(dir: Path) -> dict[str, Any]:
    path = dir / "result.json"
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"{path}: not a `lab run --report` result ({exc})") from exc
    return result


def label(result: dict[str, Any]) -> str:
    who = "with the arbiter" if result.get("arbiter") else "keepalived alone"
    return f"{result.get('scenario', '?')}: {who}"


def _value(result: dict[str, Any], key: str) -> str:
    value = result.get(key)
    if key == "violations":
        return str(len(value or []))
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "nobody"
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _fault_t(result: dict[str, Any]) -> float:
    """The first fault's time on the run's own timeline (0 when there is none)."""
    return next((float(e["t"]) for e in result.get("timeline", []) if e.get("kind") == "fault"), 0.0)


def timeline_lines(result: dict[str, Any]) -> list[str]:
    t_fault = _fault_t(result)
    lines = []
    for e in result.get("timeline", []):
        line = f"{float(e['t']) - t_fault:+8.3f} {e['kind']:10} {e['node'] or '-':2} {e['detail']}"
        lines.append(line if len(line) <= COLUMN else line[: COLUMN - 1] + "…")
    return lines


def compare(dir_a: Path, dir_b: Path) -> str:
    a, b = load(dir_a), load(dir_b)
    out = [f"{'':24}{label(a):>26}  {label(b):>26}"]
    for key, name in FIGURES:
        out.append(f"{name:24}{_value(a, key):>26}  {_value(b, key):>26}")
    for result in (a, b):
        for violation in result.get("violations", []):
            out.append(f"  {label(result)}: {violation}")
    out += ["", f"{label(a):{COLUMN}}  {label(b)}", f"{'(seconds since the fault)':{COLUMN}}  "]
    for left, right in zip_longest(timeline_lines(a), timeline_lines(b), fillvalue=""):
        out.append(f"{left:{COLUMN}}  {right}".rstrip())
    out.append("")
    for dir, result in ((dir_a, a), (dir_b, b)):
        out.append(f"picture ({label(result)}): {dir / 'timeline.svg'}")
    return "\n".join(out)
