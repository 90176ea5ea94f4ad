"""Issue 12's judge without a lab: transition figures per phase (checker) and the transitions bench's summary
and goals, on synthetic histories whose figures are computed by hand first."""

from __future__ import annotations

from typing import Any

import pytest

from arbiter.lab.bench.transitions import Case, cases, goals, moves_bound, reduce_run, summarise
from arbiter.lab.checker import figures, hold_intervals, judge, phase_figures, phase_windows, vip_moves
from arbiter.lab.events import ARP, FENCE, VIP_ADD, VIP_DEL, Event

VIP = "10.0.0.100"
NODES = ["a", "b"]
MAC = {"a": "02:00:00:00:00:01", "b": "02:00:00:00:00:02"}


def add(t: float, node: str) -> Event:
    return Event(t, VIP_ADD, node, VIP)


def delete(t: float, node: str) -> Event:
    return Event(t, VIP_DEL, node, VIP)


def arp(t: float, node: str = "") -> Event:
    mac = MAC.get(node, "-")
    return Event(t, ARP, node, f"{VIP} {mac} {mac}")


def preempt_bounce() -> list[Event]:
    """Start-up: a takes the VIP at 1.0. Fault at 5: a dies, b takes over at 6. Return at 10: the handover
    bounces b -> (none) -> a -> b -> a with 0.3 s of dual master (a, b) at 12.0-12.3 and a fence request."""
    return [
        add(1.0, "a"),
        arp(1.01, "a"),
        delete(5.0, "a"),
        arp(5.01),
        add(6.0, "b"),
        arp(6.01, "b"),
        delete(11.0, "b"),
        add(11.2, "a"),
        arp(11.21, "a"),
        add(12.0, "b"),
        arp(12.01, "b"),
        Event(12.1, FENCE, "b", "by a: requested (ipmi)"),
        Event(12.2, FENCE, "b", "by a: confirmed OFF"),
        delete(12.3, "b"),
        arp(12.31, "a"),
    ]


MARKS = [("start-up", 0.0), ("fault", 5.0), ("return", 10.0)]


def test_phase_windows_run_from_mark_to_mark_and_the_last_to_the_end() -> None:
    assert phase_windows([("fault", 5.0), ("start-up", 0.0)], 20.0) == [("start-up", 0.0, 5.0), ("fault", 5.0, 20.0)]
    assert phase_windows([], 20.0) == []


def test_vip_moves_count_changes_of_holder_not_the_first_acquisition_nor_a_gap() -> None:
    intervals = hold_intervals(preempt_bounce(), NODES, VIP, 20.0)
    assert vip_moves(intervals) == [(6.0, "a", "b"), (11.2, "b", "a"), (12.0, "a", "b"), (12.3, "b", "a")]
    # a -> nobody -> a is no move.
    again = hold_intervals([add(1.0, "a"), delete(2.0, "a"), add(3.0, "a")], NODES, VIP, 5.0)
    assert vip_moves(again) == []


def test_figures_per_phase_and_for_the_whole_run() -> None:
    run, phases = phase_figures(preempt_bounce(), NODES, VIP, MARKS, 20.0)
    by_name = {name: f for name, _, _, f in phases}
    # start-up: nobody holds 0-1 s; no move, flap or fence.
    assert by_name["start-up"].as_dict() == {
        "dual_master_ms": 0.0,
        "vip_moves": 0,
        "no_master_ms": 1000.0,
        "arp_flaps": 0,
        "fences": 0,
    }
    # fault: 5-6 s without a master, one move a -> b, one flap a -> (gap) -> b.
    assert by_name["fault"].as_dict() == {
        "dual_master_ms": 0.0,
        "vip_moves": 1,
        "no_master_ms": 1000.0,
        "arp_flaps": 1,
        "fences": 0,
    }
    # return: 11.0-11.2 without a master, 12.0-12.3 dual master, three moves and three flaps, one fence request.
    got = by_name["return"]
    assert got.dual_master_ms == pytest.approx(300.0)
    assert got.no_master_ms == pytest.approx(200.0)
    assert (got.vip_moves, got.arp_flaps, got.fences) == (3, 3, 1)
    assert run.vip_moves == 4
    assert run.arp_flaps == 4
    assert run.fences == 1
    assert run.dual_master_ms == pytest.approx(300.0)
    assert run.no_master_ms == pytest.approx(2200.0)


def test_a_dual_master_at_start_up_counts_when_judged_from_the_first_start() -> None:
    """What `converged` used to hide: a start-up bounce a -> b -> a with 50 ms of dual master."""
    history = [add(1.0, "a"), add(1.2, "b"), delete(1.25, "b"), Event(3.0, VIP_ADD, "x", "other")]
    judged = judge(history, NODES, VIP, None, None, 10.0, None, 0.5)
    assert judged.dual_master_ms == pytest.approx(50.0)
    assert figures(history, NODES, VIP, 0.5, 2.0).vip_moves == 2
    # Judged from a later "converged" mark, the same run looked clean.
    assert judge(history, NODES, VIP, None, None, 10.0, None, 2.0).dual_master_ms == 0


# --- the bench --------------------------------------------------------------------------------------------


