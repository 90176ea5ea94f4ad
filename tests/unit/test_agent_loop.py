"""The agent's loop on fakes of every edge (tests/unit/agentfakes.py), one or more tests per numbered problem of
issue 12. Each drives `run_cycle` with a fake clock and asserts what the agent does at its edges: the gate file
keepalived reads, the lease calls, the fences sent (FakeFencer behind the real Orchestrator), the alerts posted
(httpx MockTransport), the frames it would send, and `status`.

node-a is the agent under test, node-b its peer (fenceable through its FakeFencer).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from arbiter import config as config_mod
from arbiter.agent.daemon import Agent
from arbiter.agent.vrrp import AdvertListener, encode
from arbiter.evidence.heartbeat import HeartbeatService
from arbiter.evidence.heartbeat.frame import InstanceReport, NodeTimings
from arbiter.model import Gate, LeaseStatus, LeaseView, Power, VrrpState
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
from tests.unit.test_agent_vrrp import ip_packet

MASTER, BACKUP, FAULT = VrrpState.MASTER, VrrpState.BACKUP, VrrpState.FAULT
OPEN, CLOSED = "0\n", "1\n"  # the gate file as keepalived reads it (track_file, weight 0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def rigged(tmp_path: Path, **kwargs: Any) -> tuple[Rig, Agent, FakeClock]:
    rig = Rig(load_config(tmp_path, **kwargs))
    assert isinstance(rig.clock, FakeClock)
    return rig, rig.agent(), rig.clock


def peer_lease(rig: Rig, expires_in: float = 3.0, token: int = 7) -> LeaseView:
    rig.lease.view = LeaseView(LeaseStatus.PEER, "node-b", token, rig.clock() + expires_in)
    return rig.lease.view


def holder_report(advert_int_ms: int = 1000) -> InstanceReport:
    """node-b's frame: MASTER with the VIP and the lease (token 7), its gate open (H1)."""
    return InstanceReport(
        "VI_1", MASTER, True, 150, "node-b", 7, gate_open=True, rule="H1", advert_int_ms=advert_int_ms
    )


def fenced(rig: Rig) -> list[tuple[str, str]]:
    return [call for call in rig.bmcs["node-b"].calls if call[0] == "power_off"]


async def backup_beside_master(rig: Rig, agent: Agent, clock: FakeClock) -> None:
    """node-a (priority 100) a backup, node-b (150) the master with the lease, heard on the heartbeats; the
    first full evidence round done (S0 left). Adverts are the caller's to set."""
    agent.begin()
    rig.reference.quorate = True
    rig.heartbeats.view("node-b", heard_at=clock(), state=MASTER, vip_present=True, priority=150, quorate=True)
    peer_lease(rig)
    await lease_round(agent)
    await cycle(agent)


# --- 1: a keepalived restart reopens a closed gate ------------------------------------------------------------


