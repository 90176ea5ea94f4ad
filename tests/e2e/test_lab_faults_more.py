"""The lab's newer faults act on real packets: random VRRP loss, per-NIC heartbeat cuts, the 3-node bridge.

One 3-node lab (keepalived alone, VRRPv3, advert_int 0.1 s) serves the whole file. Node a is master; b and c
hear its adverts. What each fault does is measured where it must show:
- `vrrp_loss(b, 50)`: b receives about half of a's adverts while c, without loss, counts them all over the same
  window (so extra adverts keepalived sends when b briefly takes over do not skew the share); 100 % at every
  node: nobody receives one, and after the heal they arrive again;
- `heartbeat_cut(b, "hb"|"lan")`: the agent's own heartbeat service (`python -m arbiter.evidence.heartbeat`,
  UDP on eth0 and eth1 as agentconf configures it) on a and b sees the peer down on that NIC's medium only,
  while VRRP still reaches b;
- `bridge(a, b)`: a and b cannot reach each other on any network nor by serial cable, each still reaches c,
  the witness and the reference, and c still hears a's adverts while b does not; the heal restores it all.
The `vrrp-loss` scenario (what `lab bench loss` runs) is run short, keepalived alone and with the arbiter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbiter.lab import netns, topology
from arbiter.lab.lab import Lab
from arbiter.lab.scenarios import run_scenario
from arbiter.lab.topology import REFERENCE_IP, WITNESS_IP, LabSpec

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]

VIP = "10.0.0.100"
COUNT_ADVERTS = """
import socket, sys, time
source, seconds = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.settimeout(0.05)
print("ready", flush=True)
end, n = time.monotonic() + seconds, 0
while time.monotonic() < end:
    try:
        _, (address, _) = s.recvfrom(2048)
    except TimeoutError:
        continue
    n += address == source
