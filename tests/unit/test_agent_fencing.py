"""Issue 13 on the agent's loop (fakes of every edge, tests/unit/agentfakes.py; the real Orchestrator over a
FakeFencer): nothing is called fenced without a read, one record per fence, a failed fence holds the gate closed
until an operator confirms by hand, and the lease is read again right before a power-off.

node-a is the agent under test and holds the VIP with the lease; node-b is its peer, fenceable through
`rig.bmcs["node-b"]`.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from arbiter.agent.daemon import Agent
from arbiter.agent.notify import BadRequestError
from arbiter.cli import main
from arbiter.model import FenceOutcome, Gate, LeaseStatus, LeaseView, Power, VrrpState
from tests.unit.agentfakes import (
    FakeClock,
    Rig,
    cycle,
    gate_text,
    holding_with_the_lease,
    lease_round,
    load_config,
    settle,
    stop_tasks,
)

MASTER, BACKUP = VrrpState.MASTER, VrrpState.BACKUP
OPEN, CLOSED = "0\n", "1\n"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def power_offs(rig: Rig) -> list[tuple[str, str]]:
    return [call for call in rig.bmcs["node-b"].calls if call[0] == "power_off"]


def fence_lines(rig: Rig) -> list[dict[str, Any]]:
    return [line for line in rig.lines if line["event"] == "fence"]


async def holder_with_a_silent_peer(tmp_path: Path, dead_bmc: bool = False) -> tuple[Rig, Agent, FakeClock]:
    """node-a holds VI_1 with the lease (H1); then node-b, a backup until now, falls silent. With `dead_bmc`,
    node-b's BMC answers nothing (no power read, no power-off)."""
    rig = Rig(load_config(tmp_path))
    assert isinstance(rig.clock, FakeClock)
    if dead_bmc:
        rig.bmcs["node-b"].status_unknown = True
        rig.bmcs["node-b"].fail_off = "no answer from the BMC"
    clock, agent = rig.clock, rig.agent()
    agent.begin()
    await holding_with_the_lease(rig, agent, clock)
    assert (agent.last["VI_1"].rule, gate_text(rig.cfg)) == ("H1", OPEN)
    rig.heartbeats.view("node-b", alive=False, heard_at=clock(), state=BACKUP, priority=100, rule="B2")
    return rig, agent, clock


async def held_by_a_failed_fence(tmp_path: Path) -> tuple[Rig, Agent, FakeClock]:
    """As `holder_with_a_silent_peer` with node-b's BMC dead and node-b's last word claiming the VIP: the fence
    fails and F1 closes the gate."""
    rig, agent, clock = await holder_with_a_silent_peer(tmp_path, dead_bmc=True)
    rig.heartbeats.view("node-b", alive=False, heard_at=clock(), state=MASTER, vip_present=True, priority=100)
    await cycle(agent, clock, 0.2)
    assert agent.fence_results["node-b"].outcome is FenceOutcome.FAILED
    await cycle(agent, clock, 0.2)
    assert (agent.last["VI_1"].rule, gate_text(rig.cfg)) == ("F1", CLOSED)
    return rig, agent, clock


# --- items 1 and 5: no OFF without a read; one record per fence --------------------------------------------------


