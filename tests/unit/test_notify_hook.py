"""The notify hook, run as keepalived runs it: a real process talking to a real Unix stream socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hooks import notify

REPO = Path(__file__).resolve().parents[2]
HANG_GUARD = 5  # seconds; only there so a broken hook fails the test instead of hanging it


class Agent:
    """A minimal agent: accepts connections, reads each request to EOF, then answers `reply` (or, with several
    replies, one per connection in turn)."""

    def __init__(self, path: Path, reply: bytes = b"OK\n", *more: bytes) -> None:
        self.path = path
        self.replies = [reply, *more]
        self.received: list[bytes] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._serve_one, daemon=True)
        self.thread.start()

    def _serve_one(self) -> None:
        for reply in self.replies:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(HANG_GUARD)
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                self.received.append(data)
                conn.sendall(reply)

    def wait(self) -> list[bytes]:
        self.thread.join(HANG_GUARD)
        assert not self.thread.is_alive(), "the hook never finished its request"
        return self.received

    def close(self) -> None:
        self.listener.close()


def run_hook(
    *args: str, socket_path: Path | str, module: str = "hooks.notify", timeout: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KEEPALIVED_ARBITER_SOCKET=str(socket_path))
    env.pop("KEEPALIVED_ARBITER_NOTIFY_TIMEOUT", None)
    if timeout is not None:
        env["KEEPALIVED_ARBITER_NOTIFY_TIMEOUT"] = timeout
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )


def unstamped(received: list[bytes], before: float) -> list[bytes]:
    """The lines without the hook's `at=` word, checked: keepalived spawned the hook after `before` (less the
    10 ms tick the kernel rounds the process start time down to), and not after now."""
    lines = []
    for data in received:
        line, _, stamp = data.rstrip(b"\n").rpartition(b" at=")
        assert before - 0.011 <= float(stamp) <= time.monotonic(), data
        lines.append(line + b"\n")
    return lines


def assert_nothing_connected(listener: socket.socket) -> None:
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.accept()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("INSTANCE", "VI_1", "MASTER", "150"), b"NOTIFY INSTANCE VI_1 MASTER 150\n"),
        (("INSTANCE", "VI_1", "BACKUP", "0"), b"NOTIFY INSTANCE VI_1 BACKUP 0\n"),
        (("INSTANCE", "web.v4-1", "FAULT", "255"), b"NOTIFY INSTANCE web.v4-1 FAULT 255\n"),
        (("INSTANCE", "VI_1", "STOP", "100"), b"NOTIFY INSTANCE VI_1 STOP 100\n"),
        (("INSTANCE", "VI_1", "DELETED", "100"), b"NOTIFY INSTANCE VI_1 DELETED 100\n"),
        (("GROUP", "G1", "MASTER"), b"NOTIFY GROUP G1 MASTER\n"),
        (("GROUP", "G1", "BACKUP", "0"), b"NOTIFY GROUP G1 BACKUP 0\n"),
        (("INSTANCE", "VI_1", "MASTER", "007"), b"NOTIFY INSTANCE VI_1 MASTER 7\n"),
        (("INSTANCE", "vip-ü", "MASTER", "1"), "NOTIFY INSTANCE vip-ü MASTER 1\n".encode()),
    ],
)
def test_delivers_the_exact_line(sock_dir: Path, args: tuple[str, ...], line: bytes) -> None:
    agent = Agent(sock_dir / "agent.sock")
    try:
        before = time.monotonic()
        result = run_hook(*args, socket_path=agent.path)
        assert unstamped(agent.wait(), before) == [line]
    finally:
        agent.close()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_python_dash_m_hooks_runs_the_notify_hook(sock_dir: Path) -> None:
    agent = Agent(sock_dir / "agent.sock")
    try:
        before = time.monotonic()
        result = run_hook("INSTANCE", "VI_1", "MASTER", "150", socket_path=agent.path, module="hooks")
        assert unstamped(agent.wait(), before) == [b"NOTIFY INSTANCE VI_1 MASTER 150\n"]
    finally:
        agent.close()
    assert result.returncode == 0, result.stderr


def test_an_err_reply_is_reported_and_still_exits_0(sock_dir: Path) -> None:
    agent = Agent(sock_dir / "agent.sock", reply=b"ERR unknown instance VI_9\n")
    try:
        result = run_hook("INSTANCE", "VI_9", "MASTER", "150", socket_path=agent.path)
        agent.wait()
    finally:
        agent.close()
    assert result.returncode == 0
    assert "ERR unknown instance VI_9" in result.stderr


def test_an_agent_older_than_the_spawn_time_gets_the_line_again_without_it(sock_dir: Path) -> None:
    # What an agent from before `at=` answers a line with one word more than it knows.
    old = b"ERR expected TYPE NAME STATE [PRIORITY], got 5 fields\n"
    agent = Agent(sock_dir / "agent.sock", old, b"OK\n")
    try:
        before = time.monotonic()
        result = run_hook("INSTANCE", "VI_1", "FAULT", "100", socket_path=agent.path)
        first, second = agent.wait()
    finally:
        agent.close()
    assert unstamped([first], before) == [second] == [b"NOTIFY INSTANCE VI_1 FAULT 100\n"]
    assert result.returncode == 0 and result.stderr == ""


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((), "arguments"),
        (("INSTANCE", "VI_1"), "arguments"),
        (("INSTANCE", "VI_1", "MASTER", "150", "extra"), "arguments"),
        (("INSTANCES", "VI_1", "MASTER", "150"), "TYPE"),
        (("instance", "VI_1", "MASTER", "150"), "TYPE"),
        (("INSTANCE", "VI_1", "MASTR", "150"), "STATE"),
        (("INSTANCE", "VI_1", "master", "150"), "STATE"),
        (("INSTANCE", "VI_1", "MASTER", "high"), "PRIORITY"),
        (("INSTANCE", "VI_1", "MASTER", "256"), "PRIORITY"),
        (("INSTANCE", "VI_1", "MASTER", "-1"), "PRIORITY"),
        (("INSTANCE", "VI_1", "MASTER", "1.5"), "PRIORITY"),
        (("INSTANCE", "VI_1", "MASTER", ""), "PRIORITY"),
        (("INSTANCE", "VI_1", "MASTER", "١٥٠"), "PRIORITY"),  # Arabic-Indic digits: int() would accept them
        (("INSTANCE", "", "MASTER", "150"), "NAME"),
        (("INSTANCE", "VI 1", "MASTER", "150"), "NAME"),
        (("INSTANCE", "VI_1\nNOTIFY INSTANCE VI_2 MASTER 150", "MASTER", "150"), "NAME"),
        (("INSTANCE", "VI\t1", "MASTER", "150"), "NAME"),
        (("INSTANCE", "VI\x1b1", "MASTER", "150"), "NAME"),
        (("INSTANCE", "V" * 65, "MASTER", "150"), "NAME"),
    ],
)
def test_bad_arguments_exit_2_name_the_field_and_send_nothing(
    sock_dir: Path, args: tuple[str, ...], field: str
) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_dir / "agent.sock"))
    listener.listen(8)
    try:
        result = run_hook(*args, socket_path=sock_dir / "agent.sock")
        assert_nothing_connected(listener)
    finally:
        listener.close()
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"keepalived-arbiter-notify: {field}: ")
    assert result.stdout == ""


def test_state_error_lists_the_choices(sock_dir: Path) -> None:
    result = run_hook("INSTANCE", "VI_1", "MASTR", "150", socket_path=sock_dir / "agent.sock")
    assert result.stderr == (
        "keepalived-arbiter-notify: STATE: expected one of MASTER, BACKUP, FAULT, STOP, DELETED (got 'MASTR')\n"
    )


def test_a_64_character_name_is_accepted(sock_dir: Path) -> None:
    agent = Agent(sock_dir / "agent.sock")
    try:
        before = time.monotonic()
        result = run_hook("INSTANCE", "V" * 64, "MASTER", "150", socket_path=agent.path)
        assert unstamped(agent.wait(), before) == [f"NOTIFY INSTANCE {'V' * 64} MASTER 150\n".encode()]
    finally:
        agent.close()
    assert result.returncode == 0


def test_agent_absent_exits_0_and_says_why(sock_dir: Path) -> None:
    result = run_hook("INSTANCE", "VI_1", "MASTER", "150", socket_path=sock_dir / "no-such.sock")
    assert result.returncode == 0
    assert "no-such.sock" in result.stderr
    assert "No such file or directory" in result.stderr


def test_agent_not_listening_exits_0(sock_dir: Path) -> None:
    # A socket file left behind by a dead agent: connect() is refused.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_dir / "agent.sock"))
    stale.close()
    result = run_hook("INSTANCE", "VI_1", "MASTER", "150", socket_path=sock_dir / "agent.sock")
    assert result.returncode == 0
    assert "Connection refused" in result.stderr


def test_agent_that_accepts_but_never_answers_does_not_block(sock_dir: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_dir / "agent.sock"))
    listener.listen(8)
    held: list[socket.socket] = []
    accepted = threading.Event()

    def accept_and_hold() -> None:
        conn, _ = listener.accept()
        held.append(conn)  # neither read nor answered nor closed while the hook runs
        accepted.set()

    thread = threading.Thread(target=accept_and_hold, daemon=True)
    thread.start()
    try:
        result = run_hook("INSTANCE", "VI_1", "MASTER", "150", socket_path=sock_dir / "agent.sock")
        assert accepted.wait(HANG_GUARD)
    finally:
        for conn in held:
            conn.close()
        listener.close()
    assert result.returncode == 0
    assert "no answer within 0.2 s" in result.stderr


def test_agent_that_never_accepts_does_not_block(sock_dir: Path) -> None:
    # Listening with a backlog but never accepting: connect() succeeds, the reply never comes.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_dir / "agent.sock"))
    listener.listen(1)
    try:
        result = run_hook("INSTANCE", "VI_1", "MASTER", "150", socket_path=sock_dir / "agent.sock", timeout="0.05")
    finally:
        listener.close()
    assert result.returncode == 0
    assert "no answer within 0.05 s" in result.stderr


def test_main_in_process_returns_codes(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPALIVED_ARBITER_SOCKET", str(sock_dir / "absent.sock"))
    assert notify.main(["INSTANCE", "VI_1", "MASTER", "150"]) == 0
    assert notify.main(["INSTANCE", "VI_1", "MASTR", "150"]) == 2
    assert notify.parse_args(["GROUP", "G1", "FAULT"]) == "NOTIFY GROUP G1 FAULT"


def test_importing_the_hook_pulls_in_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import hooks.notify\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(' '.join(sorted(new)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD, check=True
    )
    new = set(result.stdout.split())
    assert "hooks" in new
    assert not new & {"arbiter", "pydantic", "redis", "paramiko", "pyghmi", "argparse", "json"}, new
