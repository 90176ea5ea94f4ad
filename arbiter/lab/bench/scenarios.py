"""`keepalived-arbiter lab bench [scenarios] [--json]`: issue 6's goals, keepalived alone beside the arbiter,
in one run (the default target of `lab bench`).

Every case runs as a full lab scenario (`arbiter.lab.scenarios.run_scenario`), first with keepalived alone,
then with the arbiter's agent on every node, with the same seeds:

    vrrp-cut, hb-cut, isolate, pause-agent-isolate, reference-lost, redis-restart-empty   advert_int 1, VRRPv2
    power-off × RUNS (default 5)                                       advert_int 1 VRRPv2 and 0.1 VRRPv3

Per case and side: dual_master_ms, arp_flaps, failover_ms and settled_ms (the failover that stuck: a successor
that takes the VIP, loses it and takes it again has failed over only the last time) as medians over the runs,
the holders at the end, and violations; the ratios are of the medians, arbiter/alone. The power-off goal needs
both ratios within 1.10. The goals of issue 6 item 6 are
judged from these figures (`goals`). Decision latency and the hook's wall time are measured by the agent's
own benchmark: they appear here as "not measured", never as a number this bench did not measure.

The summary and the goals are pure functions of the per-run results, so they are unit-tested without a lab.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from arbiter.lab.bench.decision import GOAL_P50_MS, GOAL_P99_MS
from arbiter.lab.netns import LabError

LEASE_TTL_MS = 3000.0  # agentconf's ttl_ms
POWER_OFF_RATIO = 1.10
ISOLATE_MARGIN_MS = 100.0
NOT_MEASURED = "not measured"
# Figures of issue 6 item 6 that come from the agent's own measurements, not from lab scenarios.
ELSEWHERE = {
    "decision_latency_p50_ms": f"VIP appears → gate written, p50 (goal < {GOAL_P50_MS:g} ms)",
    "decision_latency_p99_ms": f"VIP appears → gate written, p99 (goal < {GOAL_P99_MS:g} ms)",
    "hook_wall_time_ratio": "hook wall time / `python -c pass` (goal ≤ 1.2)",
}


@dataclass(frozen=True)
class Case:
    scenario: str
    advert_int: float = 1.0
    vrrp_version: int = 2
    runs: int = 1

    @property
    def key(self) -> str:
        return f"{self.scenario} v{self.vrrp_version}/{self.advert_int:g}s"


def cases(runs: int, only: Sequence[str] | None = None) -> list[Case]:
    """Every case of the bench, or those whose key is in `only` (LabError naming the known keys otherwise)."""
    every = _cases(runs)
    if not only:
        return every
    unknown = [key for key in only if key not in {c.key for c in every}]
    if unknown:
        raise LabError(f"unknown case {', '.join(map(repr, unknown))}; known: {', '.join(c.key for c in every)}")
    return [c for c in every if c.key in only]


def _cases(runs: int) -> list[Case]:
    return [
        Case("vrrp-cut"),
        Case("hb-cut"),
        Case("isolate"),
        Case("power-off", 1.0, 2, runs),
        Case("power-off", 0.1, 3, runs),
        Case("pause-agent-isolate"),
        Case("reference-lost"),
        Case("redis-restart-empty"),
    ]


# --- one run, reduced to what the table needs ------------------------------------------------------------


def fence_duration_ms(timeline: Sequence[dict[str, Any]], target: str) -> float | None:
    """From the first fence of `target` requested to its first confirmation after it (timeline seconds)."""
    requested = next((e["t"] for e in timeline if e["kind"] == "fence" and e["node"] == target), None)
    if requested is None:
        return None
    confirmed = next(
        (
            e["t"]
            for e in timeline
            if e["kind"] == "fence" and e["node"] == target and e["t"] >= requested and ": confirmed" in e["detail"]
        ),
        None,
    )
    return None if confirmed is None else round((confirmed - requested) * 1000, 1)


def transitions_after_fault(timeline: Sequence[dict[str, Any]]) -> int:
    """VIP adds and removals after the first fault."""
    fault = next((e["t"] for e in timeline if e["kind"] == "fault"), None)
    if fault is None:
        return 0
    return sum(1 for e in timeline if e["t"] >= fault and e["kind"] in ("vip-add", "vip-del"))


def reduce_run(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one `run_scenario` result that the bench keeps (the timeline is dropped)."""
    timeline = result.get("timeline", [])
    return {
        "seed": result["seed"],
        "dual_master_ms": result["dual_master_ms"],
        "arp_flaps": result["arp_flaps"],
        "failover_ms": result["failover_ms"],
        "settled_ms": result.get("settled_ms"),
        "holders_at_end": result["holders_at_end"],
        "violations": result["violations"],
        "released_by": result.get("released_by"),
        "fence_before_keep": result.get("fence_before_keep"),
        "fence_duration_ms": fence_duration_ms(timeline, "a"),
        "transitions_after_fault": transitions_after_fault(timeline),
        "tokens": result.get("tokens"),
        "duration_s": result.get("duration_s"),
    }


