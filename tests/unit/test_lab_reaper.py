"""lab.Reaper: the lab waits for the daemons it started once something else (a power-off) kills them, and for
nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbiter.lab.lab import Reaper


def _exists(pid: int) -> bool:
    """Whether the kernel still has the process, a zombie included."""
    return Path(f"/proc/{pid}").exists()


def _wait(predicate: object, timeout: float = 3.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper(interval=0.02)
    r.start()
    yield r
    r.stop(timeout=1)


def _sleeper() -> int:
    # The Popen object is dropped, as topology.start_* drop theirs: only the PID is left to wait for.
    return subprocess.Popen(["sleep", "60"]).pid


def test_a_killed_daemon_is_reaped_not_left_a_zombie(reaper: Reaper) -> None:
    pid = _sleeper()
    reaper.add(pid)
    os.kill(pid, signal.SIGKILL)  # as the chassis script of a power-off does, from another process
    assert _wait(lambda: not _exists(pid)), f"PID {pid} left behind: {Path(f'/proc/{pid}/stat').read_text()}"
    assert reaper.pending() == set()


def test_a_running_daemon_stays_pending(reaper: Reaper) -> None:
    pid = _sleeper()
    reaper.add(pid)
    try:
        time.sleep(0.1)
        assert reaper.pending() == {pid}
        assert _exists(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert _wait(lambda: not _exists(pid))


def test_children_it_was_not_given_keep_their_exit_status(reaper: Reaper) -> None:
    """A command a `subprocess.run` waits for must keep its status: the reaper waits for its own PIDs only."""
    other = subprocess.Popen(["sh", "-c", "exit 3"])
    mine = _sleeper()
    reaper.add(mine)
    os.kill(mine, signal.SIGKILL)
    assert _wait(lambda: not _exists(mine))
    assert other.wait(5) == 3


def test_a_pid_that_is_not_a_child_is_dropped() -> None:
    r = Reaper()
    r.add(os.getppid(), None)
    assert r.reap() == []
    assert r.pending() == set()


def test_stop_waits_for_what_the_teardown_killed() -> None:
    r = Reaper(interval=60)  # the thread never gets a turn: stop() alone must reap
    r.start()
    pid = _sleeper()
    r.add(pid)
    os.kill(pid, signal.SIGKILL)
    r.stop(timeout=3)
    assert not _exists(pid)
