"""When a peer's BMC is read (arbiter.agent.bmcreads): at once and repeatedly for a silent peer until a fresh
OFF proves it dead, then rarely; and every BMC now and then, so that read never starts with a login."""

from __future__ import annotations

from arbiter.agent.bmcreads import ReadSchedule, reads_due
from arbiter.model import Power

SCHEDULE = ReadSchedule(silence=0.04, fresh=1.0, keep_warm=20.0)
PEERS = ["node-a"]


def due(now: float, heard: float | None, reading: tuple[Power, float] | None, started: float | None) -> bool:
    readings = {} if reading is None else {"node-a": reading}
    starts = {} if started is None else {"node-a": started}
    return reads_due(now, PEERS, {"node-a": heard}, readings, starts, SCHEDULE) == ["node-a"]


def test_a_peer_heard_recently_is_not_read_until_its_bmc_has_been_idle_for_keep_warm() -> None:
    assert not due(100.0, heard=99.99, reading=(Power.ON, 90.0), started=89.99)
    assert due(110.0, heard=109.99, reading=(Power.ON, 90.0), started=89.99)  # 20 s since the last read


def test_a_never_read_bmc_is_read_at_once() -> None:
    assert due(5.0, heard=4.99, reading=None, started=None)


def test_a_failing_bmc_is_not_asked_again_every_cycle() -> None:
    # The read started at 95 never came back with a reading: no new one before keep_warm.
    assert not due(100.0, heard=99.99, reading=None, started=95.0)


def test_a_silent_peer_is_read_until_an_off_newer_than_its_heartbeat() -> None:
    heard = 100.0
    assert due(100.05, heard, reading=(Power.ON, 90.0), started=90.0)  # silent for 50 ms
    assert due(100.10, heard, reading=(Power.ON, 100.08), started=100.06)  # still ON: read again
    assert due(100.10, heard, reading=(Power.OFF, 99.9), started=99.89)  # OFF from before its last heartbeat


def test_a_fresh_off_is_not_re_read_until_half_its_validity_is_gone() -> None:
    heard, off_at = 100.0, 100.12
    assert not due(100.13, heard, reading=(Power.OFF, off_at), started=100.11)
    assert not due(100.60, heard, reading=(Power.OFF, off_at), started=100.11)
    assert due(100.62, heard, reading=(Power.OFF, off_at), started=100.11)  # 0.5 s old: keep it fresh


def test_a_peer_never_heard_since_start_is_no_suspect() -> None:
    assert not due(100.0, heard=None, reading=(Power.ON, 99.0), started=98.9)


def test_peers_come_back_in_their_order() -> None:
    peers = ["node-c", "node-a", "node-b"]
    heard = {"node-a": 99.99, "node-b": 99.0, "node-c": 99.0}
    readings = {p: (Power.ON, 99.5) for p in peers}
    started = {p: 99.4 for p in peers}
    assert reads_due(100.0, peers, heard, readings, started, SCHEDULE) == ["node-c", "node-b"]
