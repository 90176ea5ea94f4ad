"""The real agent (`keepalived-arbiter run`) booting with its serial cable missing and Redis unreachable, in a
network namespace this test creates: it runs (issue 12 item 9: it used to exit with "no such device" and leave
keepalived alone), `status` shows the serial medium down with the reason and next retry and the lease's error,
and when the cable appears (socat started after the agent) the medium opens without a restart.
"""

from __future__ import annotations

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

from tests.integration.agent_netns import namespaces
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
"""


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
    config.write_text(CONFIG.format(tmp=tmp_path), encoding="utf-8")
    gate = tmp_path / "VI_1.gate"
    gate.write_text("0\n", encoding="ascii")  # as keepalived's init_file 0 would leave it
    sock = tmp_path / "agent.sock"
    device = f"serial:{tmp_path / 'ttyA'}"
    cable = Cable(tmp_path / "ttyA", tmp_path / "ttyB")
    out = (tmp_path / "agent.out").open("w+", encoding="utf-8")
    err = (tmp_path / "agent.err").open("w+", encoding="utf-8")
    with namespaces("boot") as (ns,):
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=10)
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

            cable.plug()  # the cable appears after the agent started
            wait_status(sock, agent, lambda s: s["heartbeat"]["media"][device]["open"], "the serial medium open")

            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=15) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait(timeout=10)
            cable.cut()
    out.seek(0)
    lines = [json.loads(line) for line in out if line.startswith("{")]
    links = [(line["open"], line["reason"] is None) for line in lines if line.get("event") == "medium-link"]
    assert links[:2] == [(False, False), (True, True)]
    assert gate.read_text(encoding="ascii") == "1\n"
