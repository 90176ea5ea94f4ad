"""What an operator touches, on real keepalived with the agent on both nodes: `status`, `/metrics`, SIGHUP reload,
systemd's notify protocol and a clean `systemctl stop` (SIGTERM) that must not get the node fenced.

Commands run the way an operator runs them: `keepalived-arbiter lab exec --lab NAME NODE -- keepalived-arbiter
status ...` inside the node's namespace, with the config the lab wrote for that node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from arbiter.alerts import load_secret, verify_signature
from arbiter.lab import agentconf, netns, topology
from arbiter.lab.lab import Lab
from arbiter.lab.topology import LabSpec

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]
VIP = topology.VIPS[0]


def exec_in(lab: Lab, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    cli = str(Path(lab.plan.python).with_name("keepalived-arbiter"))
    full = [cli, "lab", "exec", "--lab", lab.plan.prefix, node, "--", *argv]
    return subprocess.run(full, capture_output=True, text=True, timeout=60, check=False)


def status(lab: Lab, node: str, *, explicit_socket: bool = False) -> dict[str, Any]:
    # --socket: while a test has broken the config file on purpose, status cannot learn the socket from it.
    where = ["--socket", str(topology.agent_socket(lab.plan.node(node)))] if explicit_socket else []
    done = exec_in(lab, node, "keepalived-arbiter", "status", "--json", *where)
    assert done.returncode == 0, done.stdout + done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def status_text(lab: Lab, node: str) -> str:
    done = exec_in(lab, node, "keepalived-arbiter", "status")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def metrics(lab: Lab, node: str) -> str:
    script = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9687/metrics').read().decode())"
    done = exec_in(lab, node, "python3", "-c", script)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_status(
    lab: Lab, node: str, want: Callable[[dict[str, Any]], bool], timeout: float, what: str, **kw: bool
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s = status(lab, node, **kw)
        if want(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"node {node}: no {what} within {timeout:g}s; last status:\n{json.dumps(s, indent=1)}")
        time.sleep(0.2)


def mine(s: dict[str, Any]) -> dict[str, Any]:
    inst: dict[str, Any] = s["instances"][0]
    return inst


def peer_says(s: dict[str, Any]) -> dict[str, Any]:
    reports = s["peers"][0]["instances"]
    return reports[0] if reports else {}


def settled(s: dict[str, Any], gate: str, rule: str, peer_rule: str) -> bool:
    """This node's gate and rule, the peer's rule in its heartbeats, and a lease read that names a holder."""
    return (
        mine(s)["gate"] == gate
        and mine(s)["decision"]["rule"] == rule
        and peer_says(s).get("rule") == peer_rule
        and mine(s)["lease"]["holder"] is not None
    )


def ask(path: Path, request: bytes) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))  # a path socket: reachable from outside the node's network namespace
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.decode().rstrip("\n")


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A NOTIFY_SOCKET as systemd gives one to a Type=notify service; the lab's agents inherit the environment."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    try:
        yield sock
    finally:
        sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_status_and_metrics_show_the_whole_cluster_during_and_after_vrrp_cut() -> None:
    with Lab(LabSpec(arbiter=True)) as lab:
        lab.wait_holders(VIP, ["a"], 20)
        lab.wait_agents_ready(30)
        before = wait_status(lab, "b", lambda s: settled(s, "open", "B2", "H1"), 15, "settled cluster")
        assert before["schema"] == "keepalived-arbiter.status/1"
        assert (before["node"], before["healthy"]) == ("node-b", True)
        assert mine(before)["state"] == "BACKUP" and mine(before)["lease"]["holder"] == "node-a"
        peer = before["peers"][0]
        assert peer["name"] == "node-a" and peer["alive"] is True and peer["leaving"] is False
        assert len(peer["media"]) == 3 and all(m["up"] for m in peer["media"]), peer["media"]
        assert peer_says(before)["state"] == "MASTER" and peer_says(before)["vip_present"] is True
        assert before["reference"]["quorate"] is True
        # Bad requests on the socket get a reason, and the agent goes on answering.
        path = topology.agent_socket(lab.plan.node("b"))
        assert ask(path, b"STATUS now\n") == "ERR STATUS takes no arguments"
        assert ask(path, b"STATUS\n").startswith("OK {")

        heal = lab.faults.vrrp_cut(None, "both")
        try:
            # b closes its gate before keepalived's master-down: the peer (a) still holds and renews the lease.
            during = wait_status(lab, "b", lambda s: mine(s)["gate"] == "closed", 10, "closed gate during the cut")
            assert mine(during)["decision"]["rule"] in ("L3", "V1"), mine(during)["decision"]
            assert mine(during)["vip_present"] is False
            text = status_text(lab, "b")
            assert "(held by node-a)" in text and "SPLIT BRAIN" not in text, text
            assert "node-b (here)" in text and "closed" in text, text
            # a sees b's closed gate in b's heartbeats: the cluster view from the other side.
            from_a = wait_status(lab, "a", lambda s: peer_says(s).get("gate") == "closed", 5, "b's closed gate")
            assert mine(from_a)["gate"] == "open" and mine(from_a)["decision"]["rule"] == "H1"
            assert mine(from_a)["lease"]["status"] == "mine" and mine(from_a)["lease"]["ttl_ms"] > 0
            text_a = status_text(lab, "a")
            assert "Peer node-b: alive" in text_a and "(held by node-a)" in text_a, text_a
            scraped = metrics(lab, "b")
            assert 'keepalived_arbiter_gate_open{instance="VI_1"} 0.0' in scraped
            assert 'keepalived_arbiter_role{instance="VI_1",state="FAULT"} 1.0' in scraped
            assert 'keepalived_arbiter_lease_held{instance="VI_1"} 0.0' in scraped
            assert 'keepalived_arbiter_peer_alive{peer="node-a"} 1.0' in scraped
        finally:
            heal()
        after = wait_status(lab, "b", lambda s: settled(s, "open", "B2", "H1"), 15, "open gate after the cut")
        assert after["peers"][0]["fence"] is None and after["last_fence"] is None
        assert "(held by node-a)" in status_text(lab, "b")
        scraped = metrics(lab, "a")
        assert 'keepalived_arbiter_gate_open{instance="VI_1"} 1.0' in scraped
        assert 'keepalived_arbiter_lease_held{instance="VI_1"} 1.0' in scraped
        assert 'keepalived_arbiter_decisions_total{instance="VI_1",rule="H1"}' in scraped
        assert 'keepalived_arbiter_heartbeat_up{medium="udp:eth0",peer="node-b"} 1.0' in scraped
        assert "keepalived_arbiter_decision_latency_seconds_count" in scraped
        assert "keepalived_arbiter_reference_quorate 1.0" in scraped


def test_reload_systemd_protocol_and_a_clean_stop_that_is_not_fenced(notify_socket: socket.socket) -> None:
    with Lab(LabSpec(arbiter=True)) as lab:
        lab.wait_holders(VIP, ["a"], 20)
        lab.wait_agents_ready(30)
        wait_status(lab, "b", lambda s: settled(s, "open", "B2", "H1"), 15, "settled cluster")
        said = "\n".join(received(notify_socket))
        assert "READY=1" in said and "WATCHDOG=1" in said, said

        conf = agentconf.config_path(lab.plan.node("a"))
        original = conf.read_text()
        pid = lab.agent_pid("a")
        assert pid is not None

        def hup(text: str) -> dict[str, Any]:
            before = status(lab, "a")["config"]["reload"]
            conf.write_text(text)
            os.kill(pid, signal.SIGHUP)
            changed = wait_status(
                lab, "a", lambda s: s["config"]["reload"] != before, 10, "reload result", explicit_socket=True
            )
            conf.write_text(original)
            return dict(changed["config"])

        bad = hup(original.replace("[lease]", "[lease\n"))
        assert bad["reload"]["ok"] is False and "line" in bad["reload"]["error"], bad
        restart = hup(original.replace("interval_ms = 1000", "interval_ms = 900", 1))
        assert restart["reload"]["ok"] is False, restart
        assert restart["reload"]["error"].startswith("reference changed: restart the agent"), restart
        good = hup(original.replace("power_timeout_ms = 10000", "power_timeout_ms = 9000"))
        assert good["reload"]["ok"] is True and good["reload"]["error"] is None, good
        said = "\n".join(received(notify_socket))
        assert "RELOADING=1" in said and "MONOTONIC_USEC=" in said and "READY=1" in said, said
        assert status(lab, "a")["healthy"] is True  # still deciding after three reloads

        # A clean stop (what `systemctl stop` sends): gates closed, VIP released, lease released, "leaving" said.
        os.kill(pid, signal.SIGTERM)
        lab.wait_holders(VIP, ["b"], 10)
        gone = wait_status(lab, "b", lambda s: s["peers"][0]["alive"] is False, 10, "node-a silent")
        assert gone["peers"][0]["leaving"] is True
        assert mine(gone)["lease"]["holder"] == "node-b" and mine(gone)["decision"]["rule"] == "H1"
        time.sleep(2)  # past the deadtime and a few decision cycles: still no fence
        final = status(lab, "b")
        assert final["peers"][0]["fence"] is None and final["last_fence"] is None, final["last_fence"]
        assert topology.node_powered(lab.plan.node("a"))
        assert "STOPPING=1" in "\n".join(received(notify_socket))
        assert "Peer node-a: stopped cleanly (said leaving)" in status_text(lab, "b")


RECEIVER = """
import http.server, json, sys
out = open(sys.argv[2], "a")
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        out.write(json.dumps({"headers": dict(self.headers), "body": body.decode()}) + "\\n")
        out.flush()
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Hook).serve_forever()
"""
HOOK_PORT = 8765


def alerts_received(path: Path, secret: bytes) -> list[dict[str, Any]]:
    """Every request the receiver got, each checked against its HMAC signature before it counts."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        request = json.loads(line)
        headers = {k.lower(): v for k, v in request["headers"].items()}
        body = request["body"].encode()
        assert verify_signature(secret, headers["x-arbiter-timestamp"], body, headers["x-arbiter-signature"]), request
        out.append(json.loads(body))
    return out


