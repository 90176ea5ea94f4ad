"""The gate file: content keepalived reads, atomic replacement, the write cache, errors naming the path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from arbiter.agent.gate import GateFile
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
