"""No power-off lands after a fence was reported failed (issue 13, item 3), against the lab's real ipmi_sim.

The BMC is slow for about one timeout: it answers the status pre-check late (stopped with SIGSTOP for 0.6 of the
deadline, then continued), then stops answering before the power-off (SIGSTOP again) and stays stopped across
the fence's deadline; the test continues it (SIGCONT) only after the fence was reported failed. A power-off
call still running then would finish its `set_power` (pyghmi reads the power first, then sends the command)
as soon as the BMC answers again: the chassis log must show no `set power 0`. The stops are made by the driver
subclass below, by ipmi_sim's PID, at the moments a BMC going silent matters (just before each call).

One BMC for the module (`reachable_bmc`: ipmi_sim in a namespace of its own, reached over a veth pair), stopped
by PID and its namespace removed by name at the end. Needs root, openipmi, ipmitool and pyghmi.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from arbiter.lab.bench.fence import BmcLink, reachable_bmc
from arbiter.model import FenceOutcome, Power
from fencers.ipmi import IpmiFencer
from fencers.orchestration import FenceReport, Orchestrator

pytestmark = pytest.mark.integration

TAG = f"d{os.getpid()}"[:10]
DEADLINE = 2.0  # fencing.power_timeout_ms, and each driver call's own timeout (as from_config builds them)
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmcLink]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    for tool, package in (("ipmi_sim", "openipmi"), ("ipmitool", "ipmitool"), ("ip", "iproute2")):
        if shutil.which(tool, path=SBIN) is None:
            pytest.skip(f"{tool} not installed (Debian package {package})")
    pytest.importorskip("pyghmi")
    with reachable_bmc(tmp_path_factory.mktemp("bmc"), TAG) as bmc_link:
        yield bmc_link


@pytest.fixture
def bmc(link: BmcLink) -> Iterator[BmcLink]:
    """The module's BMC, running and powered on; continued again whatever the test did."""
    pid = link.bmc.pid
    assert pid is not None
    done = link.bmc.ipmitool("chassis", "power", "on")
    assert done.returncode == 0, done.stderr
    try:
        yield link
    finally:
        os.kill(pid, signal.SIGCONT)


class SlowThenSilentBmc(IpmiFencer):
    """The real driver; the BMC behind it answers its first status read `answer_after` seconds late and goes
    silent (stopped, until the test continues it) just before the power-off."""

    def __init__(self, link: BmcLink, answer_after: float) -> None:
        super().__init__(link.address, link.port, link.username.encode(), link.password.encode(), DEADLINE)
        assert link.bmc.pid is not None
        self.sim_pid = link.bmc.pid
        self.answer_after = answer_after
        self.armed = False
        self.stopped_before_off: float | None = None

    def status(self, target: str, timeout: float | None = None) -> Power:
        if self.armed:
            self.armed = False
            os.kill(self.sim_pid, signal.SIGSTOP)
            threading.Timer(self.answer_after, os.kill, (self.sim_pid, signal.SIGCONT)).start()
        return super().status(target, timeout)

    def power_off(self, target: str, timeout: float | None = None) -> None:
        os.kill(self.sim_pid, signal.SIGSTOP)
        self.stopped_before_off = time.monotonic()
        super().power_off(target, timeout)


def test_a_bmc_silent_across_the_deadline_gets_no_power_off_after_the_fence_failed(bmc: BmcLink) -> None:
    fencer = SlowThenSilentBmc(bmc, answer_after=0.6 * DEADLINE)
    try:
        assert fencer.status("a") is Power.ON, fencer.last_error  # a logged-in session, as an agent keeps
        orch = Orchestrator({"a": [[fencer]]}, power_timeout=DEADLINE)
        log_before = bmc.bmc.chassis_log_path.read_text()
        fencer.armed = True

        async def fence() -> tuple[FenceReport, float]:
            report = await orch.fence("a", token=3, why="integration test")
            reported = time.monotonic()
            # Timed from the report, inside the loop: asyncio.run would wait for any call still running first.
            await asyncio.sleep(0.2 * DEADLINE)  # still stopped a while after the report, then it answers again
            os.kill(fencer.sim_pid, signal.SIGCONT)
            await asyncio.sleep(2.0 * DEADLINE)  # anything still queued for the BMC, or still trying, lands now
            return report, reported

        started = time.monotonic()
        report, reported = asyncio.run(fence())
        assert fencer.stopped_before_off is not None, "the pre-check did not answer: the scenario did not happen"
        assert report.outcome is FenceOutcome.FAILED, report.reason
        assert reported - started < DEADLINE + 0.5, report.reason

        new_lines = bmc.bmc.chassis_log_path.read_text()[len(log_before) :]
        assert "set power 0" not in new_lines, f"a power-off arrived after the fence was reported:\n{new_lines}"
        assert bmc.bmc.power_state() is True
        assert fencer.status("a") is Power.ON, fencer.last_error
    finally:
        os.kill(fencer.sim_pid, signal.SIGCONT)
        fencer.close()