def test_webhook_receives_signed_alerts_for_a_split_brain(tmp_path: Path) -> None:
    """An operator edits node b's keepalived.conf under the running cluster and drops the gate (the weight-0
    track_file), then reloads keepalived and the agent. b's agent reports the broken wiring (config drift). When
    VRRP is then cut, b's keepalived takes the VIP whatever its agent decides: node a, holding the lease, sees b
    claim the VIP in b's heartbeats, alerts the split brain and fences b."""
    secret_file = tmp_path / "webhook.secret"
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(16).hex().encode())
    os.close(fd)
    secret = load_secret(secret_file)
    log = tmp_path / "alerts.jsonl"
    url = f"http://{topology.WITNESS_IP}:{HOOK_PORT}/hook"
    spec = LabSpec(arbiter=True, webhook=url, webhook_secret=str(secret_file))
    with Lab(spec) as lab:
        (tmp_path / "receiver.py").write_text(RECEIVER)
        argv = ["python3", str(tmp_path / "receiver.py"), str(HOOK_PORT), str(log)]
        receiver = subprocess.Popen(netns.in_ns(lab.plan.witness_ns, argv))
        try:
            lab.wait_holders(VIP, ["a"], 20)
            lab.wait_agents_ready(30)

            def kinds() -> set[tuple[str, str]]:
                return {(a["node"], a["kind"]) for a in alerts_received(log, secret)}

            topology.wait_for(lambda: ("node-a", "agent_started") in kinds(), 20, "a's agent_started alert")
            assert ("node-b", "config_drift") not in kinds()  # both files wired as the README says

            node_b = lab.plan.node("b")
            conf = Path(node_b.dir, "keepalived.conf")
            gate_lines = "    track_file {\n        arbiter_VI_1 weight 0\n    }\n"
            assert gate_lines in conf.read_text()
            conf.write_text(conf.read_text().replace(gate_lines, ""))
            keepalived_b, agent_b = topology.keepalived_pid(node_b), lab.agent_pid("b")
            assert keepalived_b is not None and agent_b is not None
            os.kill(keepalived_b, signal.SIGHUP)  # keepalived re-reads its configuration
            os.kill(agent_b, signal.SIGHUP)  # a reload runs the keepalived.conf check at once
            topology.wait_for(lambda: ("node-b", "config_drift") in kinds(), 20, "b's config_drift alert")
            time.sleep(2)  # keepalived's reload settles; b stays BACKUP behind a's adverts
            heal = lab.faults.vrrp_cut(None, "both")
            try:
                want = {("node-a", "split_brain"), ("node-a", "peer_fenced")}
                topology.wait_for(lambda: want <= kinds(), 30, f"alerts {want}")
            finally:
                heal()
            got = alerts_received(log, secret)
            # b's agent closed its gate during the cut (to no effect: b's keepalived does not read it).
            assert {("node-a", "agent_started"), ("node-b", "agent_started"), ("node-b", "gate_closed")} <= kinds()
            for alert in got:
                assert alert["schema"] == "keepalived-arbiter.alert/1" and alert["cluster"] == lab.plan.prefix
                assert set(alert) >= {"id", "kind", "severity", "node", "summary", "details", "time", "sequence"}
            split = next(a for a in got if a["kind"] == "split_brain")
            assert split["severity"] == "critical" and split["instance"] == "VI_1" and "node-b" in split["summary"]
            fenced = next(a for a in got if a["kind"] == "peer_fenced")
            assert fenced["peer"] == "node-b" and "status OFF read from ipmi" in fenced["details"]["proof"]
            drift = next(a for a in got if a["kind"] == "config_drift" and a["node"] == "node-b")
            assert any("[gate-missing]" in f for f in drift["details"]["findings"]), drift
            assert not topology.node_powered(lab.plan.node("b"))
            a_status = status(lab, "a")
            assert a_status["last_fence"]["outcome"] == "off" and a_status["last_fence"]["peer"] == "node-b"
            assert a_status["alerts"][0]["dead"] is False and a_status["alerts"][0]["delivered"] >= 2
        finally:
            receiver.kill()
            receiver.wait(10)
