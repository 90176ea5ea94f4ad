"""The gate file: content keepalived reads, atomic replacement, the write cache, errors naming the path."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from arbiter.agent.gate import GateFile, GateWatch, GateWrite
from arbiter.model import Gate


def test_open_writes_0_and_closed_writes_1(tmp_path: Path) -> None:
    gate = GateFile(tmp_path / "gate")
    assert gate.write(Gate.OPEN)
    assert (tmp_path / "gate").read_bytes() == b"0\n"
    assert gate.write(Gate.CLOSED)
    assert (tmp_path / "gate").read_bytes() == b"1\n"
    assert gate.read() is Gate.CLOSED


def test_unchanged_value_is_not_rewritten(tmp_path: Path) -> None:
    gate = GateFile(tmp_path / "gate")
    assert gate.write(Gate.CLOSED)
    inode = (tmp_path / "gate").stat().st_ino
    assert not gate.write(Gate.CLOSED)
    # Not replaced: keepalived's inotify sees no event for a decision that did not change.
    assert (tmp_path / "gate").stat().st_ino == inode


def test_first_write_happens_even_when_the_file_already_says_so(tmp_path: Path) -> None:
    (tmp_path / "gate").write_text("1\n")
    inode = (tmp_path / "gate").stat().st_ino
    gate = GateFile(tmp_path / "gate")
    assert gate.cached is None
    assert gate.write(Gate.CLOSED)
    assert (tmp_path / "gate").stat().st_ino != inode
    assert gate.cached is Gate.CLOSED


def test_replacement_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    gate = GateFile(tmp_path / "gate")
    gate.write(Gate.OPEN)
    gate.write(Gate.CLOSED)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate"]


def test_read_as_keepalived_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "gate"
    gate = GateFile(path)
    assert gate.read() is None
    for text, expected in [
        ("0\n", Gate.OPEN),
        ("", Gate.OPEN),
        ("1", Gate.CLOSED),
        ("  42 \n", Gate.CLOSED),
        ("-1\n", Gate.CLOSED),
        ("junk\n", Gate.OPEN),
    ]:
        path.write_text(text)
        assert gate.read() is expected, text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_unwritable_directory_raises_oserror_naming_the_path(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OSError, match=str(tmp_path / "gate")):
            GateFile(tmp_path / "gate").write(Gate.CLOSED)
    finally:
        tmp_path.chmod(0o700)


def test_missing_directory_raises_oserror_naming_the_path_and_retries(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "gate"
    gate = GateFile(path)
    with pytest.raises(OSError, match=str(path)) as caught:
        gate.write(Gate.CLOSED)
    assert caught.value.filename == str(path)
    assert gate.cached is None
    path.parent.mkdir()
    assert gate.write(Gate.CLOSED)
    assert path.read_bytes() == b"1\n"


def test_target_that_is_a_directory_raises_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "gate").mkdir()
    with pytest.raises(OSError, match="gate"):
        GateFile(tmp_path / "gate").write(Gate.OPEN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate"]


def test_a_gate_overwritten_behind_the_agent_is_restored(tmp_path: Path) -> None:
    """keepalived's `init_file 0 overwrite` reopens a gate the agent closed each time keepalived starts: the next
    write of the same decision must put it back, and say that it did."""
    path = tmp_path / "gate"
    gate = GateFile(path)
    assert gate.write(Gate.CLOSED) is GateWrite.CHANGED
    path.write_text("0\n")  # keepalived starting: open + truncate + write, the agent's cache unchanged
    assert gate.write(Gate.CLOSED) is GateWrite.RESTORED
    assert path.read_bytes() == b"1\n"
    assert gate.restored == 1
    assert gate.write(Gate.CLOSED) is GateWrite.UNCHANGED
    path.unlink()  # a missing file reads as open to keepalived
    assert gate.write(Gate.CLOSED) is GateWrite.RESTORED
    assert path.read_bytes() == b"1\n"
    assert not GateWrite.UNCHANGED and GateWrite.CHANGED and GateWrite.RESTORED


def test_the_watch_reports_a_foreign_write_and_not_the_agents_own(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        seen: list[str] = []
        changed = asyncio.Event()

        def on_change(name: str) -> None:
            seen.append(name)
            changed.set()

        gates = {"VI_1": GateFile(tmp_path / "VI_1.gate"), "VI_2": GateFile(tmp_path / "VI_2.gate")}
        for gate in gates.values():
            gate.write(Gate.CLOSED)
        watch = GateWatch(gates, on_change)
        watch.start()
        try:
            await asyncio.sleep(0.05)  # the watch is in place
            gates["VI_2"].write(Gate.OPEN)  # the agent's own decision: not news
            (tmp_path / "unrelated").write_text("0\n")
            await asyncio.sleep(0.05)
            assert seen == []
            (tmp_path / "VI_1.gate").write_text("0\n")  # keepalived restarting with init_file 0 overwrite
            await asyncio.wait_for(changed.wait(), 5)
        finally:
            watch.stop()
        return seen

    assert asyncio.run(scenario())[:1] == ["VI_1"]
