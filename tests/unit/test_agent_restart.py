"""Issue 12 item 6, an agent restart on the master: the persisted decision record (arbiter.agent.record), the
start-up gate handling built on it (arbiter.agent.daemon.resume_gates), and rule S0 keeping a gate found open."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from arbiter.agent.daemon import resume_gates
from arbiter.agent.gate import GateFile
from arbiter.agent.record import Clocks, DecisionFile, DecisionFileError, Entry
from arbiter.model import Evidence, Gate, LeaseStatus, LeaseView, PeerView, Resumed, VrrpState
from arbiter.policy import decide, initial_state
from tests.unit.test_policy_rules import CFG, NOW, mine, peer, theirs

M, B = VrrpState.MASTER, VrrpState.BACKUP
# Boot time 5000 s ↔ monotonic 4000 s in the process reading the record (one boot, two processes).
CLOCKS = Clocks(boot_id="boot-1", boottime=5000.0, monotonic=4000.0, wall=1.8e9)
HELD = Entry(Gate.OPEN, "H1", True, 41, 4002.5)


# --- the record on disk -----------------------------------------------------------------------------------


def test_record_round_trip_converts_times_through_boottime(tmp_path: Path) -> None:
    record = DecisionFile(tmp_path / "state" / "decisions.json")
    record.write({"VI_1": HELD, "VI_2": Entry(Gate.CLOSED, "V1", False, None, None)}, CLOCKS)
    # A restarted agent: its own monotonic clock (same boot) reads 4001 when boot time reads 5001.
    later = Clocks("boot-1", 5001.0, 4001.0, 1.8e9 + 1)
    resumed = record.load(later)
    assert resumed == {
        "VI_1": Resumed(Gate.OPEN, "H1", True, 41, 4002.5, 4000.0),
        "VI_2": Resumed(Gate.CLOSED, "V1", False, None, None, 4000.0),
    }
    # Written on another clock base (another process), the same instants come out in this one's clock.
    other = Clocks("boot-1", 5001.0, 9001.0, 1.8e9 + 1)
    assert record.load(other)["VI_1"].written_at == pytest.approx(9000.0)
    assert record.load(other)["VI_1"].lease_until == pytest.approx(9002.5)


def test_record_written_before_the_last_reboot_is_not_resumed(tmp_path: Path) -> None:
    record = DecisionFile(tmp_path / "decisions.json")
    record.write({"VI_1": HELD}, CLOCKS)
    assert record.load(Clocks("boot-2", 30.0, 29.0, 1.8e9 + 60)) == {}
    assert record.load(Clocks("", 5001.0, 4001.0, 1.8e9)) == {}  # no boot id known: nothing to compare


def test_missing_record_is_a_first_start(tmp_path: Path) -> None:
    assert DecisionFile(tmp_path / "decisions.json").load(CLOCKS) == {}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("{not json", "not valid JSON"),
        ('{"version": 7}', '"version": 1'),
        ('{"version": 1, "boot_id": "boot-1", "boottime": "soon", "instances": {}}', "boottime: not a number"),
        (
            '{"version": 1, "boot_id": "boot-1", "boottime": 1, "instances": {"VI_1": {"gate": "ajar"}}}',
            "instances.VI_1.gate: expected 'open' or 'closed'",
        ),
        (
            '{"version": 1, "boot_id": "boot-1", "boottime": 1, "instances": {"VI_1": '
            '{"gate": "open", "rule": "H1", "holding": true, "lease_token": -3, "lease_until": null}}}',
            "instances.VI_1.lease_token: not a token",
        ),
    ],
)
def test_corrupt_record_is_refused_naming_the_file_and_the_fault(tmp_path: Path, text: str, names: str) -> None:
    path = tmp_path / "decisions.json"
    path.write_text(text)
    with pytest.raises(DecisionFileError, match=names) as err:
        DecisionFile(path).load(CLOCKS)
    assert str(path) in str(err.value)


def test_record_write_is_atomic_and_names_the_path_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "decisions.json"
    DecisionFile(path).write({"VI_1": HELD}, CLOCKS)
    assert json.loads(path.read_text())["instances"]["VI_1"]["lease_until"] == 5002.5
    assert [p.name for p in tmp_path.iterdir()] == ["decisions.json"]  # no temporary file left behind
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(OSError, match="decision record not written") as err:
        DecisionFile(blocked / "decisions.json").write({"VI_1": HELD}, CLOCKS)
    assert str(blocked / "decisions.json") in str(err.value)


# --- start-up: which gates stay as found -----------------------------------------------------------------


def gate_file(tmp_path: Path, name: str, content: bytes | None) -> GateFile:
    path = tmp_path / f"{name}.gate"
    if content is not None:
        path.write_bytes(content)
    return GateFile(path)


def test_start_keeps_only_an_open_gate_a_fresh_open_record_vouches_for(tmp_path: Path) -> None:
    now = 4001.0
    fresh = Resumed(Gate.OPEN, "H1", True, 41, now + 2.0, now - 1.0)
    gates = {
        "fresh": gate_file(tmp_path, "fresh", b"0\n"),
        "stale": gate_file(tmp_path, "stale", b"0\n"),  # its agent died long ago
        "lease-gone": gate_file(tmp_path, "lease-gone", b"0\n"),  # its lease ran out during the restart
        "found-closed": gate_file(tmp_path, "found-closed", b"1\n"),  # keepalived restarted since
        "recorded-closed": gate_file(tmp_path, "recorded-closed", b"0\n"),
        "no-record": gate_file(tmp_path, "no-record", b"0\n"),
        "no-file": gate_file(tmp_path, "no-file", None),
    }
    resumed = {
        "fresh": fresh,
        "stale": replace(fresh, written_at=now - 3600),
        "lease-gone": replace(fresh, lease_until=now + 0.2),
        "found-closed": fresh,
        "recorded-closed": replace(fresh, gate=Gate.CLOSED, rule="L1"),
        "no-file": fresh,
    }
    kept = resume_gates(gates, resumed, dict.fromkeys(gates, CFG), now)
    assert kept == ["fresh"]
    assert {name: g.read() for name, g in gates.items()} == {
        "fresh": Gate.OPEN,
        **{name: Gate.CLOSED for name in gates if name != "fresh"},
    }


def test_start_with_a_corrupt_record_closes_every_gate(tmp_path: Path) -> None:
    """The daemon turns an unreadable record into no record (Agent.resume): every gate closed, as today."""
    path = tmp_path / "decisions.json"
    path.write_text('{"version": 1, "boot_id": "boot-1"')
    with pytest.raises(DecisionFileError):
        DecisionFile(path).load(CLOCKS)
    gates = {"VI_1": gate_file(tmp_path, "VI_1", b"0\n")}
    assert resume_gates(gates, {}, {"VI_1": CFG}, 4001.0) == []
    assert gates["VI_1"].read() is Gate.CLOSED


# --- rule S0 after a restart -----------------------------------------------------------------------------

PENDING = LeaseView(LeaseStatus.PENDING)
NOT_YET = PeerView("b", alive=None)  # heartbeat deadtime since start not over yet
HELD_RECORD = Resumed(Gate.OPEN, "H1", True, 41, NOW + 2.0, NOW - 0.5)


def restarted(
    state: VrrpState = M,
    lease: LeaseView = PENDING,
    found: Gate | None = Gate.OPEN,
    peers: tuple[PeerView, ...] = (NOT_YET,),
    quorate: bool | None = None,
) -> Evidence:
    return Evidence("VI_1", state, state is M, 150, quorate, lease, peers, gate_found=found)


def s0(e: Evidence, record: Resumed | None = HELD_RECORD, now: float = NOW) -> tuple[Gate, str]:
    d = decide(initial_state(41, record), e, CFG, now)
    return d.gate, d.rule


def test_s0_keeps_the_masters_gate_found_open_with_a_fresh_record() -> None:
    assert s0(restarted()) == (Gate.OPEN, "S0")
    # Lease answered (its own) but heartbeats not yet: still kept, not opened or closed early.
    assert s0(restarted(lease=mine(41), quorate=True)) == (Gate.OPEN, "S0")
    # Heartbeats in, lease not yet answered: kept as well.
    assert s0(restarted(peers=(peer(),), quorate=True)) == (Gate.OPEN, "S0")
    # Redis unreachable and no peer heard: kept while the lease it renewed last is valid (as H4 would).
    assert s0(restarted(lease=LeaseView(LeaseStatus.UNKNOWN), peers=(peer(alive=False),), quorate=True)) == (
        Gate.OPEN,
        "S0",
    )


def test_s0_keeps_a_backups_gate_found_open_with_a_fresh_record() -> None:
    backup = Resumed(Gate.OPEN, "B2", False, None, None, NOW - 0.5)
    assert s0(restarted(state=B), record=backup) == (Gate.OPEN, "S0")


@pytest.mark.parametrize(
    ("evidence", "record", "now"),
    [
        (restarted(), replace(HELD_RECORD, written_at=NOW - 3600), NOW),  # the previous agent died long ago
        (restarted(), HELD_RECORD, NOW + 1.6),  # its lease is within the safety margin of expiry
        (restarted(found=Gate.CLOSED), HELD_RECORD, NOW),  # keepalived restarted since (init_file 1 overwrite)
        (restarted(found=None), HELD_RECORD, NOW),  # no gate file
        (restarted(), replace(HELD_RECORD, gate=Gate.CLOSED, rule="L1"), NOW),  # it had closed it
        (restarted(), replace(HELD_RECORD, holding=False, lease_token=None, lease_until=None), NOW),  # VIP new
        (restarted(lease=theirs()), HELD_RECORD, NOW),  # a peer holds the lease now
        (restarted(), None, NOW),  # a first start
    ],
)
def test_s0_closes_a_gate_the_record_does_not_vouch_for(evidence: Evidence, record: Resumed | None, now: float) -> None:
    assert s0(evidence, record, now) == (Gate.CLOSED, "S0")


def test_s0_once_closed_is_not_reopened_before_the_first_full_round() -> None:
    closed = decide(initial_state(41, HELD_RECORD), restarted(found=Gate.CLOSED), CFG, NOW)
    assert closed.gate is Gate.CLOSED
    # keepalived's file reads open again (an init_file 0 keepalived, or a hand edit): S0 does not trust it.
    again = decide(closed.state, restarted(), CFG, NOW + 0.1)
    assert (again.gate, again.rule) == (Gate.CLOSED, "S0")


def test_first_full_round_after_a_restart_decides_as_usual() -> None:
    kept = decide(initial_state(41, HELD_RECORD), restarted(), CFG, NOW)
    d = decide(kept.state, restarted(lease=mine(41), peers=(peer(),), quorate=True), CFG, NOW + 0.2)
    assert (d.gate, d.rule) == (Gate.OPEN, "H1")
    assert d.state.started
    # The lease the previous agent held counts as valid until its known expiry when the store is unreachable
    # (H4, as the previous agent would have decided; without it: H6, closed, a peer's word being too old).
    unreachable = restarted(lease=LeaseView(LeaseStatus.UNKNOWN), peers=(peer(heard_at=NOW - 0.5),), quorate=True)
    d = decide(kept.state, unreachable, CFG, NOW)
    assert (d.gate, d.rule) == (Gate.OPEN, "H4")


def test_a_resumed_hold_keeps_its_start_so_h3_does_not_start_over() -> None:
    """H3 keeps a VIP with a free lease for TTL − safety of the hold; after a restart that hold began before it."""
    held = replace(HELD_RECORD, holding_since=NOW - 2.8, lease_until=NOW - 1.0)
    state = decide(initial_state(41, held), restarted(found=Gate.CLOSED), CFG, NOW).state  # S0, closed
    d = decide(
        state, restarted(lease=LeaseView(LeaseStatus.FREE), peers=(peer(heard_at=NOW - 5),), quorate=True), CFG, NOW
    )
    assert d.state.holding_since == NOW - 2.8
    assert (d.gate, d.rule) == (Gate.CLOSED, "H6")
