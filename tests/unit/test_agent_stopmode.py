"""Issue 12 item 6, `systemctl restart`: the stop half of a restart moves no VIP (arbiter.agent.stopmode and
Agent.shutdown), while `systemctl stop` and every doubt keep the clean hand-over."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from arbiter.agent.stopmode import StopMode, StopReason, SystemdStopQuery, job_type, parse_show, service_of
from arbiter.model import Evidence, Gate, LeaseStatus, LeaseView, PeerView, VrrpState
from tests.unit.agentfakes import FakeLease, FakeStore, settle
from tests.unit.test_maintenance import Scripted, agent, run_async, wired
from tests.unit.test_systemd_unit import UNIT as UNIT_FILE
from tests.unit.test_systemd_unit import one, parse_unit, words

UNIT = "keepalived-arbiter.service"


# --- asking systemd -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("0::/system.slice/keepalived-arbiter.service\n", UNIT),
        ("12:cpu:/x\n1:name=systemd:/system.slice/arbiter@a.service\n", "arbiter@a.service"),
        ("0::/user.slice/user-0.slice/session-4.scope\n", None),
        ("0::/\n", None),
    ],
)
def test_the_service_is_read_from_the_cgroup(text: str, unit: str | None) -> None:
    assert service_of(text) == unit


def test_systemctl_outputs_are_parsed() -> None:
    assert parse_show("MainPID=42\nJob=7\n") == {"MainPID": "42", "Job": "7"}
    jobs = f"7 {UNIT} restart running\n8 keepalived.service start waiting\n"
    assert job_type(jobs, "7") == "restart" and job_type(jobs, "8") == "start" and job_type(jobs, "9") is None


def fake_systemctl(tmp_path: Path, *, main_pid: int, job: str, kind: str, extra: str = "") -> str:
    """A `systemctl` that answers `show` and `list-jobs` as systemd 252 does, for one unit and one job."""
    script = tmp_path / "systemctl"
    script.write_text(
        f"""#!/bin/sh
{extra}
case "$1" in
  show) printf 'MainPID=%s\\nJob=%s\\n' '{main_pid}' '{job}' ;;
  list-jobs) printf '%s %s %s running\\n' '{job}' '{UNIT}' '{kind}'; echo '99 other.service restart waiting' ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""
    )
    script.chmod(0o755)
    return str(script)


def ask(query: SystemdStopQuery) -> StopReason:
    return asyncio.run(query())


@pytest.mark.parametrize(("kind", "mode"), [("restart", StopMode.RESTART), ("try-restart", StopMode.RESTART)])
def test_a_restart_job_on_this_unit_is_a_restart(tmp_path: Path, kind: str, mode: StopMode) -> None:
    systemctl = fake_systemctl(tmp_path, main_pid=os.getpid(), job="7", kind=kind)
    reason = ask(SystemdStopQuery(UNIT, systemctl=systemctl))
    assert reason.mode is mode and "job 7" in reason.why and kind in reason.why


@pytest.mark.parametrize(
    ("main_pid", "job", "kind", "says"),
    [
        (None, "7", "stop", "is a stop"),  # systemctl stop, shutdown, isolate
        (None, "", "restart", "no job"),  # systemctl kill, kill -TERM: no job on the unit
        (None, "0", "restart", "no job"),
        (1, "7", "restart", "not keepalived-arbiter.service's main process"),  # a child, another unit's process
    ],
)
def test_anything_but_a_restart_job_of_this_process_is_a_stop(
    tmp_path: Path, main_pid: int | None, job: str, kind: str, says: str
) -> None:
    pid = os.getpid() if main_pid is None else main_pid
    systemctl = fake_systemctl(tmp_path, main_pid=pid, job=job, kind=kind)
    reason = ask(SystemdStopQuery(UNIT, systemctl=systemctl))
    assert reason.mode is StopMode.STOP and says in reason.why


def test_a_failing_systemctl_is_a_clean_stop(tmp_path: Path) -> None:
    systemctl = fake_systemctl(
        tmp_path, main_pid=os.getpid(), job="7", kind="restart", extra="echo 'Failed to connect to bus' >&2; exit 1"
    )
    reason = ask(SystemdStopQuery(UNIT, systemctl=systemctl))
    assert reason.mode is StopMode.STOP and "exited 1: Failed to connect to bus" in reason.why
    missing = ask(SystemdStopQuery(UNIT, systemctl=str(tmp_path / "no-such-systemctl")))
    assert missing.mode is StopMode.STOP and "cannot ask systemd" in missing.why


