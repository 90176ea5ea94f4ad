"""Two partitioned nodes fence each other without the lease, through real BMCs (ipmi_sim): exactly one ends off.

Each side's orchestrator has the other's BMC as its one level and no token (Redis unreachable), so the race
delay orders them. A side whose own BMC reads OFF has been powered off and no longer acts (`still_wanted`), as
a real powered-off node cannot. Run both ways round: the shorter delay decides, not the order of the calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbiter.lab.bench.fence import BmcLink, reachable_bmc
from arbiter.model import FenceOutcome
from fencers.ipmi import IpmiFencer
from fencers.orchestration import FenceReport, Orchestrator

pytestmark = pytest.mark.integration

TIMEOUT = 3.0


@pytest.fixture(scope="module")
def bmcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BmcLink, BmcLink]]:
    if os.geteuid() != 0 or shutil.which("ipmi_sim", path="/usr/sbin:/usr/bin") is None:
        pytest.skip("needs root and ipmi_sim (openipmi)")
    tag = str(os.getpid())[-7:]
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(reachable_bmc(tmp_path_factory.mktemp("bmc-a"), f"ra{tag}"))
        b = stack.enter_context(reachable_bmc(tmp_path_factory.mktemp("bmc-b"), f"rb{tag}"))
        yield a, b


def _fencer(link: BmcLink) -> IpmiFencer:
    return IpmiFencer(link.address, link.port, link.username.encode(), link.password.encode(), TIMEOUT)


def _power_offs(link: BmcLink) -> int:
    log = Path(link.workdir, "chassis.log")
    return sum("set power 0: done" in line for line in log.read_text().splitlines()) if log.exists() else 0


def race(a: BmcLink, b: BmcLink, delay_a: float, delay_b: float) -> tuple[FenceReport, FenceReport]:
    fencers = [_fencer(b), _fencer(a)]  # a's device acts on b, b's on a
    orch_a = Orchestrator({"node-b": [[fencers[0]]]}, power_timeout=TIMEOUT, race_delay=delay_a)
    orch_b = Orchestrator({"node-a": [[fencers[1]]]}, power_timeout=TIMEOUT, race_delay=delay_b)

    async def both() -> tuple[FenceReport, FenceReport]:
        report_a, report_b = await asyncio.gather(
            orch_a.fence("node-b", token=None, why="partition", still_wanted=a.bmc.power_state),
            orch_b.fence("node-a", token=None, why="partition", still_wanted=b.bmc.power_state),
        )
        return report_a, report_b

    try:
        return asyncio.run(both())
    finally:
        for fencer in fencers:
            fencer.close()


def _power_on(*links: BmcLink) -> None:
    for link in links:
        done = link.bmc.ipmitool("chassis", "power", "on")
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("delay_a", "delay_b", "survivor"), [(0.0, 1.0, "a"), (1.0, 0.0, "b")])
def test_the_shorter_race_delay_wins_and_the_loser_never_fences(
    bmcs: tuple[BmcLink, BmcLink], delay_a: float, delay_b: float, survivor: str
) -> None:
    a, b = bmcs
    _power_on(a, b)
    offs_before = (_power_offs(a), _power_offs(b))
    report_a, report_b = race(a, b, delay_a, delay_b)
    winner, loser = (report_a, report_b) if survivor == "a" else (report_b, report_a)
    winner_link, loser_link = (a, b) if survivor == "a" else (b, a)

    assert winner.outcome is FenceOutcome.OFF, winner.reason
    assert winner.proof.startswith("status OFF read from ipmi")
    assert loser.outcome is FenceOutcome.FAILED
    assert [attempt.result for attempt in loser.attempts] == ["aborted"]
    assert winner_link.bmc.power_state() is True
    assert loser_link.bmc.power_state() is False
    # The surviving node's BMC never ran a power-off: no mutual kill.
    offs_after = (_power_offs(a), _power_offs(b))
    died = "b" if survivor == "a" else "a"
    assert offs_after[0] - offs_before[0] == (1 if died == "a" else 0)
    assert offs_after[1] - offs_before[1] == (1 if died == "b" else 0)


def test_level_fall_through_from_a_dead_bmc_to_a_live_one(bmcs: tuple[BmcLink, BmcLink]) -> None:
    """Level 1 points at a port where nothing answers; level 2 at the real BMC: the node ends OFF via level 2."""
    _, b = bmcs
    _power_on(b)
    dead = IpmiFencer(b.address, b.port + 1, b.username.encode(), b.password.encode(), 1.0)
    live = _fencer(b)
    orch = Orchestrator({"node-b": [[dead], [live]]}, power_timeout=1.5)
    try:
        report = asyncio.run(orch.fence("node-b", token=9, why="fall-through"))
    finally:
        dead.close()
        live.close()
    assert report.outcome is FenceOutcome.OFF, report.reason
    assert [(a.level, a.result) for a in report.attempts] == [(1, "failed"), (2, "off")]
    assert f"{b.port + 1}" in report.attempts[0].detail
    assert all(a.token == 9 for a in report.attempts)
    assert b.bmc.power_state() is False
