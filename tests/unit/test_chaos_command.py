"""`lab chaos` / `lab soak` without a lab: the schedule saved before the run, the shrinker wired to the runner's
verdicts (a fake runner that violates exactly when the schedule isolates node a), the soak's mix and its goal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arbiter.lab.chaos import command
from arbiter.lab.chaos.schedule import Event, Fault, Schedule


def fake_run(calls: list[Schedule]) -> Any:
    def run(schedule: Schedule, *, arbiter: bool, report_dir: Path | None) -> dict[str, Any]:
        calls.append(schedule)
        bad = any(e.fault.kind == "isolate" and e.fault.node == "a" for e in schedule.events)
        return {"violations": ["dual master: 1500 ms on 10.0.0.100 (a, b)"] if bad else [], "arbiter": arbiter}

    return run


def schedule() -> Schedule:
    events = (
        Event(1.0, 4.0, Fault("vrrp-cut", node="b", direction="in")),
        Event(6.0, 8.0, Fault("isolate", node="a")),
        Event(9.0, 3.0, Fault("reference-lost", node="b")),
        Event(20.0, 2.0, Fault("serial-cut", node="a", peer="b")),
    )
    return Schedule(seed=5, duration=40.0, nodes=2, events=events).check()


def test_a_violation_is_shrunk_to_the_one_fault_that_causes_it_and_saved_with_its_replay(tmp_path: Path) -> None:
    calls: list[Schedule] = []
    result = command.play(schedule(), arbiter=True, report=None, save_dir=tmp_path, budget=30, run=fake_run(calls))
    saved = tmp_path / "seed5-2n-v2-40s-arbiter.json"
    assert Schedule.from_json(saved.read_text()) == schedule()
    assert result["replay"] == f"keepalived-arbiter lab replay {saved} --arbiter"
    shrunk = result["shrunk"]
    minimal = Schedule.from_json(Path(shrunk["file"]).read_text())
    assert [e.fault for e in minimal.events] == [Fault("isolate", node="a")]
    assert minimal.seed == 5 and minimal.events[0].duration < 8.0
    assert shrunk["replay"].endswith("-minimal.json --arbiter")
    assert len(calls) == 1 + len(shrunk["runs"]) <= 31


def test_a_clean_run_is_not_shrunk(tmp_path: Path) -> None:
    calls: list[Schedule] = []
    quiet = Schedule(seed=6, duration=40.0, nodes=2).check()
    result = command.play(quiet, arbiter=False, report=None, save_dir=tmp_path, budget=30, run=fake_run(calls))
    assert "shrunk" not in result and len(calls) == 1
    assert (tmp_path / "seed6-2n-v2-40s-alone.json").exists()


def test_only_a_violation_of_the_same_kind_keeps_a_shrink_candidate() -> None:
    assert command.kinds_of(["dual master: 5 ms", "writes: 3 stale writes accepted (...)"]) == {"dual master", "writes"}


def test_the_soak_mixes_two_and_three_nodes_both_vrrp_settings_and_both_witnesses() -> None:
    plan = command.soak_plan(8, 11, 60.0)
    assert [s.seed for s in plan] == list(range(11, 19))
    mixes = [(s.nodes, s.vrrp_version, s.advert_int, s.witness) for s in plan]
    assert mixes[:4] == [(2, 2, 1.0, "redis"), (3, 2, 1.0, "redis"), (2, 3, 0.1, "redis"), (3, 3, 0.1, "redis")]
    assert [m[:3] for m in mixes[4:]] == [m[:3] for m in mixes[:4]] and {m[3] for m in mixes[4:]} == {"sentinel"}
    assert all(s.duration == 60.0 and s.events for s in plan)