def test_a_hanging_systemctl_is_a_clean_stop_within_the_timeout(tmp_path: Path) -> None:
    systemctl = fake_systemctl(tmp_path, main_pid=os.getpid(), job="7", kind="restart", extra="exec sleep 30")
    started = time.monotonic()
    reason = ask(SystemdStopQuery(UNIT, systemctl=systemctl, timeout=0.3))
    assert reason.mode is StopMode.STOP and "did not answer within 0.3s" in reason.why
    assert time.monotonic() - started < 2.0


def test_not_started_by_systemd_is_a_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    query = SystemdStopQuery.from_env()
    assert query.unit is None and ask(query).mode is StopMode.STOP


# --- the agent's stop -----------------------------------------------------------------------------------------


class FakeQuery:
    def __init__(self, mode: StopMode | None) -> None:
        self.mode = mode  # None: the question itself fails
        self.asked = 0

    async def __call__(self) -> StopReason:
        self.asked += 1
        if self.mode is None:
            raise RuntimeError("bus gone")
        return StopReason(self.mode, f"fake: {self.mode.value}")


def master(tmp_path: Path, query: FakeQuery) -> tuple[Scripted, FakeLease, FakeStore, list[dict[str, Any]]]:
    """node-a is MASTER with its gate open and the lease (token 3), node-b an alive BACKUP: a settled cluster."""
    a, _bmc, lease, _posted = wired(tmp_path)
    store = a.rig.store
    a.stop_query = query
    lines: list[dict[str, Any]] = []
    a._out = lines.append
    backup = PeerView(name="node-b", alive=True, heard_at=a.clock(), state=VrrpState.BACKUP, priority=100)
    held = LeaseView(LeaseStatus.MINE, "node-a", 3, a.clock() + 3.0)
    lease.view = held  # what the store renews
    a.script = Evidence("VI_1", VrrpState.MASTER, True, 150, True, held, (backup,))
    a.lease_views["VI_1"] = held
    return a, lease, store, lines


async def decided(a: Scripted) -> None:
    a.write_start_gates()
    for _ in range(3):
        a.run_cycle()
        await settle(a)
    assert a.gates["VI_1"].read() is Gate.OPEN and a.last["VI_1"].gate is Gate.OPEN


