"""keepalived's state from netlink, the notify FIFO and the notify hooks (issue 12, item 4: hooks race).

The tracker is driven with plain calls and explicit times; the agent's own edges (its NotifyServer, its
NotifyFifo reader, its netlink callback) are driven the same way, and with real hook processes that keepalived
would have spawned in one order and that reach the agent in the other.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from arbiter.agent.daemon import Agent
from arbiter.agent.kstate import KeepalivedStates
from arbiter.model import VrrpState
from tests.unit.agentfakes import Rig, load_config

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / ".venv" / "bin" / "keepalived-arbiter-notify"
MASTER, BACKUP, FAULT = VrrpState.MASTER, VrrpState.BACKUP, VrrpState.FAULT


def tracker() -> KeepalivedStates:
    return KeepalivedStates({"VI_1": 100})


# --- the tracker, with explicit times ------------------------------------------------------------------------


def test_a_master_hook_arriving_after_the_fault_hook_of_a_later_transition_is_dropped() -> None:
    k = tracker()
    assert k.hook("VI_1", FAULT, 100, sent_at=10.02)
    assert not k.hook("VI_1", MASTER, 100, sent_at=10.00)  # spawned first, its start-up took longer
    assert k.state["VI_1"] is FAULT
    assert k.dropped == {"older_hook": 1}


def test_with_netlink_the_late_master_hook_is_dropped_in_either_order() -> None:
    # VIP added at 10.000 (MASTER hook spawned just after), removed at 10.020 (FAULT hook spawned just after).
    for order in ("fault first", "master first"):
        k = tracker()
        k.vip("VI_1", True, 10.0003)
        k.vip("VI_1", False, 10.0203)
        hooks = [(FAULT, 10.02), (MASTER, 10.0)]  # spawn times as the kernel rounds them (10 ms ticks)
        for state, sent_at in hooks if order == "fault first" else hooks[::-1]:
            k.hook("VI_1", state, 100, sent_at)
        assert k.state["VI_1"] is FAULT, order
        assert sum(k.dropped.values()) == 1, order


def test_a_stale_master_hook_after_the_vip_went_away_does_not_claim_master() -> None:
    k = tracker()
    k.vip("VI_1", True, 10.0)
    k.vip("VI_1", False, 10.02)
    assert not k.hook("VI_1", MASTER, 150, sent_at=10.0)
    assert k.state["VI_1"] is BACKUP and k.priority["VI_1"] == 100
    assert k.dropped == {"vip_changed": 1}
    # A stale BACKUP hook after the VIP came back does not hide the MASTER either.
    k.vip("VI_1", True, 13.5)
    assert not k.hook("VI_1", BACKUP, 100, sent_at=13.4)
    assert k.state["VI_1"] is MASTER


def test_a_hook_that_agrees_with_netlink_refines_it_whatever_the_order() -> None:
    k = tracker()
    k.vip("VI_1", True, 10.0)
    k.vip("VI_1", False, 10.0203)
    # keepalived removed the VIP, then spawned the FAULT hook; the kernel's 10 ms tick makes the hook look older.
    assert k.hook("VI_1", FAULT, 90, sent_at=10.02)
    assert (k.state["VI_1"], k.priority["VI_1"]) == (FAULT, 90)


def test_the_fifo_wins_over_hooks_for_its_instance() -> None:
    k = KeepalivedStates({"VI_1": 100, "VI_2": 100})
    assert k.fifo("VI_1", FAULT, 100, at=10.03)
    assert not k.hook("VI_1", MASTER, 100, sent_at=10.04)
    assert k.state["VI_1"] is FAULT and k.dropped == {"fifo": 1}
    assert k.fifo("VI_1", BACKUP, 100, at=10.5) and k.state["VI_1"] is BACKUP
    assert k.hook("VI_2", MASTER, 100, sent_at=10.04)  # the FIFO has not spoken for VI_2
    assert k.applied == {"fifo": 2, "hook": 1}


def test_the_start_up_check_counts_as_a_vip_change() -> None:
    k = tracker()
    k.vip("VI_1", False, 100.0)  # no VIP found at start
    assert k.state["VI_1"] is VrrpState.UNKNOWN
    assert not k.hook("VI_1", MASTER, 100, sent_at=99.9)  # spawned before the agent looked
    # Newer than everything seen: believed (an instance whose VIP this agent does not watch still says MASTER).
    assert k.hook("VI_1", MASTER, 100, sent_at=100.1)
    assert k.state["VI_1"] is MASTER


# --- the agent's edges ------------------------------------------------------------------------------------------


def make_agent(where: Path) -> Agent:
    cfg = load_config(where, instances=(("VI_1", 100),), notify_fifo=True)
    return Rig(cfg, clock=time.monotonic).agent()


def claimed(agent: Agent) -> VrrpState:
    """What this node's next heartbeat frame says about VI_1."""
    return agent.snapshot().instances[0].state


