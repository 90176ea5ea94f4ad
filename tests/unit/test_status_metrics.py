"""`status` (client, text view), `/metrics` (from the same snapshot) and what a SIGHUP reload may change.

The snapshot below has the documented shape (arbiter.agent.status, schema keepalived-arbiter.status/1): node b
during a VRRP cut, gate closed, node a holding. The e2e tests in tests/e2e/test_lab_operate.py check the same
shape as the running agent produces it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arbiter import config as config_mod
from arbiter import statusview
from arbiter.agent.daemon import peer_drift, restart_needed
from arbiter.agent.metrics import AgentMetrics, StatusCollector, loop_status
from arbiter.cli import main
from arbiter.evidence.heartbeat import InstanceReport
from arbiter.model import VrrpState

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "arbiter.toml.example"

SNAPSHOT: dict[str, Any] = {
    "schema": "keepalived-arbiter.status/1",
    "cluster": "web",
    "node": "node-b",
    "pid": 4242,
    "time": 1795637792.0,
    "started": 1795637755.0,
    "uptime_s": 37.0,
    "healthy": True,
    "last_cycle_age_s": 0.05,
    "config": {"path": "/etc/keepalived-arbiter/arbiter.toml", "loaded": 1795637755.0, "reload": None},
    "reference": {
        "quorate": True,
        "quorum": 1,
        "replies": {"10.0.0.254": True},
        "last_round_age_s": 0.4,
        "replies_total": {"10.0.0.254": 37},
    },
    "lease_store": {"url": "redis://10.0.9.1:6379/0"},
    "instances": [
        {
            "name": "VI_1",
            "interface": "eth0",
            "vips": ["10.0.0.100/24"],
            "state": "FAULT",
            "vip_present": False,
            "priority": 100,
            "gate": "closed",
            "lease": {"status": "peer", "holder": "node-a", "token": 17, "ttl_ms": 2700},
            "decision": {"rule": "L3", "gate": "closed", "reason": "VRRP path cut; gate closed", "since": 1795637787.0},
            "split_brain": None,
        }
    ],
    "peers": [
        {
            "name": "node-a",
            "alive": True,
            "leaving": False,
            "last_heard_age_s": 0.1,
            "media": [
                {"medium": "udp:eth0", "up": True, "last_seen_age_s": 0.1},
                {"medium": "serial:/dev/ttyS0", "up": False, "last_seen_age_s": 12.5},
            ],
            "quorate": True,
            "power": {"state": "on", "age_s": 37.0},
            "fence": None,
            "instances": [
                {
                    "name": "VI_1",
                    "state": "MASTER",
                    "vip_present": True,
                    "priority": 150,
                    "gate": "open",
                    "rule": "H1",
                    "lease_holder": "node-a",
                    "lease_token": 17,
                }
            ],
        }
    ],
    "last_fence": None,
    "heartbeat": {"refused": {"udp:eth0": {"duplicate": 190, "bad_mac": 2}}, "accepted": {"udp:eth0": 190}},
    "alerts": [
        {
            "url": "https://alerts.example.com/hook",
            "format": "json",
            "queued": 3,
            "delivered": 5,
            "failed_attempts": 4,
            "dropped": 0,
            "last_error": "connection refused",
            "last_success": None,
            "consecutive_failures": 4,
            "dead": True,
        }
    ],
    "drift": {"checked": 1795637755.0, "path": "/etc/keepalived/keepalived.conf", "error": None, "findings": []},
}


# --- the text view ------------------------------------------------------------------------------------------


def test_render_shows_both_nodes_of_each_instance_and_what_needs_attention() -> None:
    text = statusview.render(SNAPSHOT)
    assert text.startswith("Cluster web: seen from node-b (pid 4242), agent up 37s, healthy\n")
    assert "Instance VI_1  VIP 10.0.0.100/24 on eth0  (held by node-a)" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("  node-")}
    assert rows["node-b"][2:5] == ["FAULT", "-", "closed"]
    assert rows["node-a"][1:4] == ["MASTER", "up", "open"] and rows["node-a"][-1] == "H1"
    assert "decision: L3 since" in text and "VRRP path cut; gate closed" in text
    assert "serial:/dev/ttyS0  DOWN" in text
    assert "Heartbeat frames refused: udp:eth0: bad_mac 2" in text  # duplicates are normal and not shown
    assert "duplicate" not in text
    assert "Alerts to https://alerts.example.com/hook: DEAD, 3 queued" in text


def test_render_names_a_split_brain_and_a_stopped_peer() -> None:
    s = copy.deepcopy(SNAPSHOT)
    s["instances"][0].update(vip_present=True, state="MASTER")
    s["instances"][0]["split_brain"] = {"via": "arp", "macs": ["02:00:0a:00:00:01"], "age_s": 0.2}
    text = statusview.render(s)
    assert "(SPLIT BRAIN: held by node-b and node-a)" in text
    assert "SPLIT BRAIN on the wire: ARP for the VIP answered by 02:00:0a:00:00:01" in text
    s["peers"][0].update(alive=False, leaving=True, last_heard_age_s=6.3)
    text = statusview.render(s)
    assert "Peer node-a: stopped cleanly (said leaving), last heard 6.3s ago" in text
    assert "(held by node-b)" in text  # a silent peer's last word is shown, not counted as holding


def test_render_shows_a_refused_reload_and_drift_findings() -> None:
    s = copy.deepcopy(SNAPSHOT)
    s["config"]["reload"] = {"ok": False, "at": 1795637790.0, "error": "lease.ttl_ms: must exceed ..."}
    s["drift"]["findings"] = ["/etc/keepalived/keepalived.conf:12: error: [gate-missing] VI_1: no track_file"]
    text = statusview.render(s)
    assert "REFUSED (old config kept): lease.ttl_ms: must exceed ..." in text
    assert "keepalived.conf check: 1 finding(s):" in text and "[gate-missing]" in text


# --- the client ---------------------------------------------------------------------------------------------


@pytest.fixture
def agent_socket(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A Unix socket answering each connection with the next scripted reply (the agent's side of STATUS)."""
    path = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    replies: list[bytes] = []
    requests: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                requests.append(conn.recv(1024))
                conn.sendall(replies.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path, replies
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(5)
    assert all(r == b"STATUS\n" for r in requests), requests


def test_fetch_reads_the_agents_json(agent_socket: tuple[Path, list[bytes]]) -> None:
    path, replies = agent_socket
    replies.append(b"OK " + json.dumps(SNAPSHOT).encode() + b"\n")
    assert statusview.fetch(path) == SNAPSHOT


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"ERR STATUS takes no arguments\n", "agent refused: STATUS takes no arguments"),
        (b"HELLO\n", "unexpected reply 'HELLO'"),
        (b"OK {not json\n", "reply is not JSON"),
        (b"OK [1, 2]\n", "reply is not a JSON object"),
    ],
)
def test_fetch_names_a_bad_answer(agent_socket: tuple[Path, list[bytes]], reply: bytes, message: str) -> None:
    path, replies = agent_socket
    replies.append(reply)
    with pytest.raises(statusview.StatusError, match=message):
        statusview.fetch(path)


