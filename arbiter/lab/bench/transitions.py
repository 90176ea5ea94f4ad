"""`keepalived-arbiter lab bench transitions [--json]`: issue 12's table, keepalived alone beside the arbiter,
through every transition an operator lives through (start-up, restarts, returns, preemption).

Every case is one lab scenario (`arbiter.lab.scenarios.run_scenario`) at one timing (VRRPv2 advert_int 1 s,
VRRPv3 0.1 s) on 2 nodes and, where it means something, 3; each runs with keepalived alone, then with the
arbiter's agent on every node, with the same seed. The lab judges each run from the first keepalived start, per
phase (start-up, fault, restart, return, heal, …): `dual_master_ms`, `vip_moves`, `no_master_ms`, `arp_flaps`,
`fences`. Several runs of a case (`--runs`) are summarised by their worst figure.

Goals (issue 12), judged per case from the summaries (`goals`: case, goal, met, figure):
- 0 ms dual master in every phase, start-up included (with the arbiter).
- `vip_moves` with the arbiter ≤ keepalived alone's, where keepalived alone splits (has any dual master) counting
  only the moves the operator asked for (`asked_moves` of the scenario: one per failover, one per failback); a
  fault keepalived alone cannot see (the reference lost) allows those asked moves too.
- In a handover (the phases the scenario names, e.g. `return`), `no_master_ms` ≤ keepalived alone's + 100 ms.
- agent-restart and rolling-upgrade: 0 VIP moves and 0 fences.

`--scenarios a,b` runs a subset, `--quick` only the 2-node VRRPv3/0.1 s cases. The summary and the goals are pure
functions of the per-run results, unit-tested without a lab.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from arbiter.lab.bench.scenarios import NOT_MEASURED, Goal
from arbiter.lab.bench.scenarios import format_figure as _fmt
from arbiter.lab.netns import LabError

HANDOVER_MARGIN_MS = 100.0
FIGURES = ("dual_master_ms", "vip_moves", "no_master_ms", "arp_flaps", "fences")
TIMINGS = ((1.0, 2), (0.1, 3))
# Scenario -> the timings it runs at (None: both).
SCENARIOS: dict[str, tuple[tuple[float, int], ...] | None] = {
    "cold-start": None,
    "staggered-start": None,
    "agent-restart-master": None,
    "agent-restart-backup": None,
    "keepalived-restart": None,
    "rolling-upgrade": None,
    "return-preempt": None,
    "heal-preempt": None,
    "isolate": ((0.1, 3),),
    "nopreempt-return": None,
}
QUIET = ("agent-restart-master", "agent-restart-backup", "rolling-upgrade")  # 0 moves, 0 fences


@dataclass(frozen=True)
class Case:
    scenario: str
    advert_int: float
    vrrp_version: int
    nodes: int = 2

    @property
    def key(self) -> str:
        return f"{self.scenario} v{self.vrrp_version}/{self.advert_int:g}s n{self.nodes}"


def cases(names: Sequence[str] | None = None, quick: bool = False) -> list[Case]:
    """Every case of the table (or of the named scenarios); quick: the 2-node VRRPv3/0.1 s ones only."""
    from arbiter.lab.scenarios import SCENARIOS as KNOWN  # noqa: PLC0415 - the lab is heavy to import

    chosen = list(SCENARIOS) if not names else list(names)
    unknown = [n for n in chosen if n not in KNOWN]
    if unknown:
        raise LabError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    out: list[Case] = []
    for name in chosen:
        for advert_int, version in SCENARIOS.get(name) or TIMINGS:
            if quick and version != 3:
                continue
            out.append(Case(name, advert_int, version, 2))
            if KNOWN[name].three_nodes and not quick:
                out.append(Case(name, advert_int, version, 3))
    return out


# --- one run, reduced to what the table needs ------------------------------------------------------------


def reduce_run(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one `run_scenario` result that the table keeps (the timeline is dropped)."""
    return {
        "seed": result["seed"],
        "run": result["run"],
        "phases": result["phases"],
        "asked_moves": result.get("asked_moves"),
        "handovers": result.get("handovers", []),
        "holders_at_end": result["holders_at_end"],
        "violations": result["violations"],
        "processes_at_end": result.get("processes_at_end"),
        "duration_s": result.get("duration_s"),
    }