def test_agent_a_fifo_line_wins_over_a_later_hook(sock_dir: Path) -> None:
    agent = make_agent(sock_dir)
    assert agent.fifo is not None
    now = time.monotonic()
    agent.fifo.feed('INSTANCE "VI_1" FAULT 100', now)
    assert agent.notify._notify(["INSTANCE", "VI_1", "MASTER", "100"], now + 0.02) == "OK"
    assert agent.kstate["VI_1"] is FAULT and claimed(agent) is FAULT


@asynccontextmanager
async def held_hook(path: Path, state: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A hook as keepalived spawns it, stopped (SIGSTOP) at once: its Python start-up takes tens of ms, the
    signal microseconds. Whatever the test does, the process is ended by its PID afterwards."""
    proc = await spawn_hook(path, state)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            os.kill(proc.pid, signal.SIGCONT)
            await proc.wait()


async def spawn_hook(path: Path, state: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "KEEPALIVED_ARBITER_SOCKET": str(path), "KEEPALIVED_ARBITER_NOTIFY_TIMEOUT": "3"}
    return await asyncio.create_subprocess_exec(str(HOOK), "INSTANCE", "VI_1", state, "100", env=env)


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_agent_real_hooks_spawned_master_then_fault_arriving_fault_first(sock_dir: Path) -> None:
    """keepalived goes MASTER then FAULT 30 ms later; the MASTER hook is held (SIGSTOP) past the FAULT hook."""
    agent = make_agent(sock_dir)

    async def main() -> None:
        await agent.notify.start()
        try:
            agent._vip_changed("VI_1", True, time.monotonic())
            async with held_hook(agent.notify.path, "MASTER") as late:
                await asyncio.sleep(0.03)
                agent._vip_changed("VI_1", False, time.monotonic())
                fault = await spawn_hook(agent.notify.path, "FAULT")
                assert await asyncio.wait_for(fault.wait(), 10) == 0
                assert agent.notify.accepted == 1 and agent.kstate["VI_1"] is FAULT
                os.kill(late.pid, signal.SIGCONT)
                assert await asyncio.wait_for(late.wait(), 10) == 0
            await until(lambda: agent.notify.accepted == 2, "the late hook")
        finally:
            await agent.notify.stop()

    asyncio.run(main())
    assert agent.kstate["VI_1"] is FAULT and claimed(agent) is FAULT
    assert dict(agent.keepalived.dropped) == {"older_hook": 1}


def test_agent_real_master_hook_arriving_after_the_vip_went_away(sock_dir: Path) -> None:
    """The FAULT hook never came (or comes later): netlink's removal, newer than the MASTER hook, stands."""
    agent = make_agent(sock_dir)

    async def main() -> None:
        await agent.notify.start()
        try:
            agent._vip_changed("VI_1", True, time.monotonic())
            async with held_hook(agent.notify.path, "MASTER") as late:
                await asyncio.sleep(0.03)
                agent._vip_changed("VI_1", False, time.monotonic())
                os.kill(late.pid, signal.SIGCONT)
                assert await asyncio.wait_for(late.wait(), 10) == 0
            await until(lambda: agent.notify.accepted == 1, "the late hook")
        finally:
            await agent.notify.stop()

    asyncio.run(main())
    assert agent.kstate["VI_1"] is BACKUP and claimed(agent) is BACKUP
    assert dict(agent.keepalived.dropped) == {"vip_changed": 1}