def test_a_fenced_peer_powered_on_again_is_read_on_said_once_and_never_called_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig, agent, clock = await holder_with_a_silent_peer(tmp_path)
        await cycle(agent, clock, 0.2)
        assert power_offs(rig) == [("power_off", "node-b")]
        assert agent.fence_results["node-b"].outcome is FenceOutcome.OFF
        for step in range(20):
            if step % 5 == 0:
                await lease_round(agent)
            await cycle(agent, clock, 0.2)
        assert len(fence_lines(rig)) == 1  # fenced once, recorded once

        # Powered on by someone while still silent: the agent's next BMC read sees it.
        rig.bmcs["node-b"].power["node-b"] = Power.ON
        await agent._read_power("node-b")
        assert [line["event"] for line in rig.lines[-2:]] == ["power", "fence-ineffective"]
        for step in range(20):
            if step % 5 == 0:
                await lease_round(agent)
            await cycle(agent, clock, 0.2)
            assert agent.power["node-b"][0] is not Power.OFF
        assert "node-b" not in agent.state["VI_1"].fenced_off
        assert power_offs(rig) == [("power_off", "node-b")]  # booting is no reason to power it off again
        assert len(fence_lines(rig)) == 1  # the lease keeps it out
        assert (agent.last["VI_1"].rule, gate_text(rig.cfg)) == ("H1", OPEN), agent.last["VI_1"].reason

        # It advertises (its keepalived is a VRRP master): escalated. Inside the hold-down the BMC is read (ON),
        # no other level exists: FAILED as ineffective, still no power-off, and the gate stays open (H1).
        reads_before = rig.bmcs["node-b"].calls.count(("status", "node-b"))
        rig.adverts["lo"].adverts[("VI_1", "node-b")] = clock()
        await cycle(agent, clock, 0.05)
        result = agent.fence_results["node-b"]
        assert (result.outcome, result.ineffective) == (FenceOutcome.FAILED, True)
        assert rig.bmcs["node-b"].calls.count(("status", "node-b")) > reads_before
        assert power_offs(rig) == [("power_off", "node-b")]
        assert (agent.last["VI_1"].rule, gate_text(rig.cfg)) == ("H1", OPEN)
        # Retried after the power timeout while it keeps advertising: the same answer, counted, not recorded.
        for _ in range(3):
            rig.adverts["lo"].adverts[("VI_1", "node-b")] = clock.advance(21.0)
            await lease_round(agent)
            await cycle(agent)
        assert len(fence_lines(rig)) == 2
        assert agent.orchestrator.repeats("node-b") >= 1
        kinds = await rig.alert_kinds(agent)
        assert kinds.count("peer_fenced") == 1 and kinds.count("fence_ineffective") == 2

    run(scenario())


# --- item 2: a failed fence holds ----------------------------------------------------------------------------------


