"""Maintenance mode (`keepalived-arbiter pause` / `resume`): the verbs on the agent's socket, the flag kept under
state_dir across a restart, the agent while paused (gates held, no fence, no lease acquire or release, decisions
still logged), and what status, metrics and alerts say.

The agent is the real `Agent` on the fakes of tests/unit/agentfakes.py (the shared config in tmp_path), never
started as a whole: its socket server runs for the verb tests, and its decision cycle runs with scripted evidence
(`Scripted.evidence`, the seam between the evidence sources and `decide`), FakeFencer behind the real
Orchestrator, a fake lease, and the real AlertSink posting to an httpx MockTransport.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from arbiter import config as config_mod
from arbiter import statusview
from arbiter.agent import maintenance
from arbiter.agent.daemon import Agent
from arbiter.agent.maintenance import Pause, PauseFile
from arbiter.agent.notify import BadRequestError
from arbiter.cli import main
from arbiter.model import (
    AcquireLease,
    Alert,
    Evidence,
    Fence,
    Gate,
    LeaseStatus,
    LeaseView,
    PeerView,
    PolicyState,
    ReleaseLease,
    SendGarp,
    VrrpState,
)
from arbiter.policy import decide, withhold
from fencers.testing import FakeFencer
from tests.unit.agentfakes import FakeLease, Rig, agent_config, settle
from tests.unit.test_policy_rules import CFG, FREE, NOW, ev, holding, mine, peer
from tests.unit.test_status_metrics import SNAPSHOT, scrape

M, B = VrrpState.MASTER, VrrpState.BACKUP


# --- the flag on disk ---------------------------------------------------------------------------------------


def test_pause_file_round_trip_is_atomic_and_clear_removes_it(tmp_path: Path) -> None:
    flag = PauseFile(tmp_path / "state")
    assert flag.load() is None
    pause = Pause("alice", 1795637792.5, "kernel upgrade on both nodes")
    flag.save(pause)  # creates the state directory
    assert flag.load() == pause
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["maintenance.json"]  # no temp file left
    assert json.loads(flag.path.read_text())["version"] == 1
    flag.clear()
    assert flag.load() is None
    flag.clear()  # already clear: no error


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 9, "by": "x", "at": 1}', b"\xff\xfe", b""])
def test_an_unreadable_flag_still_means_paused(tmp_path: Path, content: bytes) -> None:
    # Starting unpaused would close every gate (S0): the operator's pause must survive a damaged file.
    flag = PauseFile(tmp_path)
    flag.path.write_bytes(content)
    pause = flag.load()
    assert pause is not None and pause.by == "unknown"
    assert pause.reason is not None and str(flag.path) in pause.reason and "still paused until `resume`" in pause.reason


def test_save_names_the_path_when_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(OSError, match="maintenance flag not written") as exc:
        PauseFile(blocker).save(Pause("alice", 1.0))
    assert str(blocker / "maintenance.json") in str(exc.value)


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ((), "PAUSE: expected WHO"),
        (("x" * 65,), "WHO: 1..64 printable"),
        (("alice", "y" * 201), "REASON longer than 200"),
        (("al\x07ice",), "WHO: 1..64 printable"),
    ],
)
def test_pause_requests_are_checked(words: tuple[str, ...], message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        maintenance.parse_pause(words)


def test_pause_and_resume_words() -> None:
    assert maintenance.parse_pause(["alice"]) == ("alice", None)
    assert maintenance.parse_pause(["alice", "kernel", "upgrade"]) == ("alice", "kernel upgrade")
    assert maintenance.parse_resume(["bob"]) == "bob"
    with pytest.raises(BadRequestError, match="RESUME: expected WHO, got 0 words"):
        maintenance.parse_resume([])
    with pytest.raises(BadRequestError, match="RESUME: expected WHO, got 2 words"):
        maintenance.parse_resume(["bob", "now"])


# --- the policy while paused (pure) -------------------------------------------------------------------------


def test_withhold_drops_fence_and_lease_changes_and_holds_the_gate() -> None:
    e = ev(state=M, lease=mine(3), peers=(peer(alive=False, heard_at=NOW - 2),))
    d = decide(holding(), e, CFG, NOW)
    assert any(isinstance(a, Fence) for a in d.actions)  # what a running agent does: H1 fences the silent peer
    carried, withheld = withhold(holding(), e, CFG, NOW, d, Gate.CLOSED)
    assert withheld == (Fence("b", 3, "silent on every heartbeat medium while this node holds the lease"),)
    assert not any(isinstance(a, Fence | AcquireLease | ReleaseLease) for a in carried.actions)
    assert (carried.gate, carried.state.gate, carried.rule) == (Gate.CLOSED, Gate.CLOSED, "H1")
    assert carried.reason == d.reason


def test_a_withheld_fence_is_asked_for_again_at_resume() -> None:
    e = ev(state=M, lease=mine(3), peers=(peer(alive=False, heard_at=NOW - 2),))
    d = decide(holding(), e, CFG, NOW)
    carried, _ = withhold(holding(), e, CFG, NOW, d, Gate.OPEN)
    # Not paused, the fence counts as requested and is not asked for twice; a paused agent never ran it, so
    # the first cycle after resume asks for it (what the paused agent logged it would do).
    assert not any(isinstance(a, Fence) for a in decide(d.state, e, CFG, NOW + 0.2).actions)
    assert any(isinstance(a, Fence) for a in decide(carried.state, e, CFG, NOW + 0.2).actions)


def test_a_withheld_acquisition_is_not_counted_as_maybe_granted() -> None:
    prev = holding(lease_valid_until=NOW + 2.0, highest_token=41)
    e = ev(state=M, lease=FREE)
    d = decide(prev, e, CFG, NOW)
    assert AcquireLease(41) in d.actions and d.state.lease_maybe_until == NOW + CFG.ttl
    carried, withheld = withhold(prev, e, CFG, NOW, d, Gate.OPEN)
    assert withheld == (AcquireLease(41),)
    assert carried.state.lease_maybe_until is None  # D4 must not demote a holder for a request never sent


def test_withhold_keeps_garp_and_alerts() -> None:
    d = decide(holding(), ev(state=M, lease=mine()), CFG, NOW)
    d = replace(d, actions=(SendGarp(), Alert("split-brain", "x"), ReleaseLease()))
    carried, withheld = withhold(holding(), ev(state=M, lease=mine()), CFG, NOW, d, Gate.OPEN)
    assert carried.actions == (SendGarp(), Alert("split-brain", "x")) and withheld == (ReleaseLease(),)


# --- the agent ----------------------------------------------------------------------------------------------


class Scripted(Agent):
    """The real agent on the fakes of tests/unit/agentfakes.py, its evidence scripted per cycle instead of
    gathered from them (the rig's AlertSink posts to an httpx MockTransport that keeps every alert)."""

    script: Evidence

    def __init__(self, rig: Rig, config_path: Path) -> None:
        super().__init__(rig.cfg, rig.edges, out=lambda line: None, config_path=config_path)
        self.state = {"VI_1": PolicyState()}
        self.rig = rig
        self.posted = rig.posted

    def evidence(self, name: str, now: float) -> Evidence:
        return self.script


def agent(tmp_path: Path) -> Scripted:
    cfg_path = tmp_path / "arbiter.toml"
    if not cfg_path.exists():
        agent_config(tmp_path)
    return Scripted(Rig(config_mod.load(cfg_path)), cfg_path)


def silent_peer(token: int = 3) -> Evidence:
    """Node-a holds the VIP with the lease; node-b is silent and last claimed the VIP: H1 fences it."""
    silent = PeerView(name="node-b", alive=False, heard_at=NOW - 2, state=M, vip_present=True, priority=100)
    return Evidence("VI_1", M, True, 150, True, LeaseView(LeaseStatus.MINE, "node-a", token, 1e12), (silent,))


def wired(tmp_path: Path) -> tuple[Scripted, FakeFencer, FakeLease, list[dict[str, Any]]]:
    a = agent(tmp_path)
    a.state = {"VI_1": holding(NOW - 10, highest_token=3)}
    # The store agrees with the script: the lease with token 3 is node-a's (read again before a power-off).
    a.rig.lease.view = a.lease_views["VI_1"] = silent_peer().lease
    return a, a.rig.bmcs["node-b"], a.rig.lease, a.posted


def run_async(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_pause_holds_the_gate_and_withholds_fence_then_resume_fences(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, bmc, lease, posted = wired(tmp_path)
        a.gates["VI_1"].write(Gate.CLOSED)  # the gate as the agent enforced it when paused
        a.script = silent_peer()
        assert json.loads(a._pause_verb(["alice", "rolling", "upgrade"], 0.0)[3:])["changed"] is True
        for _ in range(3):
            a.run_cycle()
            await settle(a)
        # The policy would open the gate and fence node-b (H1); paused, neither happens.
        assert a.last["VI_1"].rule == "H1" and a.last["VI_1"].gate is Gate.OPEN
        assert a.gates["VI_1"].read() is Gate.CLOSED
        assert ("power_off", "node-b") not in bmc.calls and "node-b" not in a.fence_results
        assert a.withheld["VI_1"] == ("fence node-b",)
        status = a.status()
        assert status["maintenance"] == {
            "paused": True,
            "by": "alice",
            "at": a.pause.at if a.pause else None,
            "reason": "rolling upgrade",
            "gates": {"VI_1": "closed"},
        }
        assert status["instances"][0]["withheld"] == ["fence node-b"]
        assert status["instances"][0]["gate"] == "closed" and status["instances"][0]["decision"]["gate"] == "open"
        # Resume: the first cycle does what the paused agent said it would.
        assert json.loads(a._resume_verb(["bob"], 0.0)[3:])["changed"] is True
        a.run_cycle()
        await settle(a)
        assert a.gates["VI_1"].read() is Gate.OPEN
        assert ("power_off", "node-b") in bmc.calls
        assert a.status()["maintenance"]["paused"] is False and a.status()["instances"][0]["withheld"] == []
        assert lease.changes() == [] and set(lease.calls) <= {"read"}  # read again right before the power-off
        await a.alerts.close(2.0)
        kinds = [p["kind"] for p in posted]
        assert kinds[:1] == ["maintenance_paused"] and "maintenance_resumed" in kinds and "peer_fenced" in kinds
        assert kinds.index("maintenance_resumed") < kinds.index("peer_fenced")
        paused = posted[0]
        assert paused["severity"] == "warning"
        assert "alice" in paused["summary"] and "rolling upgrade" in paused["summary"]
        assert paused["details"]["gates"] == {"VI_1": "closed"}

    run_async(scenario())


def test_a_paused_agent_restores_its_held_gate_when_keepalived_rewrites_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, _bmc, _lease, _posted = wired(tmp_path)
        a.script = Evidence("VI_1", M, True, 150, False, FREE, ())  # quorum lost, nobody heard: Q1 would close
        a.gates["VI_1"].write(Gate.OPEN)
        a._pause_verb(["alice"], 0.0)
        a.gates["VI_1"].path.write_text("1\n")  # keepalived restarted with init_file 1 overwrite
        a.run_cycle()
        assert (a.last["VI_1"].rule, a.last["VI_1"].gate) == ("Q1", Gate.CLOSED)
        assert a.gates["VI_1"].path.read_text() == "0\n"  # the held value, enforced
        await a.alerts.close(0.1)

    run_async(scenario())


@pytest.mark.parametrize(
    ("evidence", "wanted"),
    [
        # B1: not holding with the lease: a running agent releases it.
        (Evidence("VI_1", B, False, 150, True, LeaseView(LeaseStatus.MINE, "node-a", 3, 1e12), ()), "release"),
        # H3: holding, lease free: a running agent acquires it.
        (Evidence("VI_1", M, True, 150, True, FREE, ()), "acquire 3"),
    ],
)
def test_paused_agent_neither_acquires_nor_releases_a_lease(tmp_path: Path, evidence: Evidence, wanted: str) -> None:
    async def scenario() -> None:
        a, _bmc, lease, _posted = wired(tmp_path)
        a.script = evidence
        a.gates["VI_1"].write(Gate.OPEN)
        a._pause_verb(["alice"], 0.0)
        for _ in range(3):
            a.run_cycle()
            await settle(a)
        assert lease.calls == []
        assert a.withheld["VI_1"] == (wanted.split(maxsplit=1)[0] + " lease",)
        a._resume_verb(["alice"], 0.0)
        a.run_cycle()
        await settle(a)
        assert lease.calls == [wanted]
        await a.alerts.close(0.1)

    run_async(scenario())


def test_pause_aborts_a_fence_not_yet_at_its_device(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, bmc, _lease, _posted = wired(tmp_path)
        a.script = silent_peer()
        a.orchestrator.race_delay = 0.2  # the fence waits before touching the BMC
        a.run_cycle()  # not paused: the fence starts
        a._pause_verb(["alice"], 0.0)
        await settle(a)
        assert ("power_off", "node-b") not in bmc.calls
        assert "node-b" not in a.fence_results  # aborted, not failed
        await a.alerts.close(0.1)

    run_async(scenario())


def test_a_paused_agent_stops_without_closing_its_gates(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = agent(tmp_path)
        a.write_start_gates()
        a.gates["VI_1"].write(Gate.OPEN)  # the master's gate, open when the operator paused
        a._pause_verb(["alice"], 0.0)
        await a.shutdown()
        assert a.gates["VI_1"].read() is Gate.OPEN
        b = agent(tmp_path)
        b.write_start_gates()
        b._resume_verb(["alice"], 0.0)
        await b.shutdown()
        assert b.gates["VI_1"].read() is Gate.CLOSED  # running, a stop closes every gate (control)

    run_async(scenario())


# --- a restart while paused ---------------------------------------------------------------------------------


def test_an_agent_restarted_while_paused_stays_paused_and_keeps_each_gate_as_found(tmp_path: Path) -> None:
    first = agent(tmp_path)
    first._pause_verb(["alice", "upgrade"], 0.0)
    gate = first.gates["VI_1"].path
    gate.write_text("0\n")  # open, as the master's gate is
    second = agent(tmp_path)  # the same state_dir: an agent restarted (or upgraded)
    assert second.pause is not None and (second.pause.by, second.pause.reason) == ("alice", "upgrade")
    second.write_start_gates()
    assert gate.read_text() == "0\n"  # not S0's closed gate
    assert second.status()["maintenance"]["gates"] == {"VI_1": "open"}
    second._resume_verb(["alice"], 0.0)
    third = agent(tmp_path)
    assert third.pause is None
    third.write_start_gates()
    assert gate.read_text() == "1\n"  # not paused: S0 closes it


def test_a_paused_agent_writes_a_missing_gate_closed(tmp_path: Path) -> None:
    PauseFile(tmp_path / "state").save(Pause("alice", 1.0))
    a = agent(tmp_path)
    a.write_start_gates()
    assert a.gates["VI_1"].read() is Gate.CLOSED


# --- the verbs on the socket and the command line -----------------------------------------------------------


def test_pause_and_resume_over_the_socket_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> None:
        a = agent(tmp_path)
        a.write_start_gates()
        await a.notify.start()
        sock = str(a.cfg.api.socket)

        def cli(*argv: str) -> tuple[int, str, str]:
            code = main([*argv, "--socket", sock])
            out, err = capsys.readouterr()
            return code, out, err

        try:
            code, out, err = await asyncio.to_thread(cli, "pause", "--reason", "  kernel\n upgrade ")
            assert (code, err) == (0, "")
            assert out.startswith("paused by ") and "gates held (VI_1 closed)" in out
            assert PauseFile(tmp_path / "state").load() is not None
            assert a.pause is not None and a.pause.reason == "kernel upgrade"
            code, out, _ = await asyncio.to_thread(cli, "pause")
            assert code == 0 and out.startswith(f"already paused by {a.pause.by} since ")
            assert out.rstrip().endswith("(kernel upgrade); nothing changed")
            code, out, _ = await asyncio.to_thread(cli, "resume", "--json")
            answer = json.loads(out)
            assert (code, answer["changed"], answer["paused"]) == (0, True, False)
            assert PauseFile(tmp_path / "state").load() is None and a.pause is None
            code, out, _ = await asyncio.to_thread(cli, "resume")
            assert (code, out) == (0, "not paused; nothing to do\n")
            # A bad request gets the agent's reason; the CLI exits 1 with it.
            with pytest.raises(statusview.StatusError, match="agent refused: RESUME: expected WHO, got 0 words"):
                await asyncio.to_thread(statusview.ask, Path(sock), "RESUME")
            with pytest.raises(statusview.StatusError, match="agent refused: PAUSE: expected WHO"):
                await asyncio.to_thread(statusview.ask, Path(sock), "PAUSE")
        finally:
            await a.notify.stop()
            await a.alerts.close(0.1)

    run_async(scenario())


def test_pause_refused_when_the_flag_cannot_be_written(tmp_path: Path) -> None:
    a = agent(tmp_path)
    (tmp_path / "state").write_text("a file where the state directory should be")
    with pytest.raises(BadRequestError, match=r"not paused: .*maintenance flag not written"):
        a._pause_verb(["alice"], 0.0)
    assert a.pause is None


def test_cli_without_an_agent_exits_1_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "agent.sock"
    for verb in ("pause", "resume"):
        assert main([verb, "--socket", str(missing)]) == 1
        assert capsys.readouterr().err == f"{verb}: {missing}: no such socket; is the agent running?\n"
    assert main(["pause", "--reason", "   ", "--socket", str(missing)]) == 2
    assert "--reason is empty" in capsys.readouterr().err


# --- status text and metrics --------------------------------------------------------------------------------


def paused_snapshot() -> dict[str, Any]:
    s = copy.deepcopy(SNAPSHOT)
    s["maintenance"] = {
        "paused": True,
        "by": "alice",
        "at": 1795637700.0,
        "reason": "kernel upgrade",
        "gates": {"VI_1": "closed"},
    }
    s["instances"][0]["withheld"] = ["fence node-a"]
    return s


def test_status_text_says_paused_loudly_and_what_resume_would_do() -> None:
    text = statusview.render(paused_snapshot())
    assert "*** MAINTENANCE MODE: node-b PAUSED by alice since " in text and "kernel upgrade ***" in text
    assert "gates held (VI_1 closed); no fencing" in text
    assert "  paused: would set the gate closed and fence node-a" in text
    running = statusview.render(SNAPSHOT)  # an agent without the key (older) or not paused: no banner
    assert "MAINTENANCE" not in running and "paused:" not in running


def test_metrics_export_paused_and_withheld_actions() -> None:
    text = scrape(paused_snapshot())
    assert "keepalived_arbiter_paused 1.0" in text
    assert 'keepalived_arbiter_withheld_actions{instance="VI_1"} 1.0' in text
    assert "keepalived_arbiter_paused 0.0" in scrape(SNAPSHOT)
