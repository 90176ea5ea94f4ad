"""The agent enforces its gates: a gate file keepalived (or a hand) rewrote is put back by the next decision
cycle, and the gate watch wakes the decision loop for it at once (issue 12, item 1).

The agent is built from a real config in a temporary directory and driven one `run_cycle` at a time; nothing is
started (no sockets, no netlink, no lease store), so the only edge exercised is the gate file itself.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from arbiter import config
from arbiter.agent.daemon import Agent
from arbiter.model import PolicyState

CONFIG = """
[node]
name = "node-a"
cluster = "web"
state_dir = "{d}/state"
[[peer]]
name = "node-b"
heartbeat_addresses = ["127.0.0.2"]
[[instance]]
name = "VI_1"
vip = ["10.0.0.100/24"]
interface = "lo"
track_file = "{d}/VI_1.gate"
priority = 150
virtual_router_id = 51
[reference]
addresses = ["127.0.0.1"]
[lease]
redis_url = "redis://127.0.0.1:1/0"
[heartbeat]
port = 6941
key_file = "{d}/hb.key"
udp = [{{ interface = "lo" }}]
[api]
socket = "{d}/agent.sock"
[keepalived]
config = "{d}/keepalived.conf"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> config.Config:
    key = tmp_path / "hb.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    path = tmp_path / "arbiter.toml"
    path.write_text(CONFIG.format(d=tmp_path))
    return config.load(path)


def test_a_keepalived_restart_does_not_reopen_a_closed_gate(cfg: config.Config) -> None:
    gate = cfg.instance[0].track_file
    lines: list[dict[str, Any]] = []

    async def scenario() -> None:
        agent = Agent.from_config(cfg, out=lines.append)
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
        agent = Agent.from_config(cfg, out=lambda line: None)
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
