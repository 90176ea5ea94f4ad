"""SIGHUP on the agent's fakes (tests/unit/agentfakes.py): a reload builds the webhooks and fencers of the new
config through its edges (`Edges.alerts_for`, `Edges.fencing_for`), applies them whole, or refuses and says so."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from arbiter.agent.daemon import Agent
from tests.unit.agentfakes import Rig, agent_config, load_config, settle


def reloadable(where: Path) -> tuple[Path, Rig, Agent]:
    """The agent on its fakes, built from a config file it can read again on SIGHUP."""
    path = agent_config(where)
    rig = Rig(load_config(where))
    return path, rig, rig.agent(config_path=path)


def test_a_new_webhook_is_applied_in_place_and_the_next_alert_goes_there(tmp_path: Path) -> None:
    async def scenario() -> None:
        path, rig, agent = reloadable(tmp_path)
        first = agent.alerts
        path.write_text(path.read_text().replace("http://alerts.test/hook", "http://pager.test/v1"))
        result = await agent.reload()
        assert result["ok"] is True and agent.alerts is not first
        assert agent.cfg.alerts.webhooks[0].url == "http://pager.test/v1"
        agent._pause_verb(["alice"], 0.0)  # any alert from here on
        assert await rig.alert_kinds(agent) == ["maintenance_paused"]
        assert rig.urls == ["http://pager.test/v1"]
        if agent._alerts_task is not None:  # the new sink's delivery task, started by the reload
            agent._alerts_task.cancel()

    asyncio.run(scenario())


def test_a_change_that_needs_a_restart_is_refused_whole_and_alerted(tmp_path: Path) -> None:
    async def scenario() -> None:
        path, rig, agent = reloadable(tmp_path)
        orchestrator = agent.orchestrator
        text = path.read_text()
        path.write_text(
            text.replace("http://alerts.test/hook", "http://pager.test/v1").replace(
                'redis_url = "redis://127.0.0.1:1/0"', 'redis_url = "redis://127.0.0.1:1/0"\nttl_ms = 4000'
            )
        )
        result = await agent.reload()
        assert result["ok"] is False and "lease changed: restart the agent" in result["error"]
        assert agent.orchestrator is orchestrator and agent.cfg.lease.ttl_ms == 3000
        assert agent.status()["config"]["reload"]["ok"] is False
        await settle(agent)
        kinds = await rig.alert_kinds(agent)
        assert kinds == ["config_reload_failed"] and rig.urls == ["http://alerts.test/hook"]  # the old sink

    asyncio.run(scenario())


def test_a_fencing_change_builds_new_fencers_through_the_edge(tmp_path: Path) -> None:
    async def scenario() -> None:
        path, rig, agent = reloadable(tmp_path)
        old = agent.orchestrator
        path.write_text(path.read_text().replace('host = "127.0.0.3"', 'host = "127.0.0.4"'))
        result = await agent.reload()
        assert result["ok"] is True and agent.orchestrator is not old
        assert agent.orchestrator.levels["node-b"] == [[rig.bmcs["node-b"]]]  # the rig's FakeFencer, not IPMI
        await rig.alert_kinds(agent)

    asyncio.run(scenario())


def test_a_drift_check_cut_short_by_a_stop_ends_quietly(tmp_path: Path) -> None:
    """A stop (restart) while a drift check reads keepalived.conf cancels the check. The scheduler logs any
    exception of a job as an ERROR with its traceback: found by chaos (issue 14) in agent.log after restarts."""

    async def scenario() -> None:
        agent = reloadable(tmp_path)[2]
        conf = agent.cfg.keepalived.config
        conf.unlink(missing_ok=True)
        os.mkfifo(conf)  # the read blocks in its thread until a writer comes: the check is in flight
        check = asyncio.ensure_future(agent.drift_check())
        await asyncio.sleep(0.2)
        assert not check.done()
        check.cancel()
        try:
            assert isinstance(await check, dict)  # ended, not raised
        finally:
            with open(conf, "w"):  # lets the blocked read finish (empty file) so its thread ends
                pass

    asyncio.run(scenario())