# --- summary and goals: pure -----------------------------------------------------------------------------


def summarise(runs: Sequence[dict[str, Any]], errors: Sequence[str] = ()) -> dict[str, Any]:
    """The worst figure over the runs, for the run and per phase (phases by name, in first-seen order)."""
    phases: dict[str, dict[str, float]] = {}
    for r in runs:
        for p in r["phases"]:
            row = phases.setdefault(p["phase"], {k: 0 for k in FIGURES})
            for k in FIGURES:
                row[k] = max(row[k], p[k])
    return {
        "runs": len(runs),
        "errors": list(errors),
        **{k: max((r["run"][k] for r in runs), default=None) for k in FIGURES},
        "phases": phases,
        "asked_moves": next((r["asked_moves"] for r in runs if r["asked_moves"] is not None), None),
        "handovers": sorted({h for r in runs for h in r["handovers"]}),
        "holders_at_end": sorted({"+".join(r["holders_at_end"]) or "nobody" for r in runs}),
        "violations": sorted({v for r in runs for v in r["violations"]}),
    }


def moves_bound(alone: dict[str, Any], asked: int | None) -> tuple[int | None, str]:
    """How many VIP moves the arbiter may make in a case, and why (see the module docstring)."""
    moves = alone["vip_moves"]
    if asked is None:
        return moves, "keepalived alone's"
    if moves is None:
        return asked, "asked (keepalived alone did not run)"
    if alone["dual_master_ms"]:
        return asked, "asked (keepalived alone splits)"
    if asked > moves:
        return asked, "asked (keepalived alone does not see the fault)"
    return moves, "keepalived alone's"


def goals(rows: dict[str, dict[str, Any]]) -> list[Goal]:
    """Issue 12's goals, judged from the summaries (`rows[case key] = {"scenario", "alone", "arbiter"}`)."""
    out: list[Goal] = []
    for key, row in rows.items():
        al, ar = row["alone"], row["arbiter"]
        if not ar["runs"]:
            out.append(Goal(key, "the arbiter's run completed", None, "; ".join(ar["errors"]) or NOT_MEASURED))
            continue
        dual = {name: p["dual_master_ms"] for name, p in ar["phases"].items() if p["dual_master_ms"]}
        out.append(
            Goal(
                key,
                "0 ms dual master in every phase",
                ar["dual_master_ms"] == 0 and not dual,
                f"run {ar['dual_master_ms']} ms" + "".join(f"; {name} {ms} ms" for name, ms in dual.items()),
            )
        )
        bound, why = moves_bound(al, ar["asked_moves"]) if al["runs"] else (ar["asked_moves"], "asked")
        out.append(
            Goal(
                key,
                "vip_moves ≤ keepalived alone's (asked moves where it splits)",
                None if bound is None else ar["vip_moves"] <= bound,
                f"{ar['vip_moves']} ≤ {bound} ({why}; alone {al['vip_moves']}, asked {ar['asked_moves']})",
            )
        )
        for name in ar["handovers"]:
            mine, theirs = ar["phases"].get(name), al["phases"].get(name)
            if mine is None:
                continue
            met = None if theirs is None else mine["no_master_ms"] <= theirs["no_master_ms"] + HANDOVER_MARGIN_MS
            figure = f"{mine['no_master_ms']} ≤ {'-' if theirs is None else theirs['no_master_ms']} + 100"
            out.append(Goal(key, f"handover {name}: no_master_ms ≤ alone's + 100 ms", met, figure))
        if row["scenario"] in QUIET:
            out.append(
                Goal(
                    key,
                    "0 VIP moves and 0 fences",
                    ar["vip_moves"] == 0 and ar["fences"] == 0,
                    f"{ar['vip_moves']} moves, {ar['fences']} fences",
                )
            )
    return out


