"""`keepalived-arbiter lab bench loss [--json]`: fast adverts made safe (issue 14), keepalived alone beside the
arbiter.

keepalived users avoid short advert intervals because lost adverts cause false takeovers. Here: VRRPv3 with
advert_int 0.05 s on 2 nodes, and

- the `vrrp-loss` scenario: 10 % of VRRP packets dropped at random at every node for `--seconds` s (default
  60), then healed; per run the dual-master events (dual periods), dual-master ms and ms per minute of loss, and
  VIP moves, over the loss and the settling after it (one run per side), and the agents' gate closes per minute
  of loss (the price of the veto: each close puts that node's keepalived in FAULT until the gate reopens);
- the `power-off` scenario at the same settings: failover and the failover that stuck (medians over `--runs`
  runs per side, default 3).

Goals: 0 dual-master events with the arbiter; the arbiter's power-off failover ≤ 1.10 × keepalived alone's
(medians). The summary and the goals are pure functions of the per-run figures, unit-tested without a lab.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from arbiter.lab.bench.scenarios import NOT_MEASURED, POWER_OFF_RATIO, Goal, format_figure, ratio
from arbiter.lab.netns import LabError

ADVERT_INT = 0.05
VRRP_VERSION = 3
DEFAULT_SECONDS = 60.0
DEFAULT_POWER_OFF_RUNS = 3
SIDES = ("alone", "arbiter")
Runner = Callable[..., dict[str, Any]]


def reduce_loss(result: dict[str, Any]) -> dict[str, Any]:
    """One `vrrp-loss` run's figures (the scenario's `loss`), its violations, and `gate_closes`: how often an
    agent closed a gate from the start of the loss on (each one puts that node's keepalived in FAULT; 0 alone)."""
    start = next((p["from_s"] for p in result.get("phases", []) if p["phase"] == "fault"), None)
    closes = sum(
        1
        for e in result.get("timeline", [])
        if start is not None and e["kind"] == "gate" and e["t"] >= start and e["detail"].split()[1:2] == ["closed"]
    )
    return {"seed": result["seed"], **result["loss"], "gate_closes": closes, "violations": result["violations"]}


def reduce_power_off(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "seed": result["seed"],
        "failover_ms": result["failover_ms"],
        "settled_ms": result.get("settled_ms"),
        "dual_master_ms": result["dual_master_ms"],
        "holders_at_end": result["holders_at_end"],
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


def summarise_loss(runs: Sequence[dict[str, Any]], errors: Sequence[str] = ()) -> dict[str, Any]:
    seconds = sum(r["seconds"] for r in runs)
    dual_ms = sum(r["dual_master_ms"] for r in runs)
    return {
        "runs": len(runs),
        "errors": list(errors),
        "seconds": seconds,
        "dual_events": sum(r["dual_events"] for r in runs),
        "dual_master_ms": round(dual_ms, 1),
        "dual_ms_per_min": round(dual_ms * 60 / seconds, 1) if seconds else None,
        "vip_moves": sum(r["vip_moves"] for r in runs),
        "gate_closes": sum(r["gate_closes"] for r in runs),
        "gate_closes_per_min": round(sum(r["gate_closes"] for r in runs) * 60 / seconds, 1) if seconds else None,
        "per_run": list(runs),
    }


def summarise_power_off(runs: Sequence[dict[str, Any]], errors: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "runs": len(runs),
        "errors": list(errors),
        "failover_ms": _median([r["failover_ms"] for r in runs]),
        "failover_ms_all": [r["failover_ms"] for r in runs],
        "settled_ms": _median([r["settled_ms"] for r in runs]),
        "settled_ms_all": [r["settled_ms"] for r in runs],
        "dual_master_ms_max": max((r["dual_master_ms"] for r in runs), default=None),
        "per_run": list(runs),
    }


def goals(loss: dict[str, dict[str, Any]], power_off: dict[str, dict[str, Any]]) -> list[Goal]:
    """Issue 14's goals for this bench, from the summaries (`loss[side]`, `power_off[side]`)."""
    out: list[Goal] = []
    arb = loss["arbiter"]
    measured = arb["runs"] > 0 and not arb["errors"]
    out.append(
        Goal(
            f"vrrp-loss v{VRRP_VERSION}/{ADVERT_INT:g}s",
            "0 dual-master events with the arbiter",
            arb["dual_events"] == 0 if measured else None,
            f"{arb['dual_events']} events, {arb['dual_master_ms']} ms in {arb['seconds']:g} s of loss "
            f"(keepalived alone: {loss['alone']['dual_events']} events, {loss['alone']['dual_master_ms']} ms)",
        )
    )
    alone, with_arbiter = power_off["alone"], power_off["arbiter"]
    failover = ratio(with_arbiter["failover_ms"], alone["failover_ms"])
    stuck = ratio(with_arbiter["settled_ms"], alone["settled_ms"])
    out.append(
        Goal(
            f"power-off v{VRRP_VERSION}/{ADVERT_INT:g}s",
            f"failover ≤ {POWER_OFF_RATIO:.2f} × keepalived alone (medians)",
            None if failover is None else failover <= POWER_OFF_RATIO,
            f"failover {with_arbiter['failover_ms']} / {alone['failover_ms']} = {failover}; "
            f"stuck {with_arbiter['settled_ms']} / {alone['settled_ms']} = {stuck}",
        )
    )
    return out


# --- running ---------------------------------------------------------------------------------------------


def _runs(
    scenario: str,
    arbiter: bool,
    runs: int,
    runner: Runner,
    reduce: Callable[[dict[str, Any]], dict[str, Any]],
    progress: Callable[[str], None],
    **extra: Any,
) -> tuple[list[dict[str, Any]], list[str]]:
    done: list[dict[str, Any]] = []
    errors: list[str] = []
    side = "arbiter" if arbiter else "alone"
    for seed in range(1, runs + 1):
        started = time.monotonic()
        try:
            result = runner(
                scenario, seed=seed, advert_int=ADVERT_INT, vrrp_version=VRRP_VERSION, arbiter=arbiter, **extra
            )
        except LabError as exc:
            errors.append(f"seed {seed}: {exc}")
            progress(f"{scenario} {side} seed {seed}: error: {exc}")
            continue
        done.append(reduce(result))
        progress(f"{scenario} {side} seed {seed}: {time.monotonic() - started:.0f} s")
    return done, errors


def measure(
    seconds: float, loss_runs: int, power_off_runs: int, runner: Runner, progress: Callable[[str], None]
) -> dict[str, Any]:
    loss: dict[str, dict[str, Any]] = {}
    power_off: dict[str, dict[str, Any]] = {}
    for side in SIDES:
        runs, errors = _runs("vrrp-loss", side == "arbiter", loss_runs, runner, reduce_loss, progress, hold=seconds)
        loss[side] = summarise_loss(runs, errors)
    for side in SIDES:
        runs, errors = _runs("power-off", side == "arbiter", power_off_runs, runner, reduce_power_off, progress)
        power_off[side] = summarise_power_off(runs, errors)
    return {
        "bench": "loss",
        "advert_int": ADVERT_INT,
        "vrrp_version": VRRP_VERSION,
        "loss": loss,
        "power_off": power_off,
        "failover_ratio": ratio(power_off["arbiter"]["failover_ms"], power_off["alone"]["failover_ms"]),
        "settled_ratio": ratio(power_off["arbiter"]["settled_ms"], power_off["alone"]["settled_ms"]),
        "goals": [g.as_dict() for g in goals(loss, power_off)],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from arbiter.lab.scenarios import run_scenario  # noqa: PLC0415 - the lab is heavy to import

    seconds = float(getattr(args, "seconds", None) or DEFAULT_SECONDS)
    runs = int(getattr(args, "runs", None) or DEFAULT_POWER_OFF_RUNS)
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"bench: {line}", file=sys.stderr, flush=True)

    result = measure(seconds, 1, runs, run_scenario, progress)
    result["duration_s"] = round(time.monotonic() - started, 1)
    return result


# --- the table ---------------------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    loss, power_off = result["loss"], result["power_off"]
    lines = [
        f"VRRPv{result['vrrp_version']}, advert_int {result['advert_int']:g} s, 2 nodes: keepalived alone beside "
        "keepalived + arbiter",
        "",
        f"vrrp-loss ({loss['alone']['per_run'][0]['percent'] if loss['alone']['per_run'] else '?'} % of VRRP "
        f"dropped at random at every node; {loss['alone']['seconds']:g} s of loss per side)",
        f"  {'':8} {'dual events':>11} {'dual ms':>9} {'dual ms/min':>11} {'VIP moves':>9} {'gate closes/min':>15}",
    ]
    for side in SIDES:
        s = loss[side]
        cells = (s["dual_events"], s["dual_master_ms"], s["dual_ms_per_min"], s["vip_moves"], s["gate_closes_per_min"])
        lines.append(
            f"  {side:8} {cells[0]:>11} {format_figure(cells[1]):>9} {format_figure(cells[2]):>11} {cells[3]:>9}"
            f" {format_figure(cells[4]):>15}"
        )
        for r in s["per_run"] if s["runs"] > 1 else []:
            lines.append(
                f"    seed {r['seed']}: {r['dual_events']} events, {r['dual_master_ms']} ms, moves {r['vip_moves']}"
            )
        lines += [f"    error: {e}" for e in s["errors"]]
    lines += [
        "",
        f"power-off (medians of {max(power_off[s]['runs'] for s in SIDES)} runs per side)",
        f"  {'':8} {'failover ms':>11} {'stuck ms':>9}  all failovers",
    ]
    for side in SIDES:
        s = power_off[side]
        every = " ".join(format_figure(v) for v in s["failover_ms_all"])
        lines.append(f"  {side:8} {format_figure(s['failover_ms']):>11} {format_figure(s['settled_ms']):>9}  {every}")
        lines += [f"    error: {e}" for e in s["errors"]]
    lines.append(
        f"  ratio    {format_figure(result['failover_ratio']):>11} {format_figure(result['settled_ratio']):>9}"
    )
    lines += ["", "goals (issue 14):"]
    for g in result["goals"]:
        mark = NOT_MEASURED if g["met"] is None else "met" if g["met"] else "MISSED"
        lines.append(f"  {mark:12} {g['case']:18} {g['goal']}  [{g['figure']}]")
    if "duration_s" in result:
        lines.append(f"\n{result['duration_s']:g} s")
    return "\n".join(lines)