def test_restart_keeps_gate_and_lease_and_the_next_agent_keeps_the_gate(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, lease, store, lines = master(tmp_path, FakeQuery(StopMode.RESTART))
        await decided(a)
        record = a.record.path
        record.unlink(missing_ok=True)  # only the stop's own write counts below
        await a.shutdown()
        assert a.gates["VI_1"].read() is Gate.OPEN  # untouched: keepalived keeps the VIP
        assert "release" not in lease.calls and store.renewed == [["VI_1"]]
        assert a.leaving is False and not [line for line in lines if line.get("event") == "leaving"]
        stop = [line for line in lines if line.get("event") == "stop"]
        assert stop and stop[-1]["mode"] == "restart" and stop[-1]["gates"] == "kept"
        written = json.loads(record.read_text())["instances"]["VI_1"]
        assert written["gate"] == "open" and written["holding"] is True and written["lease_token"] == 3
        stopping = [p for p in a.posted if p["kind"] == "agent_stopping"]
        assert stopping and stopping[0]["details"]["mode"] == "restart"
        # The next agent (same node, moments later) finds the gate open and a record that vouches for it.
        b = agent(tmp_path)
        assert b.write_start_gates(b.clocks()) == ["VI_1"]
        assert b.gates["VI_1"].read() is Gate.OPEN
        await b.alerts.close(0.1)

    run_async(scenario())


@pytest.mark.parametrize("mode", [StopMode.STOP, None])
def test_a_stop_or_an_unanswered_question_hands_over_as_before(tmp_path: Path, mode: StopMode | None) -> None:
    async def scenario() -> None:
        query = FakeQuery(mode)
        a, lease, store, lines = master(tmp_path, query)
        await decided(a)
        await a.shutdown()
        assert query.asked == 1
        assert a.gates["VI_1"].read() is Gate.CLOSED
        assert "release" in lease.calls and store.renewed == []
        assert a.leaving is True
        stop = [line for line in lines if line.get("event") == "stop"][-1]
        assert stop["mode"] == "stop" and stop["gates"] == "closed"
        if mode is None:
            assert "bus gone" in stop["why"]
        b = agent(tmp_path)
        assert b.write_start_gates(b.clocks()) == []  # nothing to resume: the gate was found closed
        await b.alerts.close(0.1)

    run_async(scenario())


def test_sigusr2_stops_for_a_restart_without_asking_systemd(tmp_path: Path) -> None:
    async def scenario() -> None:
        query = FakeQuery(StopMode.STOP)
        a, lease, _store, _lines = master(tmp_path, query)
        await decided(a)
        a.stop_for_restart()
        await a.shutdown()
        assert query.asked == 0
        assert a.gates["VI_1"].read() is Gate.OPEN and "release" not in lease.calls

    run_async(scenario())


class DroppingVips:
    """keepalived on a clean stop: the VIP goes a few polls after the gate closed, and netlink says so."""

    def __init__(self, a: Scripted) -> None:
        self.a = a
        self.polls = 0

    def present(self, name: str) -> bool:
        self.polls += 1
        if self.polls == 5:
            self.a._vip_changed(name, False, self.a.clock())
        return self.polls < 5

    def stop(self) -> None:
        pass


def test_the_vip_going_during_a_clean_stop_does_not_reopen_the_gate(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, lease, _store, lines = master(tmp_path, FakeQuery(StopMode.STOP))
        await decided(a)
        a.script = replace(a.script, state=VrrpState.BACKUP, vip_present=False)  # what the VIP's going means
        vips = DroppingVips(a)
        a.vips = vips  # type: ignore[assignment]
        decisions = len([line for line in lines if line.get("event") == "decision"])
        a.stop()
        await a.shutdown()
        assert vips.polls >= 5
        assert a.gates["VI_1"].read() is Gate.CLOSED  # no fast-path cycle after the stop closed it
        assert "release" in lease.calls
        assert len([line for line in lines if line.get("event") == "decision"]) == decisions

    run_async(scenario())


def test_the_unit_lets_the_agent_ask_systemd_on_sigterm() -> None:
    service = parse_unit(UNIT_FILE)["Service"]
    # SIGTERM is what the agent handles; mixed sends it to the agent alone, not to the systemctl it runs then.
    assert service.get("KillSignal", ["SIGTERM"]) == ["SIGTERM"] and one(service, "KillMode") == "mixed"
    assert "AF_UNIX" in words(service, "RestrictAddressFamilies")  # systemctl reaches systemd over AF_UNIX


@pytest.mark.parametrize("status", [LeaseStatus.PEER, LeaseStatus.UNKNOWN])
def test_a_backup_whose_peer_holds_the_lease_stops_cleanly_even_for_a_restart(
    tmp_path: Path, status: LeaseStatus
) -> None:
    """The holder fences a silent node that did not say "leaving" (H1) after the deadtime, shorter than a
    restart: a backup restarted with its gate kept would be fenced, so it says "leaving" instead."""

    async def scenario() -> None:
        a, _lease, store, lines = master(tmp_path, FakeQuery(StopMode.RESTART))
        theirs = LeaseView(status, "node-b" if status is LeaseStatus.PEER else None, 4, a.clock() + 3.0)
        backup = PeerView(name="node-b", alive=True, heard_at=a.clock(), state=VrrpState.MASTER, priority=100)
        a.script = Evidence("VI_1", VrrpState.BACKUP, False, 150, True, theirs, (backup,))
        a.lease_views["VI_1"] = theirs
        a.write_start_gates()
        for _ in range(3):
            a.run_cycle()
            await settle(a)
        a.gates["VI_1"].write(Gate.OPEN)  # a backup's gate (B2; with the store unknown the policy may differ)
        await a.shutdown()
        assert a.gates["VI_1"].read() is Gate.CLOSED and a.leaving is True and store.renewed == []
        stop = [line for line in lines if line.get("event") == "stop"][-1]
        assert stop["mode"] == "stop" and "would fence a silent node" in stop["why"] and "fake: restart" in stop["why"]

    run_async(scenario())
