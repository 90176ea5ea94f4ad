"""The agent's end of keepalived's notifications: the real hook against NotifyServer, bad requests, the
socket file's lifecycle and permissions, and vrrp_notify_fifo lines."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from arbiter.agent import notify
from arbiter.agent.notify import NotifyFifo, NotifyServer
from arbiter.model import VrrpState

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / ".venv" / "bin" / "keepalived-arbiter-notify"
Event = tuple[str, str, VrrpState, int | None, float]


async def hook(path: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "KEEPALIVED_ARBITER_SOCKET": str(path), "KEEPALIVED_ARBITER_NOTIFY_TIMEOUT": "3"}
    proc = await asyncio.create_subprocess_exec(
        str(HOOK), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    return proc.returncode or 0, err.decode()


async def request(path: Path, data: bytes, half_close: bool = True) -> str:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    if half_close:
        writer.write_eof()
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return reply.decode()


def test_the_real_hook_delivers_events(sock_dir: Path) -> None:
    events: list[Event] = []
    path = sock_dir / "run" / "agent.sock"

    async def main() -> None:
        server = NotifyServer(path, on_event=lambda *e: events.append(e))
        await server.start()
        try:
            before = time.monotonic()
            assert await hook(path, "INSTANCE", "VI_1", "MASTER", "150") == (0, "")
            assert await hook(path, "GROUP", "G1", "BACKUP") == (0, "")
            assert await hook(path, "INSTANCE", "VI_1", "DELETED", "0") == (0, "")
            assert [e[:4] for e in events] == [
                ("INSTANCE", "VI_1", VrrpState.MASTER, 150),
                ("GROUP", "G1", VrrpState.BACKUP, None),
                ("INSTANCE", "VI_1", VrrpState.STOP, 0),
            ]
            assert all(before < e[4] < time.monotonic() for e in events)
            assert server.accepted == 3 and not server.refused
        finally:
            await server.stop()
        assert not path.exists()

    asyncio.run(main())
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"NOTIFY INSTANCE VI_1 MASTER 256\n", "notify"),
        (b"NOTIFY INSTANCE VI_1 PRIMARY 100\n", "notify"),
        (b"NOTIFY VRRP VI_1 MASTER 100\n", "notify"),
        (b"NOTIFY INSTANCE VI_1\n", "notify"),
        (b"NOTIFY INSTANCE " + b"x" * 65 + b" MASTER\n", "notify"),
        (b"NOTIFY  INSTANCE VI_1 MASTER\n", "syntax"),
        (b"\n", "syntax"),
        (b"", "syntax"),
        (b"NOTIFY INSTANCE VI_1 MASTER 100\r\n", "syntax"),
        (b"HELLO there\n", "verb"),
        (b"NOTIFY INSTANCE \xff MASTER\n", "encoding"),
        (b"NOTIFY " + b"A" * 2000 + b"\n", "too_long"),
    ],
)
def test_bad_requests_get_err_and_are_counted(sock_dir: Path, data: bytes, reason: str) -> None:
    events: list[Event] = []

    async def main() -> None:
        server = NotifyServer(sock_dir / "agent.sock", on_event=lambda *e: events.append(e))
        await server.start()
        try:
            reply = await request(server.path, data)
            assert reply.startswith("ERR ") and reply.endswith("\n") and reply.count("\n") == 1, reply
            assert server.refused == {reason: 1}
            # The server still answers afterwards.
            assert await request(server.path, b"NOTIFY INSTANCE VI_1 BACKUP 100\n") == "OK\n"
        finally:
            await server.stop()

    asyncio.run(main())
    assert [e[:4] for e in events] == [("INSTANCE", "VI_1", VrrpState.BACKUP, 100)]


def test_a_silent_client_times_out_and_a_failing_consumer_is_an_err(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "READ_TIMEOUT", 0.1)

    def broken(*_: object) -> None:
        raise RuntimeError("consumer bug")

    async def main() -> None:
        server = NotifyServer(sock_dir / "agent.sock", on_event=broken)
        await server.start()
        try:
            assert (await request(server.path, b"NOTIFY INS", half_close=False)).startswith("ERR no request line")
            reply = await request(server.path, b"NOTIFY INSTANCE VI_1 MASTER 100\n")
            assert reply == "ERR NOTIFY failed in the agent: RuntimeError\n"
            assert server.refused == {"timeout": 1, "internal": 1}
        finally:
            await server.stop()

    asyncio.run(main())


def test_more_verbs_share_the_socket(sock_dir: Path) -> None:
    async def status(words: Sequence[str], at: float) -> str:
        await asyncio.sleep(0)
        return f"STATUS ok {' '.join(words)}"

    async def main() -> None:
        server = NotifyServer(sock_dir / "agent.sock", on_event=lambda *e: None)
        server.add_verb("STATUS", status, privileged=False)
        await server.start()
        try:
            assert await request(server.path, b"STATUS VI_1\n") == "STATUS ok VI_1\n"
            # A client that does not half-close still gets its answer after one line.
            assert await request(server.path, b"STATUS\n", half_close=False) == "STATUS ok \n"
            assert "known: NOTIFY, STATUS" in await request(server.path, b"PING\n")
        finally:
            await server.stop()

    asyncio.run(main())


def test_stale_socket_is_replaced_live_one_and_other_files_are_not(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed agent leaves behind

    async def main() -> None:
        first = NotifyServer(path, on_event=lambda *e: None)
        await first.start()
        try:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            with pytest.raises(OSError, match="another process answers"):
                await NotifyServer(path, on_event=lambda *e: None).start()
            assert await request(path, b"NOTIFY INSTANCE VI_1 MASTER\n") == "OK\n"
        finally:
            await first.stop()
        (sock_dir / "plain").write_text("not a socket")
        with pytest.raises(OSError, match="not a socket"):
            await NotifyServer(sock_dir / "plain", on_event=lambda *e: None).start()
        assert (sock_dir / "plain").read_text() == "not a socket"
        with pytest.raises(OSError, match="no such group"):
            await NotifyServer(sock_dir / "g.sock", on_event=lambda *e: None, group="no-such-group-kag").start()

    asyncio.run(main())


async def run_as_nobody(code: str, *args: str) -> str:
    """Run `code` in a Python process as uid/gid 65534 (nobody); its stdout, or its stderr if it printed nothing."""
    prelude = "import os, socket, sys\nos.setgid(65534); os.setuid(65534)\n"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", prelude + code, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    return out.decode() or err.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_group_may_connect_but_only_root_or_owner_may_notify(sock_dir: Path) -> None:
    sock_dir.chmod(0o755)
    path = sock_dir / "agent.sock"
    client = (
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(sys.argv[1])\n"
        "s.sendall(sys.argv[2].encode() + b'\\n'); s.shutdown(socket.SHUT_WR)\n"
        "print(s.recv(1024).decode(), end='')\n"
    )

    async def as_nobody(line: str) -> str:
        return await run_as_nobody(client, str(path), line)

    events: list[Event] = []

    async def main() -> None:
        server = NotifyServer(path, on_event=lambda *e: events.append(e), group="nogroup")
        server.add_verb("STATUS", lambda words, at: "STATUS ok", privileged=False)
        await server.start()
        try:
            st = path.stat()
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, 65534)
            assert await as_nobody("STATUS") == "STATUS ok\n"
            assert await as_nobody("NOTIFY INSTANCE VI_1 MASTER 200") == "ERR NOTIFY refused to uid 65534\n"
            assert server.refused == {"uid": 1} and not events
        finally:
            await server.stop()

    asyncio.run(main())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_without_a_group_nobody_else_may_even_ask_for_status(sock_dir: Path) -> None:
    sock_dir.chmod(0o755)
    path = sock_dir / "agent.sock"
    client = (
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('refused')\n"
    )

    async def main() -> None:
        server = NotifyServer(path, on_event=lambda *e: None)
        server.add_verb("STATUS", lambda words, at: "STATUS ok", privileged=False)
        await server.start()
        try:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert await run_as_nobody(client, str(path)) == "refused\n"
        finally:
            await server.stop()

    asyncio.run(main())


def test_fifo_lines(sock_dir: Path) -> None:
    events: list[Event] = []
    path = sock_dir / "notify.fifo"

    async def main() -> None:
        fifo = NotifyFifo(path, on_event=lambda *e: events.append(e))
        fifo.start()
        try:
            assert stat.S_ISFIFO(path.stat().st_mode)
            # keepalived's side: opens for writing (would block without a reader; ours keeps one).
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            lines = [
                b'INSTANCE "VI_1" MASTER 150\n',
                b'GROUP "G1" BACKUP\n',
                b'INSTANCE "VI_1" MASTER_RX_LOWER_PRI 100\n',
                b"something else keepalived may write\n",
                b'INSTANCE "VI 2" FAULT 0\n',
                b'INSTANCE "VI_1" DEL',  # a line split across two writes
            ]
            os.write(fd, b"".join(lines))
            await asyncio.sleep(0.05)
            os.write(fd, b'ETED 0\nINSTANCE "VI_1" BACKUP 300\n')
            os.close(fd)  # keepalived restarting: not an EOF for the reader, which holds a writer itself
            await asyncio.sleep(0.05)
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b'INSTANCE "VI_1" STOP 150\n')
            os.close(fd)
            deadline = time.monotonic() + 5
            while len(events) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert [e[:4] for e in events] == [
                ("INSTANCE", "VI_1", VrrpState.MASTER, 150),
                ("GROUP", "G1", VrrpState.BACKUP, None),
                ("INSTANCE", "VI_1", VrrpState.STOP, 0),
                ("INSTANCE", "VI_1", VrrpState.STOP, 150),
            ]
            # MASTER_RX_LOWER_PRI, the unknown line, a name with a space, a priority above 255
            assert (fifo.accepted, fifo.ignored) == (4, 4)
        finally:
            fifo.stop()
        assert path.exists()
        (sock_dir / "plain").write_text("")
        with pytest.raises(OSError, match="not a FIFO"):
            NotifyFifo(sock_dir / "plain", on_event=lambda *e: None).start()

    asyncio.run(main())


def test_the_hooks_spawn_time_reaches_the_callback_never_later_than_its_arrival(sock_dir: Path) -> None:
    events: list[Event] = []

    async def main() -> None:
        server = NotifyServer(sock_dir / "agent.sock", on_event=lambda *e: events.append(e))
        await server.start()
        try:
            before = time.monotonic()
            assert await hook(server.path, "INSTANCE", "VI_1", "FAULT", "100") == (0, "")
            assert await request(server.path, b"NOTIFY INSTANCE VI_1 MASTER 100 at=12.5\n") == "OK\n"
            assert await request(server.path, b"NOTIFY INSTANCE VI_1 MASTER at=99999999999.0\n") == "OK\n"
            assert await request(server.path, b"NOTIFY INSTANCE VI_1 BACKUP 100\n") == "OK\n"
            for bad in (b"at=-1", b"at=1e9", b"at=nan", b"at=", b"at=\xd9\xa1"):
                assert (await request(server.path, b"NOTIFY INSTANCE VI_1 MASTER " + bad + b"\n")).startswith(
                    "ERR at=: expected the hook's spawn time"
                ), bad
        finally:
            await server.stop()
        (_, _, _, _, at, spawned), stamped, future, unstamped = events
        # The real hook: spawned after `before` (less the kernel's 10 ms tick), read later.
        assert spawned is not None and before - 0.011 <= spawned <= at
        assert stamped[4:] == (stamped[4], 12.5)
        assert future[5] == future[4]  # a spawn time after the arrival is taken as the arrival
        assert unstamped[5] is None
        assert server.refused == {"notify": 5}

    asyncio.run(main())
