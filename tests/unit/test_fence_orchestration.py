"""Fencing orchestration with FakeFencer drivers and a fake clock: levels, proofs, race delay, hold-down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import SimpleNamespace

import pytest

from arbiter.model import FenceOutcome, Power
from fencers import registry
from fencers.base import FenceError, Fencer, within
from fencers.orchestration import FenceAttempt, FenceReport, Orchestrator
from fencers.testing import FakeFencer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def orchestrator(
    levels: Sequence[Sequence[Fencer]],
    clock: FakeClock,
    events: list[FenceAttempt] | None = None,
    silence: float | None = None,
    **kw: float,
) -> Orchestrator:
    return Orchestrator(
        {"node-b": levels},
        power_timeout=kw.pop("power_timeout", 5.0),
        confirm=kw.pop("confirm", 3.0),
        silence=lambda node: silence,
        on_event=events.append if events is not None else None,
        clock=clock,
        sleep=clock.sleep,
        **kw,
    )


def fence(orch: Orchestrator, token: int | None = 7, **kw: object) -> FenceReport:
    return asyncio.run(orch.fence("node-b", token=token, why="test", **kw))  # type: ignore[arg-type]


def test_already_off_is_success_without_power_off() -> None:
    bmc = FakeFencer(device="bmc-b", power={"node-b": Power.OFF})
    events: list[FenceAttempt] = []
    report = fence(orchestrator([[bmc]], FakeClock(), events))
    assert report.outcome is FenceOutcome.OFF
    assert ("power_off", "node-b") not in bmc.calls
    assert [e.result for e in events] == ["already-off"]
    assert "before any power-off" in report.proof


def test_power_off_then_poll_until_status_reads_off() -> None:
    bmc = FakeFencer(device="bmc-b", off_after_reads=4)
    clock = FakeClock()
    events: list[FenceAttempt] = []
    report = fence(orchestrator([[bmc]], clock, events), token=41)
    assert report.off
    assert report.proof == "status OFF read from bmc-b"
    assert [c[0] for c in bmc.calls] == ["status", "power_off", "status", "status", "status", "status"]
    assert clock.slept[:2] == [0.02, 0.04]  # polls back off
    (event,) = events
    assert (event.node, event.level, event.driver, event.token, event.result) == ("node-b", 1, "fake", 41, "off")
    assert event.duration == pytest.approx(sum(clock.slept))


def test_dead_bmc_is_unconfirmed_at_the_deadline_and_the_next_level_is_tried() -> None:
    dead = FakeFencer(device="bmc-b", status_unknown=True)
    pdu = FakeFencer(device="pdu-b")
    clock = FakeClock()
    events: list[FenceAttempt] = []
    report = fence(orchestrator([[dead], [pdu]], clock, events, power_timeout=5.0))
    assert report.off
    assert [(e.level, e.device, e.result) for e in events] == [(1, "bmc-b", "unconfirmed"), (2, "pdu-b", "off")]
    assert "OFF not confirmed within 5s" in events[0].detail
    assert events[0].duration <= 5.0


def test_level_fall_through_on_a_failing_driver() -> None:
    bad = FakeFencer(device="bmc-b", fail_off="login refused: wrong password")
    good = FakeFencer(device="ssh-b")
    report = fence(orchestrator([[bad], [good]], FakeClock()))
    assert report.off
    assert [a.result for a in report.attempts] == ["failed", "off"]
    assert "wrong password" in report.attempts[0].detail


def test_every_device_of_a_level_must_succeed() -> None:
    power: dict[str, Power] = {}
    psu1 = FakeFencer(device="pdu1", power=power)
    psu2 = FakeFencer(device="pdu2", fail_off="outlet 4: no such outlet")
    report = fence(orchestrator([[psu1, psu2]], FakeClock()))
    assert report.outcome is FenceOutcome.FAILED
    assert "pdu2: outlet 4: no such outlet" in report.reason
    assert sorted(a.result for a in report.attempts) == ["failed", "off"]


def test_blind_device_is_confirmed_by_another_levels_status() -> None:
    power: dict[str, Power] = {}
    ssh = FakeFencer(driver="ssh", device="ssh-b", observes_power=False, power=power)
    bmc = FakeFencer(driver="ipmi", device="bmc-b", power=power, fail_off="not reached")
    report = fence(orchestrator([[ssh], [bmc]], FakeClock()))
    assert report.off
    assert report.proof == "status OFF read from bmc-b (another level)"
    assert ("power_off", "node-b") not in bmc.calls


def test_blind_device_with_only_the_weaker_proof() -> None:
    ssh = FakeFencer(driver="ssh", device="ssh-b", observes_power=False)
    report = fence(orchestrator([[ssh]], FakeClock(), silence=3.5, confirm=3.0))
    assert report.off
    assert report.proof.startswith("silent on every heartbeat medium and to pings for 3.5s")


def test_blind_device_without_any_proof_fails() -> None:
    ssh = FakeFencer(driver="ssh", device="ssh-b", observes_power=False)
    report = fence(orchestrator([[ssh]], FakeClock(), silence=1.0, confirm=3.0))
    assert report.outcome is FenceOutcome.FAILED
    assert report.attempts[0].result == "unconfirmed"


def test_race_delay_without_token_then_abort_when_no_longer_wanted() -> None:
    bmc = FakeFencer(device="bmc-b")
    clock = FakeClock()
    report = fence(orchestrator([[bmc]], clock, race_delay=2.5), token=None, still_wanted=lambda: False)
    assert clock.slept == [2.5]
    assert report.outcome is FenceOutcome.FAILED
    assert report.attempts[0].result == "aborted"
    assert bmc.calls == []


def test_no_race_delay_with_the_lease_token() -> None:
    clock = FakeClock()
    report = fence(orchestrator([[FakeFencer()]], clock, race_delay=2.5), token=3)
    assert report.off
    assert 2.5 not in clock.slept


def test_two_partitioned_nodes_never_power_each_other_off() -> None:
    """Each fences the other without a token; the shorter race delay wins and the loser, off, never acts."""
    power: dict[str, Power] = {}

    def side(me: str, peer: str, delay: float) -> tuple[Orchestrator, str]:
        fencer = FakeFencer(device=f"bmc-{peer}", power=power)
        return Orchestrator({peer: [[fencer]]}, power_timeout=2.0, race_delay=delay), peer

    (orch_a, peer_of_a), (orch_b, peer_of_b) = side("a", "b", 0.0), side("b", "a", 0.3)

    async def both() -> list[FenceReport]:
        return await asyncio.gather(
            orch_a.fence(peer_of_a, token=None, why="race", still_wanted=lambda: power.get("a") is not Power.OFF),
            orch_b.fence(peer_of_b, token=None, why="race", still_wanted=lambda: power.get("b") is not Power.OFF),
        )

    report_a, report_b = asyncio.run(both())
    assert report_a.off and not report_b.off
    assert power == {"b": Power.OFF}
    assert report_b.attempts[0].result == "aborted"


def test_hold_down_until_the_node_came_back() -> None:
    bmc = FakeFencer(device="bmc-b")
    clock = FakeClock()
    orch = orchestrator([[bmc]], clock, hold_down=60.0)

    async def scenario() -> list[FenceReport]:
        first = await orch.fence("node-b", token=5, why="first")
        clock.now += 10
        held = await orch.fence("node-b", token=5, why="again")
        bmc.power["node-b"] = Power.ON
        orch.came_back("node-b")
        again = await orch.fence("node-b", token=6, why="came back")
        return [first, held, again]

    first, held, again = asyncio.run(scenario())
    assert first.off and held.off and again.off
    assert held.attempts[0].result == "held-down"
    assert "hold-down 60s" in held.reason
    assert [c for c in bmc.calls if c[0] == "power_off"] == [("power_off", "node-b")] * 2


def test_hold_down_ends_after_its_time() -> None:
    bmc = FakeFencer(device="bmc-b")
    clock = FakeClock()
    orch = orchestrator([[bmc]], clock, hold_down=60.0)

    async def scenario() -> FenceReport:
        await orch.fence("node-b", token=5, why="first")
        bmc.power["node-b"] = Power.ON
        clock.now += 61
        return await orch.fence("node-b", token=5, why="later")

    assert asyncio.run(scenario()).attempts[0].result == "off"


def test_concurrent_requests_for_one_node_are_joined() -> None:
    bmc = FakeFencer(device="bmc-b", off_after_reads=2)
    orch = Orchestrator({"node-b": [[bmc]]}, power_timeout=2.0)

    async def twice() -> list[FenceReport]:
        return await asyncio.gather(*(orch.fence("node-b", token=1, why=str(i)) for i in range(2)))

    first, second = asyncio.run(twice())
    assert first is second
    assert [c for c in bmc.calls if c[0] == "power_off"] == [("power_off", "node-b")]


def test_unknown_node_names_the_fenceable_ones() -> None:
    orch = orchestrator([[FakeFencer()]], FakeClock())
    with pytest.raises(FenceError, match=r"unknown node 'node-x'; fenceable: node-b"):
        asyncio.run(orch.fence("node-x", token=1, why="typo"))


def test_node_without_levels_fails_with_the_reason() -> None:
    report = asyncio.run(Orchestrator({"node-b": []}, power_timeout=1).fence("node-b", token=1, why="x"))
    assert report.outcome is FenceOutcome.FAILED
    assert report.reason == "no fence level configured for node-b"


def test_status_skips_blind_and_unknown_devices() -> None:
    power = {"node-b": Power.OFF}
    ssh = FakeFencer(driver="ssh", device="ssh-b", observes_power=False, power=power)
    dead = FakeFencer(device="bmc-b", status_unknown=True, power=power)
    pdu = FakeFencer(device="pdu-b", power=power)
    orch = orchestrator([[ssh], [dead], [pdu]], FakeClock())
    assert asyncio.run(orch.status("node-b")) == (Power.OFF, "pdu-b")
    assert asyncio.run(orchestrator([[ssh]], FakeClock()).status("node-b")) == (Power.UNKNOWN, "")


def test_power_on_uses_the_first_level_that_can_and_clears_hold_down() -> None:
    ssh = FakeFencer(driver="ssh", device="ssh-b", observes_power=False, fail_on="SSH cannot power a node on")
    bmc = FakeFencer(device="bmc-b", power={"node-b": Power.OFF})
    orch = orchestrator([[ssh], [bmc]], FakeClock())
    ok, detail = asyncio.run(orch.power_on("node-b"))
    assert ok
    assert detail == "powered on through level 2 (bmc-b)"
    assert bmc.power["node-b"] is Power.ON


def test_check_reports_every_device() -> None:
    ok = FakeFencer(device="bmc-b")
    bad = FakeFencer(device="ssh-b", fail_check="host key for 10.0.9.12 not in /etc/known_hosts")
    results = asyncio.run(orchestrator([[ok], [bad]], FakeClock()).check("node-b"))
    assert [(level, f.device, good) for level, f, good, _ in results] == [(1, "bmc-b", True), (2, "ssh-b", False)]
    assert "host key" in results[1][3]
    assert all(c[0] == "check" for c in ok.calls + bad.calls)


def test_registry_refuses_an_unknown_driver_and_lists_the_known() -> None:
    with pytest.raises(FenceError, match=r"unknown fence driver 'pdu'; known: agent, ipmi, ssh"):
        registry.build(SimpleNamespace(driver="pdu"), timeout=1.0)


def test_within_bounds_a_hanging_call() -> None:
    started = time.monotonic()
    with pytest.raises(FenceError, match=r"bmc-b status: no answer within 0.05s"):
        within(0.05, "bmc-b status", lambda: time.sleep(5))
    assert time.monotonic() - started < 4  # returned long before the call would have


def test_within_wraps_a_library_exception() -> None:
    def boom() -> int:
        raise ConnectionResetError("reset by peer")

    with pytest.raises(FenceError, match=r"bmc-b off: ConnectionResetError: reset by peer"):
        within(1.0, "bmc-b off", boom)
    assert within(1.0, "ok", lambda: 42) == 42
