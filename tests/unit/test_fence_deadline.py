"""One deadline per fence level, and nothing sent to a device after the fence was reported (issue 13, item 3);
the lease token checked right before each power-off.

The slow-device tests run on the real clock with deadlines of a fraction of a second: a FakeFencer that is slow
(`delay`) or hangs (`answer`) waits in its calling thread, as a driver does, and is stopped at its call's bound.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from arbiter.model import FenceOutcome, Power
from fencers.agent import AgentFencer
from fencers.base import FenceError
from fencers.ipmi import IpmiFencer
from fencers.orchestration import FenceReport, Orchestrator
from fencers.ssh import SshFencer
from fencers.testing import FakeFencer

NODE = "node-b"


async def fence_and_time(orch: Orchestrator, token: int | None = 7) -> tuple[FenceReport, float, float]:
    """The report, when the fence started and when it was reported (monotonic)."""
    started = time.monotonic()
    report = await orch.fence(NODE, token=token, why="test")
    return report, started, time.monotonic()


def test_a_bmc_slower_than_the_deadline_sends_no_power_off_after_the_report() -> None:
    """Status answers after 0.6 of the deadline, a power-off would take as long: it must not land later."""
    deadline = 0.5
    # The driver's own timeout is the power timeout, as `Orchestrator.from_config` builds it.
    bmc = FakeFencer(device="bmc-b", delay=0.3, timeout=deadline)
    orch = Orchestrator({NODE: [[bmc]]}, power_timeout=deadline)

    async def scenario() -> tuple[FenceReport, float, float]:
        result = await fence_and_time(orch)
        await asyncio.to_thread(bmc.wait_idle, 3.0)  # any call still running finishes (or is stopped) first
        return result

    report, started, reported = asyncio.run(scenario())

    assert report.outcome is FenceOutcome.FAILED
    assert reported - started < deadline + 0.15
    assert bmc.wait_idle(0)
    late = [(method, round(at - reported, 3)) for method, _, at in bmc.sent if at >= reported]
    assert late == []
    assert [method for method, _, _ in bmc.sent] == ["status"]  # the power-off was stopped, never acted


def test_every_call_of_a_level_runs_under_the_one_deadline() -> None:
    """Pre-check, power-off and polls each get what is left of one deadline, not a fresh power timeout."""
    deadline = 0.6
    bmc = FakeFencer(device="bmc-b", delay=0.27, off_after_reads=100, timeout=deadline)
    orch = Orchestrator({NODE: [[bmc]]}, power_timeout=deadline)

    report, started, reported = asyncio.run(fence_and_time(orch))

    assert report.outcome is FenceOutcome.FAILED
    assert report.attempts[0].result == "unconfirmed"
    assert [method for method, _ in bmc.calls][:2] == ["status", "power_off"]
    given = bmc.timeouts
    assert all(bound is not None and bound <= deadline for bound in given), given
    assert given == sorted(given, reverse=True)  # what is left only shrinks  # type: ignore[type-var]
    assert reported - started < deadline + 0.12  # a poll started late is cut at the deadline too


def test_a_hung_status_pre_check_uses_up_the_deadline_and_no_power_off_is_sent() -> None:
    answer = threading.Event()  # the BMC answers only when the test says so: after the report
    bmc = FakeFencer(device="bmc-b", answer=answer, timeout=10.0)
    orch = Orchestrator({NODE: [[bmc]]}, power_timeout=0.3)

    async def scenario() -> tuple[FenceReport, float, float]:
        result = await fence_and_time(orch)
        answer.set()
        await asyncio.to_thread(bmc.wait_idle, 3.0)
        return result

    report, started, reported = asyncio.run(scenario())

    assert report.outcome is FenceOutcome.FAILED
    assert reported - started < 0.3 + 0.15  # not the driver's own 10 s
    assert "power-off not sent" in report.attempts[0].detail
    assert ("power_off", NODE) not in bmc.calls
    assert bmc.sent == []


def test_the_lease_is_checked_right_before_the_power_off_and_a_lost_token_sends_nothing() -> None:
    bmc = FakeFencer(device="bmc-b")
    orch = Orchestrator({NODE: [[bmc]]}, power_timeout=5.0)
    asked: list[tuple[int, int]] = []

    def lease(holds: bool) -> Callable[[int], Awaitable[bool]]:
        async def lease_holds(token: int) -> bool:
            asked.append((token, len(bmc.calls)))
            return holds

        return lease_holds

    lost = asyncio.run(orch.fence(NODE, token=7, why="test", lease_holds=lease(False)))

    assert lost.outcome is FenceOutcome.FAILED
    assert lost.reason == "lease token 7 no longer held here: no power-off sent"
    assert (lost.attempts[-1].result, lost.attempts[-1].detail) == ("aborted", lost.reason)
    assert bmc.calls == [("status", NODE)]  # the pre-check only
    assert asked == [(7, 1)]

    held = asyncio.run(orch.fence(NODE, token=8, why="test", lease_holds=lease(True)))
    assert held.off
    assert asked[-1] == (8, 2)
    assert bmc.calls[2] == ("power_off", NODE)  # the very next call after the lease was confirmed


def test_without_a_token_the_lease_is_not_asked() -> None:
    bmc = FakeFencer(device="bmc-b")

    async def never(token: int) -> bool:
        raise AssertionError("asked without a token")

    report = asyncio.run(
        Orchestrator({NODE: [[bmc]]}, power_timeout=5.0).fence(NODE, token=None, why="x", lease_holds=never)
    )
    assert report.off


def test_ipmi_waits_for_its_per_bmc_lock_only_as_long_as_the_call_may_take() -> None:
    """No BMC needed: the lock is held by the test, as by another call stuck on a silent BMC."""
    ipmi = IpmiFencer("127.0.0.1", 9, b"admin", b"password", timeout=10.0)
    with ipmi._lock:
        started = time.monotonic()
        assert ipmi.status(NODE, timeout=0.1).value == "unknown"
        assert time.monotonic() - started < 1.0
    assert ipmi.last_error == "ipmi 127.0.0.1:9 status: not sent: another call to this BMC is still running after 0.1s"
    assert ipmi.worker_pid is None  # nothing was started, nothing sent


class _Channel:
    """Just enough of a paramiko channel for `SshFencer._run_off`: records the command, exits 0 at once."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.status_event = threading.Event()
        self.status_event.set()
        self.exit_status = 0

    def exec_command(self, command: str) -> None:
        self.commands.append(command)

    def recv_ready(self) -> bool:
        return False

    def recv_stderr_ready(self) -> bool:
        return False