# --- summary and goals: pure -----------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


def holders_text(runs: Sequence[dict[str, Any]]) -> str:
    """`b` when every run ended with b alone; else each ending with its count, e.g. `b×4 a+b×1`."""
    counts = Counter("+".join(r["holders_at_end"]) or "nobody" for r in runs)
    if len(counts) == 1:
        return next(iter(counts))
    return " ".join(f"{h}×{n}" for h, n in counts.most_common())


def summarise(runs: Sequence[dict[str, Any]], errors: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "runs": len(runs),
        "errors": list(errors),
        "dual_master_ms": _median([r["dual_master_ms"] for r in runs]),
        "dual_master_ms_max": max((r["dual_master_ms"] for r in runs), default=None),
        "arp_flaps": _median([r["arp_flaps"] for r in runs]),
        "arp_flaps_max": max((r["arp_flaps"] for r in runs), default=None),
        "failover_ms": _median([r["failover_ms"] for r in runs]),
        "failover_ms_all": [r["failover_ms"] for r in runs],
        "settled_ms": _median([r["settled_ms"] for r in runs]),
        "settled_ms_all": [r["settled_ms"] for r in runs],
        "holders_at_end": holders_text(runs) if runs else "-",
        "violations": sum(len(r["violations"]) for r in runs),
        "released_by": sorted({str(r["released_by"]) for r in runs if r["released_by"]}),
        "fence_before_keep": [r["fence_before_keep"] for r in runs],
        "fence_duration_ms": _median([r["fence_duration_ms"] for r in runs]),
        "transitions_after_fault": max((r["transitions_after_fault"] for r in runs), default=None),
        "tokens": [r["tokens"] for r in runs if r["tokens"] is not None],
    }


def ratio(arbiter: float | None, alone: float | None) -> float | None:
    return None if arbiter is None or not alone else round(arbiter / alone, 3)


@dataclass(frozen=True)
class Goal:
    case: str
    goal: str
    met: bool | None  # None: not measured (or no run completed)
    figure: str

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, "goal": self.goal, "met": self.met, "figure": self.figure}


def _all_ended_with(runs: dict[str, Any], holders: str) -> bool:
    return bool(runs["runs"]) and runs["holders_at_end"] == holders and not runs["errors"]


