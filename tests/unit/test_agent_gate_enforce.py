"""The agent enforces its gates: a gate file keepalived (or a hand) rewrote is put back by the next decision
cycle, and the gate watch wakes the decision loop for it at once (issue 12, item 1).

The agent is built on the fakes of tests/unit/agentfakes.py and driven one `run_cycle` at a time; nothing is
started (no sockets, no netlink, no lease store), so the only real edge exercised is the gate file itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from arbiter import config
from arbiter.model import PolicyState
from tests.unit.agentfakes import Rig, load_config


@pytest.fixture
def cfg(tmp_path: Path) -> config.Config:
    return load_config(tmp_path, fence=False)


def test_a_keepalived_restart_does_not_reopen_a_closed_gate(cfg: config.Config) -> None:
    gate = cfg.instance[0].track_file
    lines: list[dict[str, Any]] = []

    async def scenario() -> None:
        rig = Rig(cfg)
        rig.lines = lines
        agent = rig.agent()
        agent.state = {name: PolicyState() for name in agent.instances}
        agent.run_cycle()  # S0: closed until the first evidence round
        assert gate.read_text() == "1\n"
        gate.write_text("0\n")  # keepalived (re)starting with `init_file 0 overwrite`
        agent.run_cycle()
        assert gate.read_text() == "1\n"
        assert agent.status()["instances"][0]["gate_restored"] == 1

    asyncio.run(scenario())
    restored = [line for line in lines if line["event"] == "gate-restored"]
    assert [(r["instance"], r["gate"], r["rule"]) for r in restored] == [("VI_1", "closed", "S0")]


def test_the_watch_wakes_the_decision_loop_when_the_gate_is_overwritten(cfg: config.Config) -> None:
    gate = cfg.instance[0].track_file

    async def scenario() -> str | None:
        agent = Rig(cfg).agent()
        agent.state = {name: PolicyState() for name in agent.instances}
        agent.run_cycle()
        agent.gate_watch.start()
        try:
            await asyncio.sleep(0.05)
            assert not agent._wake.is_set()
            gate.write_text("0\n")
            await asyncio.wait_for(agent._wake.wait(), 5)
        finally:
            agent.gate_watch.stop()
        return agent._trigger[0] if agent._trigger else None

    assert asyncio.run(scenario()) == "gate"
