"""The chaos shrinker (arbiter/lab/chaos/shrink.py): minimal schedules, the budget, only violating results."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.lab.chaos.schedule import BOOT_HOLD, MIN_FAULT, Event, Fault, Schedule, draw
from arbiter.lab.chaos.shrink import shrink


class Recorder:
    """A `violates` that remembers every schedule it was asked about."""

    def __init__(self, rule: Callable[[Schedule], bool]) -> None:
        self.rule = rule
        self.asked: list[Schedule] = []

    def __call__(self, schedule: Schedule) -> bool:
        self.asked.append(schedule)
        return self.rule(schedule)


def _needs(*faults: Fault) -> Callable[[Schedule], bool]:
    return lambda s: set(faults) <= {e.fault for e in s.events}


def test_two_faults_needed_together_shrink_to_exactly_those_two() -> None:
    schedule = draw(5, 120, 3)
    assert len(schedule.events) >= 20
    first, second = schedule.events[3].fault, schedule.events[17].fault
    violates = Recorder(_needs(first, second))
    small = shrink(schedule, violates, budget=300)
    assert [e.fault for e in small.events] == [first, second]
    assert all(e.duration in (0.0, MIN_FAULT) for e in small.events)  # shortest faults
    assert small.events[0].start == 0.0  # gaps closed
    assert small.events[1].start <= 0.1
    assert (small.seed, small.nodes, small.quiet) == (schedule.seed, schedule.nodes, schedule.quiet)
    assert small.duration < schedule.duration
    assert small.problems() == []
    assert len(violates.asked) <= 300
    assert violates.asked[0].events == ()  # first: does it need any fault at all?


def test_a_violation_without_faults_shrinks_to_no_fault_in_one_call() -> None:
    violates = Recorder(lambda s: True)
    small = shrink(draw(2, 60, 2), violates, budget=50)
    assert small.events == ()
    assert len(violates.asked) == 1


def test_the_budget_caps_the_calls_and_the_result_still_violates() -> None:
    schedule = draw(8, 120, 2)
    first, second = schedule.events[1].fault, schedule.events[-2].fault
    rule = _needs(first, second)
    sizes = []
    for budget in (0, 1, 3, 10, 40):
        violates = Recorder(rule)
        small = shrink(schedule, violates, budget)
        assert len(violates.asked) <= budget
        assert rule(small)
        sizes.append(len(small.events))
    assert sizes[0] == len(schedule.events)  # no call: the input comes back
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] == 2


def test_nothing_smaller_violates_returns_the_input() -> None:
    schedule = draw(4, 60, 2)
    violates = Recorder(lambda s: s == schedule)
    assert shrink(schedule, violates, budget=1000) is schedule
    assert schedule not in violates.asked  # the input is not run again


def test_the_shrinker_is_deterministic() -> None:
    schedule = draw(9, 90, 3)
    rule = _needs(schedule.events[0].fault, schedule.events[5].fault)
    runs = []
    for _ in range(2):
        violates = Recorder(rule)
        runs.append((shrink(schedule, violates, 200).to_json(), [s.to_json() for s in violates.asked]))
    assert runs[0] == runs[1]


def test_a_fault_needing_its_length_keeps_it() -> None:
    """A violation that needs a power-off of at least 3 s: the shrinker halves it only as far as that."""
    off = Event(10.0, 16.0, Fault("power-off", node="a"))
    schedule = Schedule(1, 60, 2, events=(Event(2.0, 5.0, Fault("redis-stop")), off))

    def rule(s: Schedule) -> bool:
        return any(e.fault == off.fault and e.duration >= 3 for e in s.events)

    small = shrink(schedule, Recorder(rule), budget=100)
    assert [(e.fault, e.duration) for e in small.events] == [(off.fault, 4.0)]  # 16 -> 8 -> 4; 2 is too short


def test_a_candidate_that_breaks_a_rule_is_never_run() -> None:
    """Closing gaps goes only as far as the boot after a's power-on: a pause of a during it is never asked."""
    schedule = Schedule(
        1,
        60,
        2,
        events=(
            Event(1.0, 4.0, Fault("power-off", node="a")),
            Event(20.0, 4.0, Fault("pause", node="a", process="keepalived")),
        ),
    )
    violates = Recorder(lambda s: len(s.events) == 2)
    small = shrink(schedule, violates, budget=100)
    assert all(s.problems() == [] for s in violates.asked)
    off, pause = small.events
    assert pause.start >= off.start + off.duration + BOOT_HOLD
    assert pause.start < 20.0  # the gap did close, as far as the boot allows
    assert any(len(s.events) == 2 and s.events[1].start < 20.0 for s in violates.asked)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**20),
    salt=st.integers(min_value=0, max_value=2**20),
    budget=st.integers(min_value=0, max_value=60),
)
def test_the_result_always_violates(seed: int, salt: int, budget: int) -> None:
    """An arbitrary (non-monotone) violation: the result is the input or a schedule the oracle said violates."""
    schedule = draw(seed, 60, 2)

    def rule(s: Schedule) -> bool:
        return s == schedule or (len(s.events) * 7 + int(sum(e.duration for e in s.events)) + salt) % 3 == 0

    violates = Recorder(rule)
    small = shrink(schedule, violates, budget)
    assert small is schedule or small in violates.asked
    assert rule(small)
    assert len(violates.asked) <= budget
    assert small.problems() == []
