"""sd_notify over a real AF_UNIX datagram socket standing in for systemd's, and the watchdog gate."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbiter.agent.sdnotify import SystemdNotifier, WatchdogGate, keep_watchdog


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket like the one systemd passes as $NOTIFY_SOCKET, and that value."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_status_watchdog_stopping_reach_the_socket(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("2 gates closed, gathering evidence")
    assert fields(sock) == {"READY": "1", "STATUS": "2 gates closed, gathering evidence"}
    assert notifier.status("VI_1 open")
    assert fields(sock) == {"STATUS": "VI_1 open"}
    assert notifier.watchdog()
    assert fields(sock) == {"WATCHDOG": "1"}
    assert notifier.stopping()
    assert fields(sock) == {"STOPPING": "1"}
    notifier.close()


def test_reloading_carries_the_monotonic_clock(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    got = fields(sock)
    assert got["RELOADING"] == "1"
    assert before <= int(got["MONOTONIC_USEC"]) <= after


def test_a_newline_in_a_value_cannot_inject_a_field(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    SystemdNotifier.from_env({"NOTIFY_SOCKET": path}).status("line one\nREADY=1")
    assert fields(sock) == {"STATUS": "line one READY=1"}


def test_abstract_namespace_address() -> None:
    name = f"keepalived-arbiter-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.enabled
        assert notifier.ready("up")
        assert fields(sock) == {"READY": "1", "STATUS": "up"}


def test_disabled_without_notify_socket() -> None:
    for env in ({}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "10000000"}):
        notifier = SystemdNotifier.from_env(env)
        assert not notifier.enabled
        assert notifier.watchdog_interval is None
        assert not notifier.ready("x")
        assert not notifier.watchdog()


def test_unsupported_address_disables(caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert "unsupported address" in caplog.text


def test_watchdog_interval_is_half_of_watchdog_usec(tmp_path: Path) -> None:
    sock = str(tmp_path / "n.sock")
    own = str(os.getpid())
    assert SystemdNotifier.from_env({"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "10000000"}).watchdog_interval == 5.0
    env = {"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": own}
    assert SystemdNotifier.from_env(env).watchdog_interval == 5.0
    assert SystemdNotifier.from_env({"NOTIFY_SOCKET": sock}).watchdog_interval is None
    for bad in ("0", "-5", "ten"):
        assert SystemdNotifier.from_env({"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": bad}).watchdog_interval is None


def test_watchdog_meant_for_another_pid_is_not_ours(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}
    assert os.getpid() != 1
    assert SystemdNotifier.from_env(env).watchdog_interval is None


def test_vanished_socket_never_raises(
    systemd_socket: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    sock, path = systemd_socket
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.watchdog()
    sock.close()
    os.unlink(path)
    assert not notifier.watchdog()
    assert not notifier.ready("still here")
    assert not notifier.stopping()
    # Logged once as a warning, not on every ping.
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    notifier.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_gate_follows_the_last_beat() -> None:
    clock = FakeClock()
    gate = WatchdogGate(max_age=5.0, clock=clock)
    assert gate.healthy()  # counts from construction: the first cycle has max_age to happen
    clock.now = 105.0
    assert gate.healthy()
    clock.now = 105.1
    assert not gate.healthy()  # never beat: a loop stuck before its first cycle
    gate.beat()
    assert gate.healthy()
    assert gate.healthy(now=110.1)
    assert not gate.healthy(now=110.2)
    assert gate.age(now=108.1) == pytest.approx(3.0)


def test_watchdog_gate_refuses_a_non_positive_age() -> None:
    with pytest.raises(ValueError, match="max_age"):
        WatchdogGate(max_age=0)


def test_keep_watchdog_pings_only_while_the_loop_beats(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    sock.setblocking(False)
    clock = FakeClock()
    gate = WatchdogGate(max_age=1.0, clock=clock)
    notifier = SystemdNotifier(path, watchdog_interval=0.01)

    async def scenario() -> tuple[int, int]:
        task = asyncio.create_task(keep_watchdog(notifier, gate))
        await asyncio.sleep(0.1)
        healthy = drain(sock)
        clock.now += 2.0  # the decision loop stops beating
        await asyncio.sleep(0.05)  # one ping may already be on its way
        drain(sock)
        await asyncio.sleep(0.1)
        stuck = drain(sock)
        task.cancel()
        return healthy, stuck

    healthy, stuck = asyncio.run(scenario())
    assert healthy >= 2
    assert stuck == 0


def test_keep_watchdog_returns_without_a_watchdog() -> None:
    notifier = SystemdNotifier.from_env({})
    asyncio.run(asyncio.wait_for(keep_watchdog(notifier, WatchdogGate(1.0)), timeout=1.0))


def drain(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            assert sock.recv(4096) == b"WATCHDOG=1"
        except BlockingIOError:
            return count
        count += 1
