"""A lease read answered after this agent acquired the lease must not overwrite it: the read may predate the
acquisition (seen in the lab: after a clean stop of the holder, the new holder's status showed no lease holder
for up to a renew interval, `tests/e2e/test_lab_operate.py`)."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from arbiter.model import LeaseStatus, LeaseView
from tests.unit.agentfakes import Rig, load_config, settle, stop_tasks


def test_a_read_that_predates_an_acquisition_does_not_overwrite_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig = Rig(load_config(tmp_path))
        agent = rig.agent()
        agent.begin()
        answer = asyncio.Event()

        async def slow_read() -> LeaseView:
            rig.lease.calls.append("read")
            await answer.wait()
            return LeaseView(LeaseStatus.FREE)  # what the store said before the acquisition

        rig.lease.read = slow_read  # type: ignore[method-assign]
        loop = asyncio.ensure_future(agent._lease_loop())
        while "read" not in rig.lease.calls:
            await asyncio.sleep(0.001)
        agent._spawn("lease:VI_1", agent._lease_call("VI_1", functools.partial(rig.lease.acquire, 0)))
        await settle(agent)
        assert agent.lease_views["VI_1"].status is LeaseStatus.MINE
        answer.set()
        for _ in range(10):
            await asyncio.sleep(0)
        assert agent.lease_views["VI_1"].status is LeaseStatus.MINE
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        stop_tasks(agent)
        await rig.alert_kinds(agent)

    asyncio.run(scenario())
