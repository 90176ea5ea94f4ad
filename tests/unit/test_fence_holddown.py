"""Inside the hold-down a fence never answers OFF without a power read made for that request (issue 13, item 1),
a node that reads ON again is escalated to the next level, and repeated held-down answers are counted, not
logged (item 5). FakeFencer drivers and a fake clock: no wall-clock time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from arbiter.model import FenceOutcome, Power
from fencers.base import Fencer
from fencers.orchestration import FenceAttempt, FenceReport, Orchestrator
from fencers.testing import FakeFencer

NODE = "node-b"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class Rig:
    """One orchestrator for node-b over the given levels, its clock, its events and the peer's silence."""

    def __init__(self, levels: Sequence[Sequence[Fencer]], silence: float | None = None) -> None:
        self.clock = FakeClock()
        self.events: list[FenceAttempt] = []
        self.silence = silence
        self.orch = Orchestrator(
            {NODE: levels},
            power_timeout=5.0,
            hold_down=60.0,
            confirm=3.0,
            silence=lambda node: self.silence,
            on_event=self.events.append,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    def fence(self, after: float = 0.0, token: int | None = 5) -> FenceReport:
        self.clock.now += after
        return asyncio.run(self.orch.fence(NODE, token=token, why="silent peer"))


def power_offs(fencer: FakeFencer) -> int:
    return fencer.calls.count(("power_off", NODE))


# --- item 1: a fresh read inside the hold-down ------------------------------------------------------------------


def test_off_inside_the_hold_down_is_proven_by_one_status_read_made_for_this_request() -> None:
    bmc = FakeFencer(driver="ipmi", device="ipmi 10.0.9.12:623")
    rig = Rig([[bmc]])
    assert rig.fence().off
    bmc.calls.clear()
    rig.events.clear()

    held = rig.fence(after=12.3)

    assert held.off and not held.ineffective
    assert bmc.calls == [("status", NODE)]  # exactly one read, and no power-off
    assert held.proof == (
        "status OFF read from ipmi 10.0.9.12:623 for this request (fenced 12.3s ago; hold-down 60s: not "
        "power-cycled again)"
    )
    assert [(e.result, e.level, e.device, e.proof) for e in rig.events] == [
        ("held-down", 1, "ipmi 10.0.9.12:623", held.proof)
    ]


def test_unreadable_power_inside_the_hold_down_fails_and_sends_nothing() -> None:
    bmc = FakeFencer(device="bmc-b")
    rig = Rig([[bmc]])
    assert rig.fence().off
    bmc.status_unknown = True  # the BMC lost its network, or the node its standby power

    held = rig.fence(after=7.0)

    assert held.outcome is FenceOutcome.FAILED
    assert "power could not be read" in held.reason
    assert "forbids power-cycling it again" in held.reason
    assert held.proof == ""
    assert power_offs(bmc) == 1  # only the first fence's


def test_on_again_inside_the_hold_down_is_ineffective_and_the_next_level_fences_it() -> None:
    power: dict[str, Power] = {}
    bmc = FakeFencer(device="bmc-b", power=power)
    pdu = FakeFencer(device="pdu-b", power=power)
    rig = Rig([[bmc], [pdu]])
    first = rig.fence()
    assert first.off and power_offs(pdu) == 0
    power[NODE] = Power.ON  # an operator (or a power restore) powered b on while it is still cut off

    again = rig.fence(after=12.3)

    assert again.ineffective
    assert again.off
    assert [(a.level, a.device, a.result) for a in again.attempts] == [(1, "bmc-b", "ineffective"), (2, "pdu-b", "off")]
    assert power_offs(bmc) == 1  # level 1 is not power-cycled again inside its hold-down
    assert power_offs(pdu) == 1
    assert again.reason.startswith("node-b reads ON again 12.3s after it was fenced")
    assert "ineffective" in [e.result for e in rig.events]  # emitted: the agent alerts on it

    # Level 2 fenced it: the hold-down starts again and reads through level 2 first.
    later = rig.fence(after=1.0)
    assert later.off and not later.ineffective
    assert later.attempts[0].device == "pdu-b"
    assert "fenced 1.0s ago" in later.proof


def test_on_again_without_a_further_level_fails_and_never_claims_off() -> None:
    bmc = FakeFencer(device="bmc-b")
    rig = Rig([[bmc]])
    assert rig.fence().off
    bmc.power[NODE] = Power.ON

    again = rig.fence(after=12.3)

    assert again.outcome is FenceOutcome.FAILED
    assert again.ineffective
    assert again.reason == (
        "node-b reads ON again 12.3s after it was fenced (hold-down 60s: not power-cycled again through level 1); "
        "no further level"
    )
    assert power_offs(bmc) == 1


def test_inside_the_hold_down_off_is_answered_only_on_a_read_of_off() -> None:
    """Many requests inside one hold-down while the node's power changes under them."""
    bmc = FakeFencer(device="bmc-b")
    rig = Rig([[bmc]])
    assert rig.fence().off
    states = [Power.OFF, Power.ON, Power.ON, Power.UNKNOWN, Power.OFF, Power.ON, Power.OFF, Power.UNKNOWN]
    for state in states:
        bmc.status_unknown = state is Power.UNKNOWN
        bmc.power[NODE] = Power.ON if state is Power.ON else Power.OFF
        before = len(bmc.calls)
        report = rig.fence(after=1.0)
        asked = bmc.calls[before:]
        assert ("status", NODE) in asked
        assert report.off == (state is Power.OFF), (state, report.reason)
        assert ("power_off", NODE) not in asked  # the only level is never power-cycled again


def test_blind_levels_only_keep_the_silence_proof_inside_the_hold_down() -> None:
    ssh = FakeFencer(driver="ssh", device="ssh-b", observes_power=False)
    rig = Rig([[ssh]], silence=3.5)
    assert rig.fence().off

    held = rig.fence(after=2.0)
    assert held.off
    assert held.proof.startswith("silent on every heartbeat medium and to pings for 3.5s")

    rig.silence = 1.0  # heard from recently: silence proves nothing any more
    unproven = rig.fence(after=2.0)
    assert unproven.outcome is FenceOutcome.FAILED
    assert "cannot be proven off" in unproven.reason
    assert power_offs(ssh) == 1


# --- item 5: held-down answers counted, not logged ----------------------------------------------------------------


def test_repeated_held_down_answers_are_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    bmc = FakeFencer(device="bmc-b")
    rig = Rig([[bmc]])
    assert rig.fence().off
    rig.events.clear()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="fencers.orchestration")

    reports = [rig.fence(after=0.1) for _ in range(50)]  # 5 s of decision cycles at 0.1 s

    assert all(r.off for r in reports)
    assert [e.result for e in rig.events] == ["held-down"]
    assert sum("held-down" in r.getMessage() for r in caplog.records) == 1
    assert [r.repeats for r in reports] == list(range(50))
    assert rig.orch.repeats(NODE) == 49

    # The outcome changes: logged and emitted again; the same new outcome again is counted.
    bmc.status_unknown = True
    changed = rig.fence(after=0.1)
    repeated = rig.fence(after=0.1)
    assert [e.result for e in rig.events] == ["held-down", "held-down"]
    assert "could not be read" in rig.events[-1].detail
    # Counted since the answer last logged: the changed answer is reported with 0 repeats, so the agent records
    # it (a report with repeats > 0 is one it skips), and its repetition with 1.
    assert (changed.repeats, repeated.repeats) == (0, 1)

    rig.orch.came_back(NODE)
    assert rig.orch.repeats(NODE) == 0


