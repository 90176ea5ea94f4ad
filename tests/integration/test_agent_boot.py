"""The real agent (`keepalived-arbiter run`) booting with its serial cable missing and Redis unreachable, in a
network namespace this test creates: it runs (issue 12 item 9: it used to exit with "no such device" and leave
keepalived alone), `status` shows the serial medium down with the reason and next retry and the lease's error,
a `medium_down` alert with the reason reaches a webhook (a tiny HTTP server inside the same namespace), and
when the cable appears (socat started after the agent) the medium opens without a restart (`medium_up`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agent_netns import NsThread, namespaces
from tests.integration.test_heartbeat_transport import Cable

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and raw sockets need root"),
    pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat"),
]

CONFIG = """
[node]
name = "node-a"
cluster = "web"
state_dir = "{tmp}/state"

[[peer]]
name = "node-b"
heartbeat_addresses = ["127.0.0.2"]

[[instance]]
name = "VI_1"
vip = ["192.0.2.100/24"]
interface = "lo"
track_file = "{tmp}/VI_1.gate"
priority = 150
virtual_router_id = 51

[reference]
addresses = ["127.0.0.1"]
quorum = 1

[lease]
redis_url = "redis://127.0.0.1:1/0"

[heartbeat]
port = 6941
key_file = "{tmp}/heartbeat.key"
udp = [{{ interface = "lo" }}]
serial = [{{ device = "{tmp}/ttyA", baud = 115200 }}]

[api]
socket = "{tmp}/agent.sock"

[keepalived]
config = "{tmp}/keepalived.conf"

[alerts]
webhooks = [{{ url = "http://127.0.0.1:{hook_port}/hook", format = "json", retry_min_ms = 100, retry_max_ms = 500 }}]
"""
HOOK_PORT = 18000 + os.getpid() % 1000


class Webhook:
    """The alert endpoint: an HTTP server on the namespace's loopback that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def start(self, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:")), 0)
        self.bodies.append(json.loads(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    def kinds(self, medium: str) -> list[tuple[str, Any]]:
        """(kind, details.reason) of the alerts about `medium` as this node's own (no peer), in order."""
        return [
            (b["kind"], b["details"].get("reason"))
            for b in list(self.bodies)
            if b["details"].get("medium") == medium and b["details"].get("local")
        ]


def status(sock: Path) -> dict[str, Any] | None:
    done = subprocess.run(
        [sys.executable, "-m", "arbiter", "status", "--json", "--socket", str(sock)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None


def wait_status(sock: Path, agent: subprocess.Popen[str], cond: Callable[[dict[str, Any]], bool], what: str) -> Any:
    deadline = time.monotonic() + 15
    while True:
        assert agent.poll() is None, f"the agent exited ({agent.returncode}) while waiting for {what}"
        got = status(sock)
        if got is not None and cond(got):
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last status: {got}"
        time.sleep(0.2)


def test_agent_boots_with_its_serial_cable_missing_and_redis_unreachable(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    key = tmp_path / "heartbeat.key"
    key.write_text("a" * 44 + "\n", encoding="ascii")
    key.chmod(0o600)
    (tmp_path / "keepalived.conf").write_text("", encoding="utf-8")
    config = tmp_path / "arbiter.toml"
    config.write_text(CONFIG.format(tmp=tmp_path, hook_port=HOOK_PORT), encoding="utf-8")
    gate = tmp_path / "VI_1.gate"
    gate.write_text("0\n", encoding="ascii")  # as keepalived's init_file 0 would leave it
    sock = tmp_path / "agent.sock"
    device = f"serial:{tmp_path / 'ttyA'}"
    cable = Cable(tmp_path / "ttyA", tmp_path / "ttyB")
    out = (tmp_path / "agent.out").open("w+", encoding="utf-8")
    err = (tmp_path / "agent.err").open("w+", encoding="utf-8")
    hook = Webhook()
    with namespaces("boot") as (ns,), NsThread(ns) as inside:
        server = inside.run(hook.start(HOOK_PORT))
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "arbiter", "run", "-c", str(config)]
        agent = subprocess.Popen(argv, stdout=out, stderr=err, text=True, cwd=Path(__file__).resolve().parents[2])
        try:
            got = wait_status(
                sock,
                agent,
                lambda s: s["heartbeat"]["media"][device]["failures"] >= 2,
                "the serial medium down and retried",
            )
            link = got["heartbeat"]["media"][device]
            assert link["open"] is False
            assert "No such file" in link["reason"]
            assert link["next_retry_in_s"] is not None and link["next_retry_in_s"] <= 2.0
            assert got["heartbeat"]["media"]["udp:lo"]["open"] is True
            assert got["instances"][0]["lease"]["status"] == "unknown"
            assert got["instances"][0]["lease"]["error"]  # Redis unreachable: why, in status
            assert gate.read_text(encoding="ascii") == "1\n"  # closed, never left as init_file wrote it

            deadline = time.monotonic() + 10
            while not hook.kinds(device):
                assert time.monotonic() < deadline, f"no medium_down alert for {device}: {hook.bodies}"
                time.sleep(0.1)
            kind, reason = hook.kinds(device)[0]
            assert kind == "medium_down" and "No such file" in reason

            cable.plug()  # the cable appears after the agent started
            wait_status(sock, agent, lambda s: s["heartbeat"]["media"][device]["open"], "the serial medium open")
            deadline = time.monotonic() + 10
            while len(hook.kinds(device)) < 2:
                assert time.monotonic() < deadline, f"no medium_up alert for {device}: {hook.bodies}"
                time.sleep(0.1)
            assert [k for k, _ in hook.kinds(device)] == ["medium_down", "medium_up"]

            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=15) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait(timeout=10)
            cable.cut()
            server.close()
    out.seek(0)
    lines = [json.loads(line) for line in out if line.startswith("{")]
    links = [(line["open"], line["reason"] is None) for line in lines if line.get("event") == "medium-link"]
    assert links[:2] == [(False, False), (True, True)]
    assert gate.read_text(encoding="ascii") == "1\n"