@dataclass
class _SlowLoginSsh(SshFencer):
    """The real SSH driver whose login completes only when the test says so (a host that answers late)."""

    logged_in: threading.Event = field(default_factory=threading.Event)
    channel: _Channel = field(default_factory=_Channel)

    def _open(self, session: Any, until: float) -> Any:
        self.logged_in.wait(10)
        return self.channel


def test_ssh_never_sends_the_command_once_the_call_was_given_up(tmp_path: Path) -> None:
    ssh = _SlowLoginSsh("127.0.0.1", 22, "root", tmp_path / "key", tmp_path / "known_hosts", "poweroff", timeout=0.2)
    started = time.monotonic()
    with pytest.raises(FenceError, match=r"no answer within 0\.2s"):
        ssh.power_off(NODE)
    assert time.monotonic() - started < 1.0
    ssh.logged_in.set()  # the login completes after the caller gave up
    for thread in [t for t in threading.enumerate() if t.name.startswith("fence: ssh")]:
        thread.join(2.0)
    assert ssh.channel.commands == []


def test_an_agent_call_is_killed_at_the_time_its_caller_has_left(tmp_path: Path) -> None:
    agent_file = tmp_path / "fence_slow"
    agent_file.write_text("#!/bin/sh\ncat >/dev/null\nsleep 30\n")
    agent_file.chmod(0o755)
    agent = AgentFencer("fence_slow", {}, None, timeout=10.0, path=str(tmp_path))
    started = time.monotonic()
    assert agent.status(NODE, timeout=0.3) is Power.UNKNOWN
    assert time.monotonic() - started < 2.0  # not the agent's own 10 s
    assert agent.last_error == "agent fence_slow status: no answer within 0.3s (agent killed)"