def test_a_failed_fence_holds_the_gate_closed_until_an_operator_confirms_it_off(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig, agent, clock = await held_by_a_failed_fence(tmp_path)
        rig.vips.set("VI_1", False)  # keepalived in FAULT drops the VIP
        for _ in range(30):
            await lease_round(agent)
            await cycle(agent, clock, 0.2)
            assert (agent.last["VI_1"].rule, gate_text(rig.cfg)) == ("F1", CLOSED), agent.last["VI_1"].reason
        assert rig.lease.changes() == ["acquire 0"]  # the lease kept (and renewed), not released

        with pytest.raises(BadRequestError, match="unknown node"):
            agent._confirm_off_verb(["alice", "node-z"], clock())
        answer = agent._confirm_off_verb(["alice", "node-b"], clock())
        assert answer.startswith("OK ") and "alice" in answer
        await cycle(agent, clock, 0.2)
        assert agent.last["VI_1"].gate is Gate.OPEN and gate_text(rig.cfg) == OPEN
        assert agent.status()["last_fence"]["by"] == "alice"
        kinds = await rig.alert_kinds(agent)
        assert "fence_failed" in kinds and "fence_confirmed_off" in kinds
        confirmed = next(p for p in rig.posted if p["kind"] == "fence_confirmed_off")
        assert "alice" in confirmed["summary"]

    run(scenario())


def test_confirm_off_is_refused_for_a_peer_that_is_heard(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = Rig(load_config(tmp_path))
        agent = rig.agent()
        agent.begin()
        rig.heartbeats.view("node-b", heard_at=rig.clock(), state=BACKUP, priority=100)
        with pytest.raises(BadRequestError, match="not silent"):
            agent._confirm_off_verb(["alice", "node-b"], rig.clock())
        with pytest.raises(BadRequestError, match="WHO NODE"):
            agent._confirm_off_verb(["alice"], rig.clock())
        assert "node-b" not in agent.fence_results
        await rig.alert_kinds(agent)

    run(scenario())


# --- item 3: the lease is read again right before a power-off ---------------------------------------------------


def test_no_power_off_once_the_store_says_the_lease_moved_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig, agent, clock = await holder_with_a_silent_peer(tmp_path)
        held = agent.lease_views["VI_1"]
        assert held.status is LeaseStatus.MINE and held.token is not None
        # The store (a restart, a lapse) now names node-b; this agent's view is a renewal behind.
        rig.lease.view = LeaseView(LeaseStatus.PEER, "node-b", held.token + 1, clock() + 3.0)
        await cycle(agent, clock, 0.2)
        assert power_offs(rig) == []
        assert "node-b" not in agent.fence_results  # aborted, not failed
        assert fence_lines(rig)[-1]["outcome"] == "aborted"
        assert "no longer held" in fence_lines(rig)[-1]["reason"]
        await rig.alert_kinds(agent)

    run(scenario())


def test_confirm_off_over_the_socket_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> None:
        rig = Rig(load_config(tmp_path))
        agent = rig.agent()
        agent.begin()
        rig.heartbeats.view("node-b", alive=False, heard_at=rig.clock() - 5, state=MASTER, vip_present=True)
        await agent.notify.start()
        sock = str(rig.cfg.api.socket)

        def cli(*argv: str) -> tuple[int, str, str]:
            code = main(["fence", "node-b", *argv, "--socket", sock])
            out, err = capsys.readouterr()
            return code, out, err

        try:
            code, out, err = await asyncio.to_thread(cli, "confirm-off")
            assert code == 1 and "--yes" in err and "node-b" not in agent.fence_results
            code, out, err = await asyncio.to_thread(cli, "confirm-off", "--yes")
            assert (code, err) == (0, "") and "node-b confirmed off by hand by " in out
            result = agent.fence_results["node-b"]
            assert (result.outcome, result.by_hand) == (FenceOutcome.OFF, True)
            rig.heartbeats.view("node-b", heard_at=rig.clock(), state=BACKUP)  # heard again: refused
            code, out, err = await asyncio.to_thread(cli, "confirm-off", "--yes")
            assert code == 1 and "agent refused: CONFIRM-OFF: node-b is not silent" in err
        finally:
            await agent.notify.stop()
            await rig.alert_kinds(agent)

    run(scenario())


def test_a_confirmation_given_while_a_retry_runs_is_not_undone_by_its_failure(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig, agent, clock = await held_by_a_failed_fence(tmp_path)
        rig.bmcs["node-b"].answer = threading.Event()  # the next call hangs until its deadline
        clock.advance(rig.cfg.fencing.power_timeout_ms / 1000 + 0.2)
        await lease_round(agent)
        agent.run_cycle()  # F1 retries the fence
        await asyncio.sleep(0.05)
        assert "fence:node-b" in agent._busy
        agent._confirm_off_verb(["alice", "node-b"], clock())
        while "fence:node-b" in agent._busy:  # the retry ends at its deadline, unanswered
            await asyncio.sleep(0.02)
        rig.bmcs["node-b"].answer.set()  # let the power read that hangs behind it end too
        await settle(agent)
        assert agent.fence_results["node-b"].by_hand
        await cycle(agent, clock, 0.2)
        assert agent.last["VI_1"].gate is Gate.OPEN
        kinds = await rig.alert_kinds(agent)
        assert kinds.count("fence_failed") == 1  # the first failure only, not the superseded retry

    run(scenario())


def test_the_f1_hold_outlives_an_agent_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig, agent, clock = await held_by_a_failed_fence(tmp_path)
        stop_tasks(agent)
        await rig.alert_kinds(agent)
        rig.vips.set("VI_1", False)
        # A new agent (an upgrade): node-b still silent, its last claim unknown to the new process.
        clock.advance(1.0)
        second = Rig(rig.cfg, clock)
        second.bmcs["node-b"].status_unknown = True
        second.bmcs["node-b"].fail_off = "no answer from the BMC"
        again = second.agent()
        again.begin()
        second.reference.quorate = True
        second.heartbeats.view("node-b", alive=False, priority=100)
        second.lease.view = rig.lease.view
        await lease_round(again)
        for _ in range(5):
            await cycle(again, clock, 0.2)
            assert gate_text(rig.cfg) == CLOSED, again.last["VI_1"].reason
        assert again.last["VI_1"].rule == "F1"
        await second.alert_kinds(again)

    run(scenario())
