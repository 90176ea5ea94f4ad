"""`keepalived-arbiter lab chaos` and `lab replay`: draw (or read) a schedule, save it, run it, and on a violation
shrink it to a minimal schedule that still violates, save that too and print the `lab replay` command."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
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
    run: Callable[..., dict[str, Any]] = run_chaos,
) -> dict[str, Any]:
    """Save the schedule, run it (`run`: `run_chaos`, or a fake in tests), and shrink it on a violation (at most
    `budget` more runs)."""
    save_dir.mkdir(parents=True, exist_ok=True)
    name = name_of(schedule, arbiter)
    path = replay_of or save_dir / f"{name}.json"
    if replay_of is None:
        path.write_text(schedule.to_json())
    result = run(schedule, arbiter=arbiter, report_dir=report)
    result["schedule_file"] = str(path)
    result["replay"] = replay_command(path, arbiter)
    if result["violations"] and budget > 0:
        wanted = kinds_of(result["violations"])
        runs: list[dict[str, Any]] = []

        def violates(candidate: Schedule) -> bool:
            found = run(candidate, arbiter=arbiter, report_dir=None)
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


def drawn(
    seed: int, duration: float, nodes: int, vrrp_version: int, advert_int: float, witness: str = "redis"
) -> Schedule:
    return draw(seed, duration, nodes, vrrp_version=vrrp_version, advert_int=advert_int, witness=witness)


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


# --- the soak: many schedules, the arbiter beside keepalived alone ------------------------------------------

SOAK_DIR = Path("lab-report/soak")
# (nodes, VRRP version, advert_int, witness), seed by seed: every combination once in eight seeds.
MIX = tuple(
    (nodes, version, advert, witness)
    for witness in ("redis", "sentinel")
    for version, advert in ((2, 1.0), (3, 0.1))
    for nodes in (2, 3)
)


def soak_plan(count: int, first_seed: int, duration: float) -> list[Schedule]:
    """`count` schedules from `first_seed` on, mixed in turn: 2 and 3 nodes, VRRPv2/1 s and VRRPv3/0.1 s, one
    Redis and Sentinel as the witness."""
    out = []
    for k in range(count):
        nodes, version, advert, witness = MIX[k % len(MIX)]
        out.append(drawn(first_seed + k, duration, nodes, version, advert, witness))
    return out


def soak(
    count: int, first_seed: int, duration: float, save_dir: Path, budget: int, progress: Any = None
) -> dict[str, Any]:
    """Run each schedule with the arbiter (shrunk on a violation) and with keepalived alone; every result is
    appended to `save_dir/soak.jsonl` as it comes, and a run already there (same seed, settings, who) is not run
    again: a soak stopped halfway goes on where it stopped."""
    save_dir.mkdir(parents=True, exist_ok=True)
    log = save_dir / "soak.jsonl"
    done = {_soak_key(r): r for r in _read_jsonl(log)}
    rows = []
    for schedule in soak_plan(count, first_seed, duration):
        row: dict[str, Any] = {"schedule": schedule}
        for arbiter in (True, False):
            key = (*_settings(schedule), arbiter)
            if key not in done:
                # Each run's report (its picture and every node's logs) is kept only when it violates: a race
                # seen once must be readable after the lab is gone.
                report = save_dir / "reports" / name_of(schedule, arbiter)
                result = play(
                    schedule, arbiter=arbiter, report=report, save_dir=save_dir, budget=budget if arbiter else 0
                )
                if not result["violations"]:
                    shutil.rmtree(report, ignore_errors=True)
                compact = {k: v for k, v in result.items() if k not in ("faults", "schedule")}
                compact["schedule_sha"] = _settings(schedule)[0]
                with log.open("a") as f:
                    f.write(json.dumps(compact) + "\n")
                done[key] = compact
            row["arbiter" if arbiter else "alone"] = done[key]
        rows.append(row)
        if progress is not None:
            progress(soak_row(row))
    return {"rows": [{**_row_figures(r)} for r in rows], "totals": _totals(rows), "file": str(log)}


def _settings(s: Schedule) -> tuple[Any, ...]:
    """What makes two runs the same: the schedule itself (a changed fault catalogue draws other faults)."""
    return (hashlib.sha256(s.to_json().encode()).hexdigest()[:16],)


def _soak_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r.get("schedule_sha"), r["arbiter"])


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def _row_figures(row: dict[str, Any]) -> dict[str, Any]:
    s: Schedule = row["schedule"]
    out: dict[str, Any] = {
        "seed": s.seed,
        "nodes": s.nodes,
        "vrrp": f"v{s.vrrp_version}/{s.advert_int:g}s",
        "witness": s.witness,
        "faults": len(s.events),
    }
    for who in ("arbiter", "alone"):
        r = row[who]
        out[who] = {
            "violations": r["violations"],
            "stale_writes": r["stale_writes"],
            "dual_master_ms": r["dual_master"]["ms"],
            "acknowledged": r["writes"]["acknowledged"],
            "nemesis_errors": len(r["nemesis_errors"]),
            "shrunk": r.get("shrunk", {}).get("file"),
        }
    return out


def soak_row(row: dict[str, Any]) -> str:
    return _line(_row_figures(row))


def _line(f: dict[str, Any]) -> str:
    a, k = f["arbiter"], f["alone"]
    return (
        f"{f['seed']:>5} {f['nodes']:>4}n {f['vrrp']:>8} {f['witness']:>8} {f['faults']:>6} | "
        f"{len(a['violations']):>13} "
        f"{a['stale_writes']:>6} {a['dual_master_ms']:>8.0f} | {len(k['violations']):>11} {k['stale_writes']:>6} "
        f"{k['dual_master_ms']:>8.0f}"
    )


SOAK_HEADER = (
    " seed nodes     vrrp  witness faults | arbiter: viol.  stale  dual ms | alone: viol.  stale  dual ms\n" + "-" * 97
)


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"schedules": len(rows)}
    for who in ("arbiter", "alone"):
        runs = [r[who] for r in rows]
        out[who] = {
            "runs_with_violations": sum(1 for r in runs if r["violations"]),
            "violations": sum(len(r["violations"]) for r in runs),
            "stale_writes": sum(r["stale_writes"] for r in runs),
            "dual_master_ms": round(sum(r["dual_master"]["ms"] for r in runs), 1),
        }
    a = out["arbiter"]
    out["goal"] = "met" if rows and a["violations"] == 0 and a["stale_writes"] == 0 else "missed"
    return out


def render_soak(result: dict[str, Any]) -> str:
    lines = [SOAK_HEADER]
    for f in result["rows"]:
        a = f["arbiter"]
        lines.append(_line(f))
        lines += [f"        arbiter: {v}" for v in a["violations"]]
        if a["shrunk"]:
            lines.append(f"        minimal schedule: {a['shrunk']}")
    t = result["totals"]
    lines += [
        "-" * 97,
        f"{t['schedules']} schedules. arbiter: {t['arbiter']['violations']} violations in "
        f"{t['arbiter']['runs_with_violations']} runs, {t['arbiter']['stale_writes']} stale writes, "
        f"{t['arbiter']['dual_master_ms']:.0f} ms dual master. keepalived alone: {t['alone']['violations']} violations "
        f"in {t['alone']['runs_with_violations']} runs, {t['alone']['stale_writes']} stale writes, "
        f"{t['alone']['dual_master_ms']:.0f} ms dual master.",
        f"goal (0 violations and 0 stale writes with the arbiter): {t['goal']}   results: {result['file']}",
    ]
    return "\n".join(lines)