print(n, flush=True)
"""


@pytest.fixture(scope="module")
def lab3() -> Iterator[Lab]:
    with Lab(LabSpec(nodes=3, vrrp_version=3, advert_int=0.1)) as running:
        running.wait_holders(VIP, ["a"], 15)
        yield running


def count_adverts(lab: Lab, listeners: list[str], source: str, seconds: float) -> dict[str, int]:
    """VRRP packets from `source` that reach each listener's raw socket (what keepalived would read), counted
    over the same `seconds` at every listener."""
    procs = {
        name: subprocess.Popen(
            netns.in_ns(lab.plan.node(name).netns, [lab.plan.python, "-c", COUNT_ADVERTS, source, str(seconds)]),
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in listeners
    }
    try:
        for name, proc in procs.items():
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", name
        return {name: int(proc.communicate(timeout=seconds + 10)[0]) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


def reachable(lab: Lab, node: str, addresses: list[str]) -> dict[str, bool]:
    """Which addresses answer ICMP echo from the node (icmplib, as the agent pings: this machine has no ping)."""
    code = (
        "import icmplib, json, sys\n"
        "hosts = icmplib.multiping(sys.argv[1:], count=2, interval=0.2, timeout=1, privileged=True)\n"
        "print(json.dumps({h.address: h.is_alive for h in hosts}))\n"
    )
    argv = netns.in_ns(lab.plan.node(node).netns, [lab.plan.python, "-c", code, *addresses])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    answers: dict[str, bool] = json.loads(done.stdout)
    assert set(answers) == set(addresses), done
    return answers


def test_vrrp_loss_drops_a_share_of_the_adverts_at_random(lab3: Lab) -> None:
    a = lab3.plan.node("a").lan_ip
    heal = lab3.faults.vrrp_loss("b", 50)
    try:
        half = count_adverts(lab3, ["b", "c"], a, 4.0)
    finally:
        heal()
    assert half["c"] >= 30, half  # a sends 10 a second: c, without loss, hears them
    assert 0.2 <= half["b"] / half["c"] <= 0.8, half  # binomial(≈40, 0.5): far inside these bounds

    lab3.wait_holders(VIP, ["a"], 10)
    heal = lab3.faults.vrrp_loss(None, 100)
    try:
        none = count_adverts(lab3, ["b", "c"], a, 1.5)
    finally:
        heal()
    assert none == {"b": 0, "c": 0}
    again = count_adverts(lab3, ["b", "c"], a, 1.0)
    assert again["b"] >= 5 and again["c"] >= 5, again
    details = [e.detail for e in lab3.timeline.sorted() if e.kind in ("fault", "heal")]
    assert details[-4:] == ["vrrp-loss 50%", "vrrp-loss 50%", "vrrp-loss 100%", "vrrp-loss 100%"]
    lab3.wait_holders(VIP, ["a"], 10)


def _heartbeat(lab: Lab, me: str, peer: str, key: Path, stats: Path) -> subprocess.Popen[bytes]:
    other = lab.plan.node(peer)
    argv = [lab.plan.python, "-m", "arbiter.evidence.heartbeat", "--node", f"node-{me}", "--cluster", "faults"]
    argv += ["--key", str(key), "--peer", f"node-{peer}", "--udp", "eth0", "--udp", "eth1"]
    argv += ["--peer-address", other.lan_ip, "--peer-address", other.hb_ip]
    argv += ["--interval-ms", "50", "--deadtime-ms", "400", "--stats", str(stats)]
    return subprocess.Popen(netns.in_ns(lab.plan.node(me).netns, argv), stderr=subprocess.DEVNULL)


@pytest.mark.parametrize(("medium", "cut", "kept"), [("hb", "udp:eth1", "udp:eth0"), ("lan", "udp:eth0", "udp:eth1")])
def test_a_per_nic_heartbeat_cut_downs_that_medium_only(
    lab3: Lab, tmp_path: Path, medium: str, cut: str, kept: str
) -> None:
    key = tmp_path / "heartbeat.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    procs = {n: _heartbeat(lab3, n, p, key, tmp_path / f"{n}.json") for n, p in (("a", "b"), ("b", "a"))}
    try:
        time.sleep(1.0)  # both media come up
        heal = lab3.faults.heartbeat_cut("b", medium)
        try:
            time.sleep(1.0)  # > deadtime 0.4 s
            lab3.wait_advert("b", timeout=2.0)  # VRRP untouched
        finally:
            for proc in procs.values():
                netns.kill_pids([proc.pid], signal.SIGTERM)
                proc.wait(timeout=10)
            heal()
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    for node, peer in (("b", "node-a"), ("a", "node-b")):
        stats = json.loads((tmp_path / f"{node}.json").read_text())
        assert stats["peers"][peer] == {cut: False, kept: True}, (node, stats["peers"])
        assert stats["media"][cut]["accepted"] > 0, (node, stats["media"][cut])  # it was up before the cut
    assert lab3.holders(VIP) == ["a"]


def test_a_bridge_cuts_two_nodes_from_each_other_only(lab3: Lab) -> None:
    plan = lab3.plan
    a, b, c = (plan.node(n) for n in ("a", "b", "c"))
    cable = Path(a.dir, "tty-b")
    assert cable.exists()
    heal = lab3.faults.bridge("a", "b")
    try:
        heard = count_adverts(lab3, ["b", "c"], a.lan_ip, 1.0)
        assert heard["b"] == 0 and heard["c"] >= 5, heard
        others = [c.lan_ip, c.hb_ip, c.mgmt_ip, WITNESS_IP, REFERENCE_IP]
        for here, there in ((a, b), (b, a)):
            answers = reachable(lab3, here.name, [there.lan_ip, there.hb_ip, there.mgmt_ip, *others])
            assert answers == {
                there.lan_ip: False,
                there.hb_ip: False,
                there.mgmt_ip: False,
                **dict.fromkeys(others, True),
            }, here.name
        assert not cable.exists()  # the a-b serial cable is cut
        assert Path(a.dir, "tty-c").exists() and Path(b.dir, "tty-c").exists()
    finally:
        heal()
    topology.wait_for(cable.exists, 5, "the a-b serial cable back")
    assert reachable(lab3, "a", [b.lan_ip, b.hb_ip, b.mgmt_ip]) == dict.fromkeys([b.lan_ip, b.hb_ip, b.mgmt_ip], True)
    lab3.wait_holders(VIP, ["a"], 10)


@pytest.mark.parametrize("arbiter", [False, True], ids=["alone", "arbiter"])
def test_the_vrrp_loss_scenario_counts_what_the_loss_did(arbiter: bool) -> None:
    """`lab bench loss`'s scenario, short: 10 % VRRP loss at every node for 4 s at VRRPv3 0.05 s. Its `loss`
    figures are the judge's over the loss and the settling after it; with the arbiter, no dual master at all."""
    r = run_scenario("vrrp-loss", seed=1, advert_int=0.05, vrrp_version=3, arbiter=arbiter, hold=4.0)
    assert r["loss"]["percent"] == 10 and r["loss"]["seconds"] == 4.0
    faults = [(e["kind"], e["detail"]) for e in r["timeline"] if e["kind"] in ("fault", "heal")]
    assert faults == [("fault", "vrrp-loss 10%"), ("heal", "vrrp-loss 10%")]
    phases = {p["phase"]: p for p in r["phases"]}
    fault_at, heal_at = phases["fault"]["from_s"], phases["heal"]["from_s"]
    assert 4.0 <= heal_at - fault_at < 5.0
    after = phases["fault"]["dual_master_ms"] + phases["heal"]["dual_master_ms"]
    assert r["loss"]["dual_master_ms"] == pytest.approx(after, abs=0.2)
    assert r["loss"]["vip_moves"] == phases["fault"]["vip_moves"] + phases["heal"]["vip_moves"]
    assert (r["loss"]["dual_events"] == 0) == (r["loss"]["dual_master_ms"] == 0)
    assert r["holders_at_end"] == ["a"]
    if arbiter:
        assert r["loss"]["dual_events"] == 0, r["loss"]