def test_1_a_gate_keepalived_rewrote_open_is_closed_again_by_the_next_cycle(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig, agent, clock = rigged(tmp_path, instances=(("VI_1", 100),))
        await backup_beside_master(rig, agent, clock)
        # No advert from node-b since listening started, while its heartbeats say MASTER: V1 closes the gate.
        clock.advance(1.6)
        rig.heartbeats.view("node-b", heard_at=clock(), state=MASTER, vip_present=True, priority=150, quorate=True)
        await cycle(agent)
        assert (agent.last["VI_1"].rule, gate_text(rig.cfg)) == ("V1", CLOSED)
        gate = rig.cfg.instance[0].track_file
        gate.write_text("0\n")  # keepalived restarted with `init_file 0 overwrite`
        await cycle(agent, clock, 0.2)
        assert gate_text(rig.cfg) == CLOSED
        assert agent.status()["instances"][0]["gate_restored"] == 1
        restored = [line for line in rig.lines if line["event"] == "gate-restored"]
        assert [(r["gate"], r["rule"]) for r in restored] == [("closed", "V1")]
        await cycle(agent, clock, 0.2)  # the agent's own write is not counted as a restore
        assert agent.status()["instances"][0]["gate_restored"] == 1
        await rig.alert_kinds(agent)

    run(scenario())


# --- 2: preemptive failback settles in one move -----------------------------------------------------------------


def test_2_the_holder_yields_then_steps_down_first_for_a_returning_preferred_peer(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig, agent, clock = rigged(tmp_path, instances=(("VI_1", 100),))
        agent.begin()
        rig.vips.set("VI_1", True)  # keepalived here is MASTER: the VIP is on the interface
        rig.reference.quorate = True
        rig.heartbeats.view("node-b", heard_at=clock(), state=BACKUP, priority=150, quorate=True, rule="B2")
        await lease_round(agent)  # the lease is free
        await cycle(agent)  # H3: acquire
        await cycle(agent, clock, 0.2)
        assert (agent.last["VI_1"].rule, rig.lease.changes(), gate_text(rig.cfg)) == ("H1", ["acquire 0"], OPEN)
        # node-b (priority 150) comes back: its agent waits, gate closed (P1), for this node to yield.
        clock.advance(0.2)
        rig.heartbeats.view(
            "node-b", heard_at=clock(), state=BACKUP, priority=150, quorate=True, rule="P1", gate_open=False
        )
        await cycle(agent)
        assert agent.last["VI_1"].rule == "Y1"
        assert rig.lease.changes() == ["acquire 0", "release"]  # released for the preferred node to take
        assert gate_text(rig.cfg) == OPEN  # the VIP stays here until keepalived there preempts: no gap
        assert agent.lease_views["VI_1"].status is LeaseStatus.FREE
        await cycle(agent, clock, 0.2)
        assert rig.lease.changes() == ["acquire 0", "release"]  # not re-acquired while yielding
        # node-b opens (P2) and keepalived there leaves FAULT: this node steps down first (Y3), so that
        # keepalived there takes the VIP on the priority-0 advert instead of preempting beside it.
        clock.advance(0.05)
        rig.heartbeats.view(
            "node-b", heard_at=clock(), state=BACKUP, priority=150, quorate=True, rule="P2", gate_open=True
        )
        await cycle(agent)
        assert (agent.last["VI_1"].rule, gate_text(rig.cfg)) == ("Y3", CLOSED)
        # keepalived here dropped the VIP: BACKUP again at once (B2), the lease left to node-b.
        rig.vips.set("VI_1", False)
        await cycle(agent, clock, 0.05)
        assert (agent.last["VI_1"].rule, gate_text(rig.cfg)) == ("B2", OPEN)
        assert rig.lease.changes() == ["acquire 0", "release"]
        assert fenced(rig) == []
        assert "split_brain" not in await rig.alert_kinds(agent)

    run(scenario())


# --- 3: V1 and L3 see a master whose adverts were never heard here; refused adverts are counted ------------------


@pytest.mark.parametrize("heard", [False, True])
def test_3_a_master_whose_adverts_never_arrive_closes_the_gate_before_master_down(tmp_path: Path, heard: bool) -> None:
    async def scenario() -> None:
        rig, agent, clock = rigged(tmp_path, instances=(("VI_1", 100),))
        await backup_beside_master(rig, agent, clock)
        start = clock()
        rules = []
        while clock() - start < 2.5:  # master-down here is 3.6 s: keepalived has not taken the VIP yet
            clock.advance(0.2)
            rig.heartbeats.view("node-b", heard_at=clock(), state=MASTER, vip_present=True, priority=150, quorate=True)
            if heard:
                rig.adverts["lo"].adverts[("VI_1", "node-b")] = clock()
            await cycle(agent)
            rules.append(agent.last["VI_1"].rule)
        if heard:  # control: adverts arrive, keepalived here stays BACKUP by itself and the gate stays open
            assert gate_text(rig.cfg) == OPEN and "V1" not in rules
        else:  # none since listening began (an agent restart, a cut before it): closed 1.5 adverts in
            assert gate_text(rig.cfg) == CLOSED and "V1" in rules
            assert rules.index("V1") <= 7  # by 1.6 s: 1.5 adverts after listening began, and before master-down
        await rig.alert_kinds(agent)

    run(scenario())


def test_3_adverts_refused_by_the_listener_are_counted_in_status(tmp_path: Path) -> None:
    async def scenario() -> None:
        cfg = load_config(tmp_path, instances=(("VI_1", 100),))
        rig = Rig(cfg)
        listener = AdvertListener("lo", {51: "VI_1"}, {"127.0.0.2": "node-b"})
        listener.begin(rig.clock())
        rig.adverts["lo"] = listener  # type: ignore[assignment]  # the real listener, fed by hand
        agent = rig.agent()
        clock = rig.clock
        assert isinstance(clock, FakeClock)
        await backup_beside_master(rig, agent, clock)
        advert = encode(51, 150, ["10.0.0.100"])
        assert listener.receive(ip_packet(advert, "127.0.0.2", ttl=64), clock()) is None  # routed: TTL not 255
        status = agent.status()["vrrp"]["lo"]
        assert status["refused"] == {"ttl": 1} and status["unobserved"]["peers"] == ["node-b"]
        assert agent.peer_view("node-b", "VI_1").listening_since is None  # may have been node-b's: not "none seen"
        # An advert from node-b that passes is what the policy reads.
        assert listener.receive(ip_packet(advert, "127.0.0.2"), clock()) is not None
        assert agent.peer_view("node-b", "VI_1").adverts_at == clock()
        await rig.alert_kinds(agent)

    run(scenario())


# --- 4: notify hooks race -------------------------------------------------------------------------------------


def test_4_a_late_master_hook_after_the_fifo_said_fault_does_not_make_the_frames_claim_master(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig, agent, clock = rigged(tmp_path, notify_fifo=True)
        agent.begin()
        await cycle(agent)
        assert agent.fifo is not None
        agent.fifo.feed('INSTANCE "VI_1" MASTER 150', clock())
        clock.advance(0.02)
        agent.fifo.feed('INSTANCE "VI_1" FAULT 150', clock())
        # The MASTER hook keepalived spawned first arrives last (its Python start-up took longer).
        clock.advance(0.03)
        assert agent.notify._notify(["INSTANCE", "VI_1", "MASTER", "150", f"at={clock() - 0.05:.6f}"], clock()) == "OK"
        await cycle(agent)
        assert agent.kstate["VI_1"] is FAULT
        assert [s.instances[0].state for s in rig.heartbeats.sent] == [MASTER, FAULT]  # each line sent at once
        assert agent.snapshot().instances[0].state is FAULT
        assert agent.evidence("VI_1", clock()).state is FAULT  # what the policy decides on
        await rig.alert_kinds(agent)

    run(scenario())


def test_4_without_the_fifo_netlink_outranks_a_late_master_hook(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig, agent, clock = rigged(tmp_path)
        agent.begin()
        await cycle(agent)
        up = clock()
        rig.vips.set("VI_1", True)  # keepalived MASTER: the VIP appears (netlink)
        clock.advance(0.02)
        rig.vips.set("VI_1", False)  # and goes 20 ms later; the FAULT hook is still starting
        clock.advance(0.03)
        assert agent.notify._notify(["INSTANCE", "VI_1", "MASTER", "150", f"at={up:.6f}"], clock()) == "OK"
        await cycle(agent)
        assert agent.kstate["VI_1"] is BACKUP and agent.snapshot().instances[0].state is BACKUP
        assert [s.instances[0].state for s in rig.heartbeats.sent] == [MASTER, BACKUP]
        assert agent.keepalived.dropped == {"vip_changed": 1}
        await rig.alert_kinds(agent)

    run(scenario())


# --- 5: a backup does not take a VIP whose lease a silent, unexpired holder has ---------------------------------


@pytest.mark.parametrize("holder_power", [Power.ON, Power.OFF])
def test_5_a_silent_holders_valid_lease_closes_the_gate_before_keepalived_takes_the_vip(
    tmp_path: Path, holder_power: Power
) -> None:
    async def scenario() -> None:
        # VRRPv3 at 0.1 s: keepalived here takes the VIP 0.36 s after node-b's last advert.
        rig, agent, clock = rigged(
            tmp_path, instances=(("VI_1", 100),), vrrp_version=3, advert_int_ms=100, heartbeat_ms=(50, 250)
        )
        master_down = agent.policy_cfg["VI_1"].master_down
        agent.begin()
        rig.reference.quorate = True
        for _ in range(6):  # node-b holds the VIP and the lease, heard and advertising
            clock.advance(0.05)
            rig.heartbeats.hear("node-b", holder_report(100))
            rig.adverts["lo"].adverts[("VI_1", "node-b")] = clock()
            peer_lease(rig)
            await lease_round(agent)
            await cycle(agent)
        assert gate_text(rig.cfg) == OPEN
        silent_at = clock()  # node-b is cut off from everything now; its lease runs 3 s more
        rig.bmcs["node-b"].power["node-b"] = holder_power
        rules = []
        while clock() < silent_at + master_down:
            clock.advance(0.05)
            await cycle(agent)
            rules.append(agent.last["VI_1"].rule)
        # keepalived's master-down fires now: what it reads in the gate decides whether it takes the VIP.
        if holder_power is Power.ON:
            assert gate_text(rig.cfg) == CLOSED and rules[-1] == "L5"
            assert rules.count("L5") <= 2  # closed in the last cycle before master-down, not at the first silence
        else:  # read OFF: dead, its lease is not in use; keepalived takes the VIP at its own speed
            assert gate_text(rig.cfg) == OPEN and "L5" not in rules
        assert rig.lease.changes() == []
        await rig.alert_kinds(agent)

    run(scenario())


# --- 6: an agent restart on the master moves no VIP -------------------------------------------------------------


async def a_master_with_the_lease(rig: Rig, agent: Agent, clock: FakeClock) -> None:
    agent.begin()
    rig.vips.set("VI_1", True)
    rig.reference.quorate = True
    rig.heartbeats.view("node-b", heard_at=clock(), state=BACKUP, priority=100, quorate=True, rule="B2")
    await lease_round(agent)
    await cycle(agent)  # H3: acquire
    await cycle(agent, clock, 0.2)
    assert (agent.last["VI_1"].rule, gate_text(rig.cfg)) == ("H1", OPEN)
    await cycle(agent, clock, 1.0)  # the record is written (at least every renew interval)
    assert agent.record.path.exists()


@pytest.mark.parametrize("down_for", [0.5, 3.0])
def test_6_an_agent_restarted_on_the_master_keeps_the_gate_open_while_its_record_vouches(
    tmp_path: Path, down_for: float
) -> None:
    async def scenario() -> None:
        cfg = load_config(tmp_path)
        clock = FakeClock()
        first = Rig(cfg, clock)
        agent = first.agent()
        await a_master_with_the_lease(first, agent, clock)
        token = agent.lease_views["VI_1"].token
        stop_tasks(agent)  # killed: nothing more from it
        await first.alert_kinds(agent)
        clock.advance(down_for)
        # The next agent: same state_dir and gate file, keepalived still MASTER, the lease still in Redis.
        second = Rig(cfg, clock)
        second.lease.view = LeaseView(LeaseStatus.MINE, "node-a", token, first.lease.view.expires_at)
        again = second.agent()
        kept = again.begin()
        second.vips.set("VI_1", True)
        await cycle(again)  # before any evidence
        if down_for >= agent.policy_cfg["VI_1"].ttl - agent.policy_cfg["VI_1"].safety:
            # Control: a record older than TTL − safety vouches for nothing: S0 closes the gate.
            assert kept == [] and gate_text(cfg) == CLOSED
            await second.alert_kinds(again)
            return
        assert kept == ["VI_1"] and gate_text(cfg) == OPEN and again.last["VI_1"].rule == "S0"
        second.reference.quorate = True
        second.heartbeats.view("node-b", heard_at=clock(), state=BACKUP, priority=100, quorate=True, rule="B2")
        await lease_round(again)  # the resumed lease is renewed at once, not read
        await cycle(again, clock, 0.2)
        assert again.last["VI_1"].rule == "H1" and gate_text(cfg) == OPEN
        assert [d["gate"] for d in second.decisions()] == ["open"] * len(second.decisions())
        assert second.store.renewed == [["VI_1"]] and second.lease.changes() == []  # no new token, no release
        assert again.lease_views["VI_1"].token == token
        assert "gate_closed" not in await second.alert_kinds(again)

    run(scenario())


# --- 7: L3 judges the holder by its own timings; the drift check reports them ----------------------------------


@pytest.mark.parametrize("holder_ttl_ms", [2000, None])
def test_7_l3_reads_the_holders_renewal_time_with_the_ttl_from_its_frames(
    tmp_path: Path, holder_ttl_ms: int | None
) -> None:
    async def scenario() -> None:
        rig, agent, clock = rigged(tmp_path, instances=(("VI_1", 100),))
        timings = None if holder_ttl_ms is None else NodeTimings(holder_ttl_ms, 500, 500, 200, 1000)
        agent.begin()
        rig.reference.quorate = True
        rig.heartbeats.hear("node-b", holder_report(), timings=timings)
        rig.adverts["lo"].adverts[("VI_1", "node-b")] = clock()  # its last advert seen here: the path is cut now
        cut_at = clock()
        await lease_round(agent)
        await cycle(agent)
        while clock() < cut_at + 1.6:
            clock.advance(0.1)
            rig.heartbeats.hear("node-b", holder_report(), timings=timings)
            if abs(clock() - (cut_at + 1.5)) < 1e-6:
                # node-b renews its lease 1.5 s after its last advert seen here: expiry = now + its TTL.
                rig.lease.view = LeaseView(LeaseStatus.PEER, "node-b", 7, clock() + 2.0)
                await lease_round(agent)
            await cycle(agent)
        decision = agent.last["VI_1"]
        assert gate_text(rig.cfg) == CLOSED
        if holder_ttl_ms is not None:  # with its 2 s TTL: renewed 1.5 s after its last advert, the path is cut
            assert decision.rule == "L3" and "renewed by node-b (token 7) 1.5s after its last VRRP advert" in (
                decision.reason
            )
        else:  # control: a peer that sends no timings is judged by this node's 3 s TTL: the renewal looks older
            assert decision.rule == "V1"
        await rig.alert_kinds(agent)

    run(scenario())


def test_7_the_drift_check_names_a_peer_whose_timings_differ(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig, agent, _clock = rigged(tmp_path)
        rig.heartbeats.hear("node-b", holder_report(), timings=NodeTimings(2000, 500, 500, 200, 1000))
        drift = await agent.drift_check()
        assert [f for f in drift["findings"] if "timing-drift" in f] == [
            "arbiter config: warning: [timing-drift] lease.ttl_ms is 2000 on node-b, 3000 on this node",
            "arbiter config: warning: [timing-drift] lease.renew_ms is 500 on node-b, 1000 on this node",
        ]
        await agent.alerts.close(2.0)
        posted = [p for p in rig.posted if p["kind"] == "config_drift"]
        assert posted and any("lease.ttl_ms is 2000 on node-b" in f for f in posted[0]["details"]["findings"])

    run(scenario())


# --- 8: maintenance mode ----------------------------------------------------------------------------------------


def test_8_paused_no_fence_no_lease_change_gates_held_and_said_loudly(tmp_path: Path) -> None:
    async def scenario() -> None:
        rig, agent, clock = rigged(tmp_path)
        agent.begin()
        await holding_with_the_lease(rig, agent, clock)
        assert (agent.last["VI_1"].rule, gate_text(rig.cfg), rig.lease.changes()) == ("H1", OPEN, ["acquire 0"])
        agent._pause_verb(["alice", "rolling", "upgrade"], clock())
        # node-b goes silent after claiming the VIP: a running agent fences it (H1); keepalived here drops the VIP
        # and the quorum is lost: a running agent would release the lease and close the gate.
        rig.heartbeats.view("node-b", alive=False, heard_at=clock(), state=MASTER, vip_present=True, priority=100)
        for _ in range(5):
            await cycle(agent, clock, 0.2)
        assert agent.last["VI_1"].rule == "H1" and agent.withheld["VI_1"] == ("fence node-b",)
        rig.vips.set("VI_1", False)
        rig.reference.quorate = False
        await cycle(agent, clock, 0.2)
        assert agent.last["VI_1"].gate is Gate.CLOSED  # what the policy would do
        assert gate_text(rig.cfg) == OPEN  # the gate held as it was when paused
        assert fenced(rig) == [] and "node-b" not in agent.fence_results
        assert rig.lease.changes() == ["acquire 0"]
        status = agent.status()
        assert status["maintenance"]["paused"] is True and status["maintenance"]["by"] == "alice"
        assert status["maintenance"]["gates"] == {"VI_1": "open"}
        # Restarted while paused (an upgrade): still paused, the gate kept as found, whatever the record says.
        stop_tasks(agent)
        kinds = await rig.alert_kinds(agent)
        assert kinds.count("maintenance_paused") == 1 and "peer_fenced" not in kinds and "gate_closed" not in kinds
        paused = next(p for p in rig.posted if p["kind"] == "maintenance_paused")
        assert "alice" in paused["summary"] and "rolling upgrade" in paused["summary"]
        clock.advance(10.0)
        second = Rig(rig.cfg, clock)
        again = second.agent()
        assert again.begin() == ["VI_1"] and gate_text(rig.cfg) == OPEN
        await cycle(again)
        assert gate_text(rig.cfg) == OPEN and again.status()["maintenance"]["paused"] is True
        await second.alert_kinds(again)

    run(scenario())


# --- 9: a medium missing at start is a medium down, not a refusal to run ---------------------------------------


def test_9_an_agent_whose_serial_device_is_missing_runs_and_shows_the_medium_down(sock_dir: Path) -> None:
    device = sock_dir / "ttyMISSING"
    cfg: config_mod.Config = load_config(sock_dir, serial=str(device), udp=False)
    rig = Rig(cfg, clock=time.monotonic)  # the whole agent runs: its loops sleep on the real clock
    rig.heartbeats_factory = lambda snapshot: HeartbeatService.from_config(cfg, snapshot)
    agent = rig.agent()
    medium = f"serial:{device}"

    async def scenario() -> dict[str, Any]:
        running = asyncio.ensure_future(agent.run())
        try:
            deadline = time.monotonic() + 10
            while not (agent.cycle_at is not None and medium in agent.status()["heartbeat"]["media"]):
                assert not running.done(), running.exception()
                assert time.monotonic() < deadline, "the agent did not start deciding"
                await asyncio.sleep(0.02)
            while not [p for p in rig.posted if p["kind"] == "medium_down"]:
                assert time.monotonic() < deadline, "no medium_down alert"
                await asyncio.sleep(0.02)
            status = agent.status()
        finally:
            agent.stop()
            await asyncio.wait_for(running, 10)
        return status

    status = run(scenario())
    link = status["heartbeat"]["media"][medium]
    assert link["open"] is False and str(device) in (link["reason"] or "") and link["next_retry_in_s"] is not None
    assert status["instances"][0]["gate"] == "closed"  # S0: deciding, gate written, waiting for evidence
    down = next(p for p in rig.posted if p["kind"] == "medium_down")
    assert down["details"]["medium"] == medium and down["details"]["local"] is True
    assert gate_text(cfg) == CLOSED  # stopped for good: closed


def test_settle_leaves_nothing_running(tmp_path: Path) -> None:
    """The helpers these tests use let every job of a cycle finish (or they would assert on half-done work)."""

    async def scenario() -> None:
        rig, agent, clock = rigged(tmp_path)
        agent.begin()
        rig.reference.quorate = True
        rig.heartbeats.view("node-b", heard_at=clock(), state=BACKUP, priority=100)
        await lease_round(agent)
        rig.vips.set("VI_1", True)
        agent.run_cycle()
        assert agent._busy  # the acquisition runs as a job
        await settle(agent)
        assert not agent._busy and rig.lease.changes() == ["acquire 0"]
        await rig.alert_kinds(agent)

    run(scenario())
