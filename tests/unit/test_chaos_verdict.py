"""The chaos checker on synthetic histories: each verdict triggered by a history built for it, and absent from the
same history without the fault."""

from __future__ import annotations

from dataclasses import replace

from arbiter.lab.chaos.runner import able_intervals, powered_off
from arbiter.lab.chaos.schedule import BOOT_HOLD, RESTART_HOLD, Fault, Schedule
from arbiter.lab.chaos.schedule import Event as Planned
from arbiter.lab.chaos.verdict import Bounds, History, check
from arbiter.lab.chaos.workload import LeaseSeen, Stored, Write
from arbiter.lab.events import FENCE, POWER, VIP_ADD, VIP_DEL, Event

VIP = "10.0.0.100"
WALL = 1_000_000.0  # wall - monotonic: the workload's stamps are wall-clock
BOUNDS = Bounds(dual_master_s=1.0, no_master_s=10.0, lease_overlap_s=1.0)


def add(t: float, node: str) -> Event:
    return Event(t, VIP_ADD, node, VIP)


def delete(t: float, node: str) -> Event:
    return Event(t, VIP_DEL, node, VIP)


def lease(t: float, holder: str, token: int | None, up: bool = True, issued: int | None = 0) -> LeaseSeen:
    """The witness's lease; `issued` the highest token it remembers (default: the lease's own token)."""
    return LeaseSeen(WALL + t, "VI_1", holder, token, up, token if issued == 0 else issued)


def stored(value: int, node: str, token: int, t: float) -> Stored:
    return Stored(value, node, token, WALL + t)


def ok(value: int, node: str, token: int, t: float) -> Write:
    return Write(value, WALL + t, "ok", node, token)


