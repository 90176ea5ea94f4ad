"""The shrinker: from a schedule that violates, a smaller one that still does, for `lab replay`.

`shrink(schedule, violates, budget)` tries, in this order, and keeps a change only when `violates` (in real use
a lab run and its checker) still returns True for it:
1. no fault at all (does the violation need any?);
2. fewer faults: delta debugging (Zeller's ddmin) over the events, subsets first, then complements;
3. shorter faults: each healed fault's duration halved (down to MIN_FAULT) while it still violates;
4. shorter gaps: each event moved, with every event after it, halfway towards the start of the one before it
   (the first one towards 0), while it still violates;
5. a shorter run: the duration cut to the end of the last fault plus the quiet end.
It keeps the seed, the node count and the quiet end. A candidate that breaks a rule of the schedule
(`Schedule.problems`) is never tried. Deterministic: the same input and the same answers give the same calls in
the same order. Each distinct candidate is tried once (answers are remembered) and at most `budget` calls are
made. The input is taken to violate (it is not run again) and is returned if nothing smaller violates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from arbiter.lab.chaos.schedule import CATALOGUE, MIN_FAULT, Event, Schedule


class _BudgetSpentError(Exception):
    """The budget of `violates` calls is used up."""


class _Search:
    """The best schedule so far, and `violates` counted against the budget and remembered per candidate."""

    def __init__(self, best: Schedule, violates: Callable[[Schedule], bool], budget: int) -> None:
        self.best = best
        self.violates = violates
        self.budget = budget
        self.calls = 0
        self.answers: dict[str, bool] = {}

    def keep(self, candidate: Schedule) -> bool:
        """Try `candidate`; if it violates it becomes the best. False for a candidate that breaks a rule."""
        if candidate.problems():
            return False
        key = candidate.to_json()
        if key not in self.answers:
            if self.calls >= self.budget:
                raise _BudgetSpentError
            self.calls += 1
            self.answers[key] = self.violates(candidate)
        if self.answers[key]:
            self.best = candidate
        return self.answers[key]


def shrink(schedule: Schedule, violates: Callable[[Schedule], bool], budget: int) -> Schedule:
    """The smallest schedule found that still violates (see the module docstring), after at most `budget` calls."""
    search = _Search(schedule, violates, budget)
    try:
        if schedule.events and search.keep(replace(schedule, events=())):
            return search.best
        _ddmin(search)
        _shorten_faults(search)
        _shorten_gaps(search)
        _shorten_run(search)
    except _BudgetSpentError:
        pass
    return search.best


def _ddmin(search: _Search) -> None:
    n = 2
    while len(search.best.events) >= 2:
        events = list(search.best.events)
        chunks = _split(events, n)
        if any(search.keep(replace(search.best, events=tuple(c))) for c in chunks):
            n = 2
            continue
        complements = [[e for j, c in enumerate(chunks) if j != i for e in c] for i in range(len(chunks))]
        if any(search.keep(replace(search.best, events=tuple(c))) for c in complements):
            n = max(n - 1, 2)
            continue
        if n >= len(events):
            return
        n = min(len(events), 2 * n)


def _split(events: list[Event], n: int) -> list[list[Event]]:
    """`events` in n runs of (nearly) equal length, in order."""
    size, extra = divmod(len(events), n)
    chunks, at = [], 0
    for i in range(n):
        width = size + (1 if i < extra else 0)
        chunks.append(events[at : at + width])
        at += width
    return [c for c in chunks if c]


def _shorten_faults(search: _Search) -> None:
    changed = True
    while changed:
        changed = False
        for i, event in enumerate(search.best.events):
            if CATALOGUE[event.fault.kind].instant or event.duration <= MIN_FAULT:
                continue
            shorter = max(MIN_FAULT, round(event.duration / 2, 1))
            events = search.best.events
            changed |= search.keep(
                replace(search.best, events=(*events[:i], replace(event, duration=shorter), *events[i + 1 :]))
            )


def _shorten_gaps(search: _Search) -> None:
    changed = True
    while changed:
        changed = False
        for i in range(len(search.best.events)):
            events = search.best.events
            before = events[i - 1].start if i else 0.0
            shift = round((events[i].start - before) / 2, 1)
            if shift <= 0:
                continue
            moved = tuple(replace(e, start=round(e.start - shift, 1)) for e in events[i:])
            changed |= search.keep(replace(search.best, events=events[:i] + moved))


def _shorten_run(search: _Search) -> None:
    best = search.best
    end = max((e.busy_until for e in best.events), default=0.0)
    shorter = round(end + best.quiet, 1)
    if shorter < best.duration:
        search.keep(replace(best, duration=shorter))