def goals(rows: dict[str, dict[str, Any]], master_down_ms: float, agent: dict[str, Any] | None = None) -> list[Goal]:
    """Issue 6 item 6, judged from the summaries (`rows[case key] = {"alone": ..., "arbiter": ...}`)."""
    out: list[Goal] = []

    def arb(key: str) -> dict[str, Any] | None:
        row = rows.get(key)
        return None if row is None or not row["arbiter"]["runs"] else row["arbiter"]

    for name in ("vrrp-cut", "hb-cut"):
        a = arb(f"{name} v2/1s")
        met = None if a is None else a["dual_master_ms_max"] == 0 and a["arp_flaps_max"] == 0
        figure = "-" if a is None else f"dual {a['dual_master_ms_max']} ms, flaps {a['arp_flaps_max']} (max)"
        out.append(Goal(name, "dual_master_ms = 0 and arp_flaps = 0", met, figure))

    a = arb("isolate v2/1s")
    if a is None:
        out.append(Goal("isolate", "isolated node ends without the VIP; bounded overlap; fence/step-down", None, "-"))
    else:
        bound = max(LEASE_TTL_MS, a["fence_duration_ms"] or 0.0) + ISOLATE_MARGIN_MS
        out.append(
            Goal(
                "isolate",
                "the isolated node (a) ends without the VIP",
                "a" not in a["holders_at_end"],
                f"holders at end {a['holders_at_end']}",
            )
        )
        out.append(
            Goal(
                "isolate",
                f"dual_master_ms ≤ max(lease TTL, fence time) + {ISOLATE_MARGIN_MS:g} ms",
                a["dual_master_ms_max"] <= bound,
                f"{a['dual_master_ms_max']} ≤ {bound:g}",
            )
        )
        proof = set(a["released_by"]) & {"fence", "step-down"}
        out.append(
            Goal(
                "isolate",
                "a fence or step-down event with its proof",
                bool(proof),
                f"released by {', '.join(a['released_by']) or 'nothing recorded'}",
            )
        )

    for timing in ("v2/1s", "v3/0.1s"):
        row = rows.get(f"power-off {timing}")
        if row is None or not row["alone"]["runs"] or not row["arbiter"]["runs"]:
            out.append(Goal(f"power-off {timing}", "failover ≤ 1.10 × keepalived alone (medians)", None, "-"))
            continue
        r = ratio(row["arbiter"]["failover_ms"], row["alone"]["failover_ms"])
        stuck = ratio(row["arbiter"]["settled_ms"], row["alone"]["settled_ms"])
        out.append(
            Goal(
                f"power-off {timing}",
                f"failover ≤ {POWER_OFF_RATIO:.2f} × keepalived alone (medians)",
                None if r is None or stuck is None else r <= POWER_OFF_RATIO and stuck <= POWER_OFF_RATIO,
                f"failover {row['arbiter']['failover_ms']} / {row['alone']['failover_ms']} = {r}; "
                f"stuck {row['arbiter']['settled_ms']} / {row['alone']['settled_ms']} = {stuck}",
            )
        )

    a = arb("pause-agent-isolate v2/1s")
    keep = [] if a is None else a["fence_before_keep"]
    out.append(
        Goal(
            "pause-agent-isolate",
            "b fences a, and only then keeps the VIP",
            None if a is None else bool(keep) and all(k is True for k in keep) and _all_ended_with(a, "b"),
            "-" if a is None else f"fence before keep {keep}, holders at end {a['holders_at_end']}",
        )
    )

    a = arb("reference-lost v2/1s")
    alone_failover = (rows.get("power-off v2/1s") or {}).get("alone", {}).get("failover_ms") or master_down_ms
    bound = alone_failover + LEASE_TTL_MS
    out.append(
        Goal(
            "reference-lost",
            "the backup holds the VIP within failover + lease TTL",
            None if a is None else _all_ended_with(a, "b") and (a["failover_ms"] or 1e12) <= bound,
            "-" if a is None else f"failover {a['failover_ms']} ≤ {bound:g}, holders {a['holders_at_end']}",
        )
    )

    a = arb("redis-restart-empty v2/1s")
    if a is None:
        out.append(Goal("redis-restart-empty", "no transition, tokens still increasing", None, "-"))
    else:
        tokens = a["tokens"]
        rising = bool(tokens) and all(
            t["before"] is not None and t["after"] is not None and t["after"] > t["before"] for t in tokens
        )
        quiet = a["transitions_after_fault"] == 0 and _all_ended_with(a, "a")
        out.append(
            Goal(
                "redis-restart-empty",
                "no transition",
                quiet,
                f"{a['transitions_after_fault']} VIP changes after the fault",
            )
        )
        out.append(Goal("redis-restart-empty", "tokens still increasing", rising, f"tokens {tokens}"))

    decision, hook = (agent or {}).get("decision"), (agent or {}).get("hook")
    if decision is None:
        for key in ("decision_latency_p50_ms", "decision_latency_p99_ms"):
            out.append(Goal("agent", ELSEWHERE[key], None, f"{key}: {NOT_MEASURED}"))
    else:
        samples = f"{decision['samples']} VIP appearances on node b"
        p50, p99 = decision["p50_ms"], decision["p99_ms"]
        out.append(Goal("agent", ELSEWHERE["decision_latency_p50_ms"], p50 < GOAL_P50_MS, f"p50 {p50} ms ({samples})"))
        out.append(Goal("agent", ELSEWHERE["decision_latency_p99_ms"], p99 < GOAL_P99_MS, f"p99 {p99} ms ({samples})"))
    if hook is None:
        out.append(Goal("agent", ELSEWHERE["hook_wall_time_ratio"], None, f"hook_wall_time_ratio: {NOT_MEASURED}"))
    else:
        figure = f"{hook['hook_ms_median']} / {hook['pass_ms_median']} ms = {hook['ratio']}"
        figure += f" (medians of {hook['rounds']})"
        out.append(Goal("agent", ELSEWHERE["hook_wall_time_ratio"], hook["ratio"] <= 1.2, figure))
    return out


# --- running ---------------------------------------------------------------------------------------------

Runner = Callable[..., dict[str, Any]]