def history(**changes: object) -> History:
    """a holds from 1 s to 50 s with the lease (token 7) and writes twice; b takes over at 50 s with token 8."""
    base = History(
        events=[add(1.0, "a"), delete(50.0, "a"), add(50.2, "b")],
        nodes=["a", "b"],
        vip=VIP,
        instance="VI_1",
        start=0.0,
        end=60.0,
        wall_minus_mono=WALL,
        arbiter=True,
        writes=[ok(1, "a", 7, 10.0), ok(2, "a", 7, 20.0), ok(3, "b", 8, 55.0)],
        stored=[stored(1, "a", 7, 10.0), stored(2, "a", 7, 20.0), stored(3, "b", 8, 55.0)],
        leases=[lease(0.5, "node-a", 7), lease(49.9, "", None, issued=7), lease(50.1, "node-b", 8)],
        able={"a": [(0.0, 60.0)], "b": [(0.0, 60.0)]},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_clean_handover_has_no_violation() -> None:
    found = check(history(), BOUNDS)
    assert found["violations"] == []
    assert found["stale_writes"] == 0
    assert found["writes"]["writers"] == ["a", "b"]
    assert found["lease_changes"] == 3


def test_dual_master_beyond_one_advert_interval_is_named_with_its_bound() -> None:
    events = [add(1.0, "a"), add(30.0, "b"), delete(31.5, "a")]
    found = check(history(events=events, leases=[lease(0.5, "node-a", 7), lease(31.6, "node-b", 8)]), BOUNDS)
    assert any("dual master: 1500 ms" in v and "bound of 1000 ms" in v for v in found["violations"])
    short = [add(1.0, "a"), add(30.0, "b"), delete(30.5, "a")]
    assert not any("dual master" in v for v in check(history(events=short), BOUNDS)["violations"])


def test_no_master_counts_only_while_some_node_could_hold() -> None:
    events = [add(1.0, "a"), delete(20.0, "a"), add(40.0, "a")]
    found = check(history(events=events, leases=[lease(0.5, "node-a", 7)]), BOUNDS)
    assert any(v.startswith("no master: 10.0.0.100 held by nobody for 20.0 s") for v in found["violations"])
    busy = {"a": [(0.0, 15.0), (38.0, 60.0)], "b": [(0.0, 15.0), (38.0, 60.0)]}
    found = check(history(events=events, leases=[lease(0.5, "node-a", 7)], able=busy), BOUNDS)
    assert not any(v.startswith("no master") for v in found["violations"])


def test_a_token_going_backwards_at_the_witness() -> None:
    found = check(history(leases=[lease(0.5, "node-a", 7), lease(49.9, "", None), lease(50.1, "node-b", 6)]), BOUNDS)
    assert any("went from 7 back to 6" in v for v in found["violations"])


def test_a_vip_held_while_another_node_holds_the_lease() -> None:
    events = [add(1.0, "a"), delete(53.0, "a"), add(53.1, "b")]
    found = check(history(events=events), BOUNDS)
    assert any(v.startswith("lease: node a held 10.0.0.100 for 2.90 s") for v in found["violations"])


def test_fence_of_the_lease_holder_and_a_mutual_fence() -> None:
    fences = [
        Event(30.0, FENCE, "a", "by b: requested (B4)"),
        Event(30.1, FENCE, "a", "by b: attempt (level 1 ipmi off 160 ms)"),
        Event(32.0, FENCE, "b", "by a: requested (F0)"),
    ]
    found = check(history(events=[*history().events, *fences]), BOUNDS)
    assert any("b fenced a, the lease holder (token 7), at +30.100 s" in v for v in found["violations"])
    assert any(v.startswith("fence: mutual: b asked to fence a") for v in found["violations"])


def test_a_fence_is_judged_at_its_attempt_once_the_lease_has_moved() -> None:
    """B3 asks to fence while it takes the lease; the fence runs once the lease is its own."""
    leases = [lease(0.5, "node-a", 7), lease(49.9, "", None, issued=7), lease(50.1, "node-b", 8)]
    request = Event(49.8, FENCE, "a", "by b: requested (B3)")
    attempt = Event(50.2, FENCE, "a", "by b: attempt (level 1 ipmi off 160 ms)")
    found = check(history(events=[*history().events, request, attempt], leases=leases), BOUNDS)
    assert not any(v.startswith("fence:") for v in found["violations"])
    early = Event(49.8, FENCE, "a", "by b: attempt (level 1 ipmi off 160 ms)")
    found = check(history(events=[*history().events, request, early], leases=leases), BOUNDS)
    assert any(v.startswith("fence: b fenced a, the lease holder") for v in found["violations"])


def test_an_acknowledged_write_missing_from_the_store() -> None:
    found = check(history(stored=history().stored[:2]), BOUNDS)
    assert "writes: 1 acknowledged writes missing from the store (values 3)" in found["violations"]


def test_a_write_from_a_node_without_the_lease_is_stale_unless_within_the_watchers_slack() -> None:
    late = [*history().stored, stored(4, "a", 7, 51.0)]
    found = check(history(stored=late), BOUNDS)
    assert found["stale_writes"] == 1
    assert any("1 stale writes accepted (without the witness's lease" in v for v in found["violations"])
    at_the_change = [*history().stored, stored(4, "a", 7, 49.89)]
    assert check(history(stored=at_the_change), BOUNDS)["stale_writes"] == 0
    witness_down = [lease(0.5, "node-a", 7), lease(45.0, "", None, up=False), lease(50.1, "node-b", 8)]
    unknown = [*history().stored, stored(4, "a", 7, 47.0)]  # the witness did not answer: not judged
    assert check(history(stored=unknown, leases=witness_down), BOUNDS)["stale_writes"] == 0
    assert check(history(stored=late, leases=witness_down), BOUNDS)["stale_writes"] == 1


def test_keepalived_alone_counts_writes_by_the_older_master_of_a_split() -> None:
    events = [add(1.0, "a"), add(30.0, "b"), delete(45.0, "a")]
    writes = [stored(1, "a", 0, 10.0), stored(2, "a", 0, 35.0), stored(3, "b", 0, 36.0)]
    found = check(history(events=events, stored=writes, writes=[], leases=[], arbiter=False), BOUNDS)
    assert found["stale_writes"] == found["split_writes"] == 1
    assert any("while another node took the VIP after it; first: value 2 from a" in v for v in found["violations"])


def test_the_end_needs_exactly_one_holder_and_problems_are_reported() -> None:
    found = check(
        history(events=[add(1.0, "a"), delete(50.0, "a")], agent_problems=["node b: x"], left_behind=["p 1"]), BOUNDS
    )
    assert "the end: 0 nodes hold 10.0.0.100 (none)" in found["violations"]
    assert "agent: node b: x" in found["violations"]
    assert "left behind: p 1" in found["violations"]


def test_able_intervals_leave_out_faults_on_a_node_the_witness_and_a_power_off_until_booted() -> None:
    events = (
        Planned(2.0, 4.0, Fault("isolate", node="a")),
        Planned(10.0, 0.0, Fault("redis-restart-empty")),
        Planned(20.0, 5.0, Fault("power-off", node="b")),
    )
    schedule = Schedule(seed=1, duration=60.0, nodes=2, quiet=10.0, events=events)
    able = able_intervals(schedule, chaos_at=100.0, start=90.0, end=160.0)
    boot = 90.0 + BOOT_HOLD
    assert able["a"] == [(boot, 102.0), (106.0, 110.0), (110.0 + RESTART_HOLD, 160.0)]
    assert able["b"] == [(boot, 110.0), (110.0 + RESTART_HOLD, 120.0), (125.0 + BOOT_HOLD, 160.0)]


def test_a_node_powered_off_by_a_fence_is_not_able_until_it_has_booted_again() -> None:
    schedule = Schedule(seed=1, duration=60.0, nodes=2, quiet=10.0, events=())
    power = [Event(120.0, POWER, "a", "off"), Event(130.0, POWER, "a", "on"), Event(150.0, POWER, "b", "off")]
    off = powered_off(power, 160.0)
    assert off == {"a": [(120.0, 130.0)], "b": [(150.0, 160.0)]}
    able = able_intervals(schedule, chaos_at=100.0, start=90.0, end=160.0, off=off)
    assert able["a"] == [(90.0 + BOOT_HOLD, 120.0), (130.0 + BOOT_HOLD, 160.0)]
    assert able["b"] == [(90.0 + BOOT_HOLD, 150.0)]


def test_a_write_on_a_free_lease_is_stale_unless_the_witness_forgot_it() -> None:
    write = [*history().stored[:2], stored(4, "a", 7, 49.95)]
    ran_out = [lease(0.5, "node-a", 7), lease(49.9, "", None, issued=7), lease(60.0, "node-b", 8)]
    assert check(history(stored=write, leases=ran_out), BOUNDS)["stale_writes"] == 1
    forgot = [lease(0.5, "node-a", 7), lease(49.9, "", None, issued=None), lease(60.0, "node-b", 8)]
    assert check(history(stored=write, leases=forgot), BOUNDS)["stale_writes"] == 0
    newer = [lease(0.5, "node-a", 7), lease(49.9, "", None, issued=9), lease(60.0, "node-b", 8)]
    assert check(history(stored=write, leases=newer), BOUNDS)["stale_writes"] == 1