def test_a_new_hold_down_logs_its_first_answer_again() -> None:
    bmc = FakeFencer(device="bmc-b")
    rig = Rig([[bmc]])
    assert rig.fence().off
    rig.fence(after=1.0)
    rig.fence(after=1.0)
    assert rig.orch.repeats(NODE) == 1

    renewed = rig.fence(after=61.0)  # the hold-down is over: a new fence (already off), a new hold-down
    assert renewed.off and renewed.attempts[0].result == "already-off"
    assert rig.orch.repeats(NODE) == 0
    rig.events.clear()
    assert rig.fence(after=1.0).repeats == 0
    assert [e.result for e in rig.events] == ["held-down"]


def test_a_node_on_again_with_no_further_level_is_reported_every_time_but_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bmc = FakeFencer(device="bmc-b")
    rig = Rig([[bmc]])
    assert rig.fence().off
    bmc.power[NODE] = Power.ON
    rig.events.clear()
    caplog.set_level(logging.INFO, logger="fencers.orchestration")
    caplog.clear()

    reports = [rig.fence(after=0.1) for _ in range(20)]

    assert all(r.outcome is FenceOutcome.FAILED and r.ineffective for r in reports)
    assert [r.repeats for r in reports] == list(range(20))
    assert [e.result for e in rig.events] == ["ineffective"]
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert power_offs(bmc) == 1
