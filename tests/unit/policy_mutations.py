"""The mutation check: break one policy rule at a time and see whether the simulation (test_policy_sim) catches it.

A mutant is `decide` wrapped so that one rule's decision comes out wrong (its gate flipped, or its actions
dropped), or S0's restart keep made careless; nothing inside arbiter.policy is patched. Each mutant runs the
two-node state machines of test_policy_sim with a fixed seed (derandomized, no shrinking) until the first
violation or `examples` cases.
Run it: `.venv/bin/python -m tests.unit.policy_mutations [EXAMPLES [kind|restarts|NAME-PART]...]`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from arbiter.model import Decision, Evidence, Gate, PolicyConfig, PolicyState, Resumed
from arbiter.policy import RULES, decide, may_resume
from tests.unit.policy_sim import Decide, MayResume
from tests.unit.test_policy_sim import Cluster, RestartCluster

WITH_ACTIONS = ("Q1", "L2", "V1", "D1", "D3", "H1", "H3", "B3", "B1")


@dataclass(frozen=True)
class Mutant:
    name: str
    decide_fn: Decide = decide
    resume_fn: MayResume = may_resume


def flip_gate(rule: str) -> Decide:
    def mutated(prev: PolicyState, ev: Evidence, cfg: PolicyConfig, now: float) -> Decision:
        d = decide(prev, ev, cfg, now)
        if d.rule != rule:
            return d
        gate = Gate.CLOSED if d.gate is Gate.OPEN else Gate.OPEN
        return replace(d, gate=gate, state=replace(d.state, gate=gate))

    return mutated


def drop_actions(rule: str) -> Decide:
    def mutated(prev: PolicyState, ev: Evidence, cfg: PolicyConfig, now: float) -> Decision:
        d = decide(prev, ev, cfg, now)
        return replace(d, actions=()) if d.rule == rule else d

    return mutated


def careless_resume(change: Callable[[Resumed, float], Resumed]) -> tuple[Decide, MayResume]:
    """S0's restart keep fed a doctored record: what a careless implementation would believe."""

    def mutated(prev: PolicyState, ev: Evidence, cfg: PolicyConfig, now: float) -> Decision:
        if not prev.started and prev.resumed is not None:
            prev = replace(prev, resumed=change(prev.resumed, now))
        return decide(prev, ev, cfg, now)

    def resume(record: Resumed, found: Gate | None, cfg: PolicyConfig, now: float) -> bool:
        return may_resume(change(record, now), found, cfg, now)

    return mutated, resume


def blind(record: Resumed, now: float) -> Resumed:
    return Resumed(Gate.OPEN, "B2", True, record.lease_token or 1, now + 1e9, now)


def mutants() -> list[Mutant]:
    out = [Mutant("none (baseline: must pass)")]
    out += [Mutant(f"{rule} gate flipped", flip_gate(rule)) for rule in RULES]
    out += [Mutant(f"{rule} actions dropped", drop_actions(rule)) for rule in WITH_ACTIONS]
    for name, change in [
        ("S0 keeps any gate found open (record ignored)", blind),
        ("S0 ignores the record's age", lambda r, now: replace(r, written_at=now)),
        ("S0 ignores the lease's expiry", lambda r, now: replace(r, lease_until=now + 1e9)),
        ("S0 ignores the record's age and the lease", lambda r, now: replace(r, written_at=now, lease_until=now + 1e9)),
        ("S0 keeps a gate the record says closed", lambda r, now: replace(r, gate=Gate.OPEN)),
    ]:
        d, r = careless_resume(change)
        out.append(Mutant(name, d, r))
    return out


def check(mutant: Mutant, base: type[Cluster], examples: int) -> str | None:
    """The first violation the simulation reports for `mutant`, or None when it passes `examples` cases."""
    machine = type(
        f"Mutant{base.__name__}",
        (base,),
        {"decide_fn": staticmethod(mutant.decide_fn), "resume_fn": staticmethod(mutant.resume_fn)},
    )
    run = settings(
        max_examples=examples,
        stateful_step_count=20,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    try:
        run_state_machine_as_test(machine, settings=run)
    except Exception as exc:  # any failure is the catch being measured
        first = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {first[0] if first else ''}"[:160]
    return None


def main(examples: int, args: list[str]) -> None:
    known: dict[str, type[Cluster]] = {"kind": Cluster, "restarts": RestartCluster}
    bases = [known[name] for name in args if name in known] or list(known.values())
    only = [a for a in args if a not in known]  # substrings of mutant names to run (all when none)
    print(f"{'mutant':50} | " + " | ".join(c.__name__ for c in bases), flush=True)
    for mutant in mutants():
        if only and not any(o in mutant.name for o in only):
            continue
        cells = []
        for base in bases:
            t = time.monotonic()
            caught = check(mutant, base, examples)
            cells.append(f"{'CAUGHT' if caught else 'missed'} {time.monotonic() - t:5.0f}s {caught or ''}")
        print(f"{mutant.name:50} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200, sys.argv[2:])
