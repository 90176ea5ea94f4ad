"""`keepalived-arbiter lab chaos` and `lab replay`: draw (or read) a schedule, save it, run it, and on a violation
shrink it to a minimal schedule that still violates, save that too and print the `lab replay` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from arbiter.lab.chaos.runner import run_chaos
from arbiter.lab.chaos.schedule import Schedule, draw
from arbiter.lab.chaos.shrink import shrink

DEFAULT_DIR = Path("lab-report/chaos")


def kinds_of(violations: list[str]) -> set[str]:
    """What kind of violation each line is (its words before the first colon: "dual master", "writes", ...)."""
    return {v.split(":", 1)[0] for v in violations}


def name_of(schedule: Schedule, arbiter: bool) -> str:
    who = "arbiter" if arbiter else "alone"
    return f"seed{schedule.seed}-{schedule.nodes}n-v{schedule.vrrp_version}-{schedule.duration:g}s-{who}"


def play(
    schedule: Schedule,
    *,
    arbiter: bool,
    report: Path | None,
    save_dir: Path,
    budget: int,
    replay_of: Path | None = None,
) -> dict[str, Any]:
    """Save the schedule, run it, and shrink it on a violation (at most `budget` more runs)."""
    save_dir.mkdir(parents=True, exist_ok=True)
    name = name_of(schedule, arbiter)
    path = replay_of or save_dir / f"{name}.json"
    if replay_of is None:
        path.write_text(schedule.to_json())
    result = run_chaos(schedule, arbiter=arbiter, report_dir=report)
    result["schedule_file"] = str(path)
    result["replay"] = replay_command(path, arbiter)
    if result["violations"] and budget > 0:
        wanted = kinds_of(result["violations"])
        runs: list[dict[str, Any]] = []

        def violates(candidate: Schedule) -> bool:
            found = run_chaos(candidate, arbiter=arbiter)
            runs.append({"events": len(candidate.events), "violations": found["violations"]})
            return bool(kinds_of(found["violations"]) & wanted)

        smallest = shrink(schedule, violates, budget)
        minimal = save_dir / f"{name}-minimal.json"
        minimal.write_text(smallest.to_json())
        result["shrunk"] = {
            "file": str(minimal),
            "events": len(smallest.events),
            "from_events": len(schedule.events),
            "runs": runs,
            "schedule": smallest.describe().splitlines(),
            "replay": replay_command(minimal, arbiter),
        }
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        (report / "schedule.json").write_text(schedule.to_json())
        (report / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def replay_command(path: Path, arbiter: bool) -> str:
    return f"keepalived-arbiter lab replay {path}" + (" --arbiter" if arbiter else "")


def drawn(seed: int, duration: float, nodes: int, vrrp_version: int, advert_int: float) -> Schedule:
    return draw(seed, duration, nodes, vrrp_version=vrrp_version, advert_int=advert_int)


def render(result: dict[str, Any]) -> str:
    who = "keepalived + arbiter" if result["arbiter"] else "keepalived alone"
    w = result["writes"]
    dual = result["dual_master"]
    lines = [
        *result["schedule"],
        "",
        f"{who}: converged {result['converged']}",
        f"writes: {w['sent']} sent, {w['acknowledged']} acknowledged, {w['stored']} stored, {w['missing']} missing; "
        f"writers {', '.join(w['writers']) or 'none'}",
        f"stale_writes {result['stale_writes']}, split_writes {result['split_writes']}",
        f"dual master: {dual['events']} events, {dual['ms']} ms (longest {dual['longest_ms']} ms); "
        f"longest without master {result['no_master_longest_ms']} ms",
        f"nemesis errors: {'; '.join(result['nemesis_errors']) or 'none'}",
        "violations: " + ("none" if not result["violations"] else ""),
        *(f"  - {v}" for v in result["violations"]),
        f"schedule saved: {result['schedule_file']}   replay: {result['replay']}",
    ]
    if "shrunk" in result:
        s = result["shrunk"]
        lines += [f"shrunk to {s['events']} of {s['from_events']} faults: {s['file']}", *s["schedule"]]
        lines.append(f"replay: {s['replay']}")
    return "\n".join(lines)