def phase_row(name: str, **figs: float) -> dict[str, Any]:
    base = {"dual_master_ms": 0.0, "vip_moves": 0, "no_master_ms": 0.0, "arp_flaps": 0, "fences": 0}
    return {"phase": name, "from_s": 0.0, "to_s": 1.0, **base, **figs}


def result(phases: list[dict[str, Any]], asked: int | None, handovers: tuple[str, ...] = ()) -> dict[str, Any]:
    """A `run_scenario` result as the bench reads it; the run's figures are the phases' sums."""
    run = {k: sum(p[k] for p in phases) for k in ("dual_master_ms", "vip_moves", "no_master_ms", "arp_flaps", "fences")}
    return {
        "seed": 1,
        "run": run,
        "phases": phases,
        "asked_moves": asked,
        "handovers": list(handovers),
        "holders_at_end": ["a"],
        "violations": [],
        "timeline": [{"t": 0.0, "kind": "note", "node": "", "detail": "dropped"}],
    }


def side(*results: dict[str, Any]) -> dict[str, Any]:
    return summarise([reduce_run(r) for r in results])


def test_summary_keeps_the_worst_run_per_phase() -> None:
    one = result([phase_row("start-up", no_master_ms=300.0), phase_row("return", vip_moves=1)], 2)
    two = result([phase_row("start-up", no_master_ms=200.0, dual_master_ms=5.0), phase_row("return", vip_moves=3)], 2)
    s = side(one, two)
    assert s["runs"] == 2
    assert s["phases"]["start-up"]["no_master_ms"] == 300.0
    assert s["phases"]["start-up"]["dual_master_ms"] == 5.0
    assert s["phases"]["return"]["vip_moves"] == 3
    assert s["vip_moves"] == 3
    assert s["asked_moves"] == 2
    assert "timeline" not in reduce_run(one)


def test_moves_bound_is_alone_unless_alone_splits_or_cannot_see_the_fault() -> None:
    clean = side(result([phase_row("return", vip_moves=2)], 2))
    split = side(result([phase_row("fault", vip_moves=2, dual_master_ms=900.0)], 0))
    blind = side(result([phase_row("fault")], 2))
    assert moves_bound(clean, 2) == (2, "keepalived alone's")
    assert moves_bound(split, 0) == (0, "asked (keepalived alone splits)")
    assert moves_bound(blind, 2) == (2, "asked (keepalived alone does not see the fault)")


def judged(rows: dict[str, dict[str, Any]]) -> dict[tuple[str, str], bool | None]:
    return {(g.case, g.goal): g.met for g in goals(rows)}


def test_goals_today_agent_restart_on_the_master_misses_quiet_and_moves() -> None:
    """The figures of agent-restart-master on current main (4 moves, a start-up bounce) miss three goals."""
    alone = side(result([phase_row("start-up", no_master_ms=400.0), phase_row("agent-restart-a")], 0))
    arb = side(
        result([phase_row("start-up", dual_master_ms=3.0), phase_row("agent-restart-a", vip_moves=4, arp_flaps=4)], 0)
    )
    key = "agent-restart-master v3/0.1s n2"
    met = judged({key: {"scenario": "agent-restart-master", "alone": alone, "arbiter": arb}})
    assert met[(key, "0 ms dual master in every phase")] is False
    assert met[(key, "vip_moves ≤ keepalived alone's (asked moves where it splits)")] is False
    assert met[(key, "0 VIP moves and 0 fences")] is False


def test_goals_met_by_a_clean_handover() -> None:
    alone = side(result([phase_row("fault", vip_moves=1), phase_row("return", vip_moves=1, no_master_ms=80.0)], 2))
    arb = side(
        result([phase_row("fault", vip_moves=1), phase_row("return", vip_moves=1, no_master_ms=170.0)], 2, ("return",))
    )
    key = "return-preempt v3/0.1s n2"
    met = judged({key: {"scenario": "return-preempt", "alone": alone, "arbiter": arb}})
    assert met == {
        (key, "0 ms dual master in every phase"): True,
        (key, "vip_moves ≤ keepalived alone's (asked moves where it splits)"): True,
        (key, "handover return: no_master_ms ≤ alone's + 100 ms"): True,
    }
    slow = side(result([phase_row("return", vip_moves=1, no_master_ms=181.0)], 2, ("return",)))
    met = judged({key: {"scenario": "return-preempt", "alone": alone, "arbiter": slow}})
    assert met[(key, "handover return: no_master_ms ≤ alone's + 100 ms")] is False


def test_a_case_whose_arbiter_run_failed_is_not_measured() -> None:
    alone = side(result([phase_row("start-up")], 0))
    key = "cold-start v2/1s n2"
    rows = {key: {"scenario": "cold-start", "alone": alone, "arbiter": summarise([], ["seed 1: no agent"])}}
    [goal] = goals(rows)
    assert goal.met is None
    assert "no agent" in goal.figure


def test_cases_quick_and_subset() -> None:
    quick = cases(None, quick=True)
    assert quick and all(c.vrrp_version == 3 and c.nodes == 2 for c in quick)
    assert [c.key for c in cases(["isolate"])] == ["isolate v3/0.1s n2", "isolate v3/0.1s n3"]
    assert Case("cold-start", 1.0, 2, 3) in cases(["cold-start"])
    assert all(c.nodes == 2 for c in cases(["agent-restart-master"]))
    with pytest.raises(Exception, match="unknown scenario"):
        cases(["no-such"])