def test_status_without_an_agent_exits_1_and_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "agent.sock"
    assert main(["status", "--socket", str(missing)]) == 1
    assert capsys.readouterr().err == f"status: {missing}: no such socket; is the agent running?\n"
    stale = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))  # bound, never listening: what a crashed agent leaves behind
    sock.close()
    assert main(["status", "--socket", str(stale)]) == 1
    assert "connection refused; the agent is not listening" in capsys.readouterr().err


def test_status_json_prints_the_schema_unchanged(
    agent_socket: tuple[Path, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, replies = agent_socket
    replies.append(b"OK " + json.dumps(SNAPSHOT).encode() + b"\n")
    assert main(["status", "--json", "--socket", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == SNAPSHOT


def test_status_watch_needs_a_positive_interval(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--watch", "0", "--socket", "/nonexistent"]) == 2
    assert "--watch needs a positive number of seconds" in capsys.readouterr().err


# --- metrics ------------------------------------------------------------------------------------------------


def scrape(status: dict[str, Any] | None) -> str:
    metrics = AgentMetrics()
    metrics.attach_status(lambda: status)
    metrics.decisions.labels("VI_1", "L3").inc()
    metrics.latency.labels("vip").observe(0.0008)
    metrics.serve("127.0.0.1:0")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())
    finally:
        metrics.stop()


def test_metrics_export_the_snapshot_and_the_counters_over_http() -> None:
    text = scrape(SNAPSHOT)
    for line in [
        "keepalived_arbiter_status_ok 1.0",
        'keepalived_arbiter_gate_open{instance="VI_1"} 0.0',
        'keepalived_arbiter_role{instance="VI_1",state="FAULT"} 1.0',
        'keepalived_arbiter_role{instance="VI_1",state="MASTER"} 0.0',
        'keepalived_arbiter_lease_held{instance="VI_1"} 0.0',
        'keepalived_arbiter_lease_token{instance="VI_1"} 17.0',
        'keepalived_arbiter_lease_ttl_seconds{instance="VI_1"} 2.7',
        'keepalived_arbiter_peer_alive{peer="node-a"} 1.0',
        'keepalived_arbiter_heartbeat_up{medium="serial:/dev/ttyS0",peer="node-a"} 0.0',
        'keepalived_arbiter_heartbeat_last_seen_seconds{medium="serial:/dev/ttyS0",peer="node-a"} 12.5',
        'keepalived_arbiter_reference_replies_total{address="10.0.0.254"} 37.0',
        'keepalived_arbiter_heartbeat_frames_refused_total{medium="udp:eth0",reason="bad_mac"} 2.0',
        'keepalived_arbiter_alert_endpoint_up{url="https://alerts.example.com/hook"} 0.0',
        'keepalived_arbiter_decisions_total{instance="VI_1",rule="L3"} 1.0',
        'keepalived_arbiter_decision_latency_seconds_bucket{le="0.001",trigger="vip"} 1.0',
        "keepalived_arbiter_config_findings 0.0",
        'keepalived_arbiter_agent_info{cluster="web",node="node-b"} 1.0',
    ]:
        assert line in text, line
    assert "_created" not in text


def test_metrics_say_so_when_the_loop_does_not_answer() -> None:
    text = scrape(None)
    assert "keepalived_arbiter_status_ok 0.0" in text
    assert "keepalived_arbiter_gate_open{" not in text  # no stale figures


def test_loop_status_builds_the_snapshot_in_the_agents_loop() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    seen: list[threading.Thread] = []
    try:

        def build() -> dict[str, Any]:
            seen.append(threading.current_thread())
            return SNAPSHOT

        assert loop_status(loop, build)() == SNAPSHOT
        assert seen == [thread]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    # A closed loop (the agent stopping) cannot answer: None, which the scrape shows as status_ok 0.
    assert loop_status(loop, build)() is None
    assert next(iter(StatusCollector(lambda: None).collect())).samples[0].value == 0


# --- what a reload may change -------------------------------------------------------------------------------


def test_reload_applies_alerts_fencing_and_keepalived_but_names_everything_else() -> None:
    old = config_mod.parse(EXAMPLE.read_text())
    same = config_mod.parse(EXAMPLE.read_text())
    assert restart_needed(old, same) == []
    text = EXAMPLE.read_text()
    hot = config_mod.parse(
        text.replace("power_timeout_ms = 20000", "power_timeout_ms = 15000")
        .replace('username = "admin"', 'username = "fence"')
        .replace("https://alerts.example.com/hook", "https://pager.example.com/hook")
    )
    assert restart_needed(old, hot) == []
    cold = config_mod.parse(
        text.replace("interval_ms = 200", "interval_ms = 150").replace('"10.0.0.2", "192.168.100.2"', '"10.0.0.3"')
    )
    assert restart_needed(old, cold) == ["heartbeat", "peer[0]"]


# --- drift between the nodes --------------------------------------------------------------------------------


def test_peer_drift_compares_fingerprints_only_where_both_sides_have_one() -> None:
    def report(name: str, fingerprint: str | None) -> InstanceReport:
        return InstanceReport(name, VrrpState.BACKUP, False, 100, None, None, True, "B2", fingerprint)

    mine = {"VI_1": "aaaa", "VI_2": "bbbb"}
    reports = [report("VI_1", "aaaa"), report("VI_2", "cccc"), report("VI_3", "dddd"), report("VI_1x", None)]
    found = peer_drift(Path("/etc/keepalived/keepalived.conf"), mine, "node-a", reports)
    assert found == [
        "/etc/keepalived/keepalived.conf: error: [peer-drift] VI_2: node-a's keepalived.conf differs from this "
        "node's in VRID, advert_int, version, authentication or VIPs (run check-keepalived on both)"
    ]
    assert peer_drift(Path("k.conf"), {}, "node-a", reports) == []  # not fingerprinted here yet


def test_status_watch_json_prints_one_object_per_line(agent_socket: tuple[Path, list[bytes]]) -> None:
    path, replies = agent_socket
    for n in range(3):
        replies.append(b"OK " + json.dumps({**SNAPSHOT, "pid": n}).encode() + b"\n")
    cli = [sys.executable, "-m", "arbiter", "status", "--json", "--watch", "0.1", "--socket", str(path)]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.kill()
        proc.wait(10)
    assert [json.loads(line)["pid"] for line in lines] == [0, 1, 2]