def _run_side(case: Case, arbiter: bool, runner: Runner, progress: Callable[[str], None]) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    errors: list[str] = []
    for seed in range(1, case.runs + 1):
        side = "arbiter" if arbiter else "alone"
        started = time.monotonic()
        try:
            result = runner(
                case.scenario, seed=seed, advert_int=case.advert_int, vrrp_version=case.vrrp_version, arbiter=arbiter
            )
        except LabError as exc:
            errors.append(f"seed {seed}: {exc}")
            progress(f"{case.key} {side} seed {seed}: error: {exc}")
            continue
        runs.append(reduce_run(result))
        progress(f"{case.key} {side} seed {seed}: {time.monotonic() - started:.0f} s")
    return {**summarise(runs, errors), "per_run": runs}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from arbiter.lab.scenarios import Timing, run_scenario  # noqa: PLC0415 - the lab is heavy to import
    from arbiter.lab.topology import LabSpec  # noqa: PLC0415

    runs = max(1, int(getattr(args, "runs", 5) or 5))
    only = getattr(args, "case", None)
    selected = cases(runs, only)
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    rows: dict[str, dict[str, Any]] = {}
    for case in selected:
        rows[case.key] = {
            "scenario": case.scenario,
            "advert_int": case.advert_int,
            "vrrp_version": case.vrrp_version,
            "alone": _run_side(case, False, run_scenario, progress),
            "arbiter": _run_side(case, True, run_scenario, progress),
        }
        for figure in ("failover_ms", "settled_ms"):
            rows[case.key][f"{figure.removesuffix('_ms')}_ratio"] = ratio(
                rows[case.key]["arbiter"][figure], rows[case.key]["alone"][figure]
            )
    master_down_ms = Timing.of(LabSpec()).master_down * 1000
    from arbiter.lab.bench import decision, hook  # noqa: PLC0415

    agent: dict[str, Any] = {}
    for name, measure in () if only else (("decision", decision.measure), ("hook", hook.measure)):
        progress(f"agent: {name}")
        try:
            agent[name] = measure(100)
        except (LabError, OSError, RuntimeError) as exc:  # reported as not measured, with the reason
            agent[f"{name}_error"] = str(exc)
    judged = goals(rows, master_down_ms, agent)
    return {
        "bench": "scenarios",
        "runs_per_power_off": runs,
        "rows": rows,
        "goals": [g.as_dict() for g in judged],
        "agent": agent,
        "duration_s": round(time.monotonic() - started, 1),
    }


# --- the table ---------------------------------------------------------------------------------------------


def format_figure(value: object) -> str:
    """One table cell: '-' for no figure, floats without trailing zeros."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render(result: dict[str, Any]) -> str:
    columns = [
        ("dual_master_ms", "dual_master_ms", 8),
        ("arp_flaps", "arp_flaps", 5),
        ("failover_ms", "failover_ms", 8),
        ("settled_ms", "stuck_ms", 8),
        ("holders_at_end", "holders", 7),
        ("violations", "viol.", 5),
    ]
    head = f"{'case':24}" + "".join(f" {title:^{2 * w + 1}}" for _, title, w in columns) + f" {'ratio':>13}"
    sub = f"{'':24}" + "".join(f" {'alone':>{w}} {'arb.':>{w}}" for _, _, w in columns) + f" {'fail.':>6} {'stuck':>6}"
    lines = [
        f"keepalived alone beside keepalived + arbiter (medians; power-off: {result['runs_per_power_off']} runs "
        "per side and timing, others 1)",
        "",
        head,
        sub,
    ]
    for key, row in result["rows"].items():
        al, ar = row["alone"], row["arbiter"]
        cells = "".join(f" {format_figure(al[k]):>{w}} {format_figure(ar[k]):>{w}}" for k, _, w in columns)
        ratios = f" {format_figure(row.get('failover_ratio')):>6} {format_figure(row.get('settled_ratio')):>6}"
        lines.append(f"{key:24}{cells}{ratios}")
        for side in ("alone", "arbiter"):
            for error in row[side]["errors"]:
                lines.append(f"    {side}: {error}")
    lines += ["", "goals (issue 6 item 6):"]
    for g in result["goals"]:
        mark = NOT_MEASURED if g["met"] is None else "met" if g["met"] else "MISSED"
        lines.append(f"  {mark:12} {g['case']:20} {g['goal']}  [{g['figure']}]")
    lines.append(f"\n{result['duration_s']:g} s")
    return "\n".join(lines)