# --- running ---------------------------------------------------------------------------------------------

Runner = Callable[..., dict[str, Any]]


def run_case(case: Case, runs: int, runner: Runner, progress: Callable[[str], None]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scenario": case.scenario,
        "advert_int": case.advert_int,
        "vrrp_version": case.vrrp_version,
        "nodes": case.nodes,
    }
    for side, arbiter in (("alone", False), ("arbiter", True)):
        done: list[dict[str, Any]] = []
        errors: list[str] = []
        for seed in range(1, runs + 1):
            started = time.monotonic()
            try:
                result = runner(
                    case.scenario,
                    seed=seed,
                    advert_int=case.advert_int,
                    vrrp_version=case.vrrp_version,
                    arbiter=arbiter,
                    nodes=case.nodes,
                )
            except LabError as exc:
                errors.append(f"seed {seed}: {exc}")
                progress(f"{case.key} {side} seed {seed}: error: {exc}")
                continue
            done.append(reduce_run(result))
            progress(f"{case.key} {side} seed {seed}: {time.monotonic() - started:.0f} s")
        row[side] = {**summarise(done, errors), "per_run": done}
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    from arbiter.lab.scenarios import run_scenario  # noqa: PLC0415 - the lab is heavy to import

    names = [n for n in (getattr(args, "scenarios", None) or "").split(",") if n]
    quick = bool(getattr(args, "quick", False))
    runs = max(1, int(getattr(args, "runs", None) or 1))
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    rows = {case.key: run_case(case, runs, run_scenario, progress) for case in cases(names, quick)}
    return {
        "bench": "transitions",
        "runs_per_case": runs,
        "rows": rows,
        "goals": [g.as_dict() for g in goals(rows)],
        "duration_s": round(time.monotonic() - started, 1),
    }


# --- the table ---------------------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    widths = {"dual_master_ms": 7, "vip_moves": 5, "no_master_ms": 7, "arp_flaps": 5, "fences": 6}
    titles = {"dual_master_ms": "dual ms", "vip_moves": "moves", "no_master_ms": "nomast ms", "arp_flaps": "flaps"}
    head = f"{'case / phase':38}" + "".join(f" {titles.get(k, k):^{2 * w + 1}}" for k, w in widths.items())
    sub = f"{'':38}" + "".join(f" {'alone':>{w}} {'arb.':>{w}}" for w in widths.values())
    lines = [
        "keepalived alone beside keepalived + arbiter, judged from the first keepalived start "
        f"(worst of {result['runs_per_case']} run(s) per side)",
        "",
        head,
        sub,
    ]
    for key, row in result["rows"].items():
        al, ar = row["alone"], row["arbiter"]
        lines.append(f"{key:38}" + "".join(f" {_fmt(al[k]):>{w}} {_fmt(ar[k]):>{w}}" for k, w in widths.items()))
        for name in list(dict.fromkeys([*al["phases"], *ar["phases"]])):
            pa, pr = al["phases"].get(name, {}), ar["phases"].get(name, {})
            cells = "".join(f" {_fmt(pa.get(k)):>{w}} {_fmt(pr.get(k)):>{w}}" for k, w in widths.items())
            lines.append(f"  {name:36}{cells}")
        for side in ("alone", "arbiter"):
            for error in row[side]["errors"]:
                lines.append(f"    {side}: {error}")
    lines += ["", "goals (issue 12):"]
    for g in result["goals"]:
        mark = NOT_MEASURED if g["met"] is None else "met" if g["met"] else "MISSED"
        lines.append(f"  {mark:12} {g['case']:34} {g['goal']}  [{g['figure']}]")
    lines.append(f"\n{result['duration_s']:g} s")
    return "\n".join(lines)
