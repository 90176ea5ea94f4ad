"""`keepalived-arbiter token INSTANCE` and the socket's `TOKEN INSTANCE` (issue 14's workload, for real services):
a fencing token only while this node holds the lease, valid past the safety margin, and the gate is open."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from arbiter.agent.notify import BadRequestError
from arbiter.cli import main
from arbiter.model import LeaseStatus, LeaseView
from tests.unit.agentfakes import FakeClock, Rig, cycle, holding_with_the_lease, load_config


def answer(reply: str) -> dict[str, object]:
    assert reply.startswith("OK ")
    body: dict[str, object] = json.loads(reply[3:])
    return body


def test_the_token_only_while_holding_the_valid_lease_with_the_gate_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> None:
        rig = Rig(load_config(tmp_path))
        assert isinstance(rig.clock, FakeClock)
        clock, agent = rig.clock, rig.agent()
        agent.begin()
        # Before any decision: S0, gate closed, no lease.
        first = answer(agent._token_verb(["VI_1"], clock()))
        assert first["token"] is None and "not this node's" in str(first["reason"])

        await holding_with_the_lease(rig, agent, clock)
        assert agent.last["VI_1"].rule == "H1"
        held = answer(agent._token_verb(["VI_1"], clock()))
        assert held["token"] == agent.lease_views["VI_1"].token and held["reason"] is None and held["vip"] is True

        await agent.notify.start()
        sock = str(rig.cfg.api.socket)

        def cli(*argv: str) -> tuple[int, str, str]:
            code = main(["token", *argv, "--socket", sock])
            out, err = capsys.readouterr()
            return code, out, err

        try:
            code, out, err = await asyncio.to_thread(cli, "VI_1")
            assert (code, out, err) == (0, f"{held['token']}\n", "")
            code, out, err = await asyncio.to_thread(cli, "VI_9")
            assert code == 1 and "unknown instance 'VI_9'" in err

            # Renewals failing: inside the safety margin no token is given (H2 is about to step down).
            clock.advance(rig.cfg.lease.ttl_ms / 1000 - rig.cfg.lease.safety_ms / 1000 + 0.01)
            code, out, err = await asyncio.to_thread(cli, "VI_1")
            assert code == 1 and out == "" and "safety margin" in err

            # The lease now the peer's (a store restart, a handover): none, with the reason.
            agent.lease_views["VI_1"] = LeaseView(LeaseStatus.PEER, "node-b", 99, clock() + 3.0)
            code, out, err = await asyncio.to_thread(cli, "VI_1", "--json")
            body = json.loads(out)
            assert code == 1 and body["token"] is None and "held by node-b" in body["reason"]
        finally:
            await agent.notify.stop()
            await rig.alert_kinds(agent)

    asyncio.run(scenario())


def test_a_closed_gate_gives_no_token_even_with_the_lease(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = Rig(load_config(tmp_path))
        clock, agent = rig.clock, rig.agent()
        agent.begin()
        # The lease is this node's but the decision closed the gate (here S0, before the first full round).
        agent.lease_views["VI_1"] = LeaseView(LeaseStatus.MINE, "node-a", 5, clock() + 3.0)
        await cycle(agent)
        body = answer(agent._token_verb(["VI_1"], clock()))
        assert body["token"] is None and "gate of VI_1 is closed (S0" in str(body["reason"])
        with pytest.raises(BadRequestError, match="expected INSTANCE"):
            agent._token_verb([], clock())
        await rig.alert_kinds(agent)

    asyncio.run(scenario())
