"""Fault injection for the lab. Every fault is a function that returns its undo (`heal`), and every
fault and heal is written to the timeline.

Network faults are nftables rules in the node's own namespace (a table `kalab_*` per fault, so healing one
fault removes exactly its rules). `ip protocol vrrp drop` in the input chain is what splits the brain: the
raw socket keepalived reads adverts from sits after it, as on a real host with a bad firewall rule.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from arbiter.lab import netns, topology
from arbiter.lab.events import FAULT, HEAL, Timeline
from arbiter.lab.netns import LabError, run
from arbiter.lab.topology import HB_NET, REFERENCE_IP, WITNESS_IP, LabPlan, NodePlan

Heal = Callable[[], None]
HEARTBEAT_PORT = 6941
_ids = itertools.count(1)

LINKS = {"lan": "eth0", "hb": "eth1", "mgmt": "eth2"}
MEDIA = ("ethernet", "lan", "hb")  # heartbeat_cut: every Ethernet heartbeat and VRRP, or one NIC's heartbeat
PROCESSES = ("keepalived", "sshd", "agent")


@dataclass
class Faults:
    """The fault verbs, bound to one lab and its timeline."""

    plan: LabPlan
    timeline: Timeline
    started: Callable[[int], None] = lambda pid: None  # told the PID of each daemon a heal starts (lab.Reaper)

    def _mark(self, node: str, what: str) -> Callable[[], None]:
        self.timeline.add(FAULT, node, what)

        def healed() -> None:
            self.timeline.add(HEAL, node, what)

        return healed

    def _nft(self, ns: str, family: str, inbound: list[str], outbound: list[str]) -> Heal:
        """A fresh table in `ns` whose input and output chains hold the given rules."""
        table = f"kalab_{next(_ids)}"
        lines = [f"table {family} {table} {{"]
        for hook, rules in (("input", inbound), ("output", outbound)):
            lines += [f"  chain {hook} {{", f"    type filter hook {hook} priority -10; policy accept;"]
            lines += [f"    {rule}" for rule in rules]
            lines.append("  }")
        lines.append("}")
        run(["nft", "-f", "-"], ns=ns, input_text="\n".join(lines) + "\n")

        def heal() -> None:
            run(["nft", "delete", "table", family, table], ns=ns, check=False)

        return heal

    def _nodes(self, node: str | None) -> list[str]:
        return [n.name for n in self.plan.nodes] if node is None else [self.plan.node(node).name]

    # --- network ---------------------------------------------------------------------------------------

    def vrrp_cut(self, node: str | None = None, direction: str = "both") -> Heal:
        """Drop IP protocol 112 at one node (or all), incoming, outgoing or both."""
        if direction not in ("in", "out", "both"):
            raise LabError(f"direction: in, out or both (got {direction!r})")
        drop = ["ip protocol vrrp drop"]
        inbound = drop if direction in ("in", "both") else []
        outbound = drop if direction in ("out", "both") else []
        heals = [self._nft(self.plan.node(n).netns, "ip", inbound, outbound) for n in self._nodes(node)]
        done = self._mark(node or "", f"vrrp-cut {direction}")
        return _chain(heals, done)

    def vrrp_loss(self, node: str | None, percent: int) -> Heal:
        """Drop `percent` % of the VRRP packets a node (or every node) receives, each at random."""
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
            raise LabError(f"percent: a whole number from 1 to 100 (got {percent!r})")
        inbound = [vrrp_loss_rule(percent)]
        heals = [self._nft(self.plan.node(n).netns, "ip", inbound, []) for n in self._nodes(node)]
        return _chain(heals, self._mark(node or "", f"vrrp-loss {percent}%"))

    def heartbeat_cut(self, node: str | None = None, medium: str = "ethernet") -> Heal:
        """medium "ethernet": VRRP and every Ethernet heartbeat dropped (UDP heartbeat port on all NICs, the hb
        network); "lan" / "hb": only the UDP heartbeat on that NIC (eth0 / eth1), VRRP untouched. Serial stays up."""
        inbound, outbound = heartbeat_cut_rules(medium)
        heals = [self._nft(self.plan.node(n).netns, "ip", inbound, outbound) for n in self._nodes(node)]
        return _chain(heals, self._mark(node or "", "hb-cut" if medium == "ethernet" else f"hb-cut {medium}"))

    def bridge(self, node: str, peer: str) -> Heal:
        """Cut two nodes of a 3-node lab from each other on every medium (IP between their LAN, hb and mgmt
        addresses both ways, VRRP included; their serial cable), while each still reaches the third node, the
        witness and the reference (Jepsen's "bridge")."""
        if len(self.plan.nodes) < 3:
            raise LabError(f"bridge: needs a 3-node lab (this one has {len(self.plan.nodes)} nodes)")
        if node == peer:
            raise LabError(f"bridge: peer must be another node than {node!r}")
        x, y = self.plan.node(node), self.plan.node(peer)
        heals = [self._nft(here.netns, "ip", *bridge_rules(there)) for here, there in ((x, y), (y, x))]
        heals += [
            self._serial_cut_raw(a, b) for a, b, _, _ in topology.serial_links(self.plan) if {a, b} == {node, peer}
        ]
        return _chain(heals, self._mark(node, f"bridge {node} {peer}"))

    def isolate(self, node: str) -> Heal:
        """Cut the node off from everything: every NIC drops all IP and ARP, every serial cable cut. keepalived
        keeps running and keeps its VIP, as on a host whose switch ports died."""
        ns = self.plan.node(node).netns
        heals = [
            self._nft(ns, "inet", ['iifname != "lo" drop'], ['oifname != "lo" drop']),
            self._nft(ns, "arp", ["drop"], ["drop"]),
        ]
        heals += [self._serial_cut_raw(x, y) for x, y, _, _ in topology.serial_links(self.plan) if node in (x, y)]
        return _chain(heals, self._mark(node, "isolate"))

    def link_down(self, node: str, link: str = "lan") -> Heal:
        if link not in LINKS:
            raise LabError(f"link: one of {', '.join(LINKS)} (got {link!r})")
        ns, dev = self.plan.node(node).netns, LINKS[link]
        run(["ip", "-n", ns, "link", "set", dev, "down"])

        def heal() -> None:
            run(["ip", "-n", ns, "link", "set", dev, "up"])

        return _chain([heal], self._mark(node, f"link-down {link}"))

    def redis_partition(self, node: str) -> Heal:
        ns = self.plan.node(node).netns
        heal = self._nft(ns, "ip", [f"ip saddr {WITNESS_IP} drop"], [f"ip daddr {WITNESS_IP} drop"])
        return _chain([heal], self._mark(node, "redis-partition"))

    def reference_lost(self, node: str) -> Heal:
        ns = self.plan.node(node).netns
        heal = self._nft(ns, "ip", [f"ip saddr {REFERENCE_IP} drop"], [f"ip daddr {REFERENCE_IP} drop"])
        return _chain([heal], self._mark(node, "reference-lost"))

    # --- serial ----------------------------------------------------------------------------------------

    def _serial_cut_raw(self, x: str, y: str) -> Heal:
        pid_file = Path(self.plan.dir, f"socat-{x}{y}.pid")
        pid = netns.read_pid(str(pid_file))
        if pid is not None:
            netns.kill_pids([pid])
        # socat killed leaves its links dangling to /dev/pts/N; the next pty anyone opens on this machine may
        # get that number, and the "cut" cable would then lead into it. A cut cable's device is gone: unlink.
        for nx, ny, px, py in topology.serial_links(self.plan):
            if (nx, ny) == (x, y):
                px.unlink(missing_ok=True)
                py.unlink(missing_ok=True)

        def heal() -> None:
            self.started(topology.start_serial(self.plan, x, y))

        return heal

    def serial_cut(self, node: str | None = None, peer: str | None = None) -> Heal:
        cables = [
            (x, y)
            for x, y, _, _ in topology.serial_links(self.plan)
            if (node is None or node in (x, y)) and (peer is None or peer in (x, y))
        ]
        if not cables:
            raise LabError("serial-cut: no such cable")
        heals = [self._serial_cut_raw(x, y) for x, y in cables]
        return _chain(heals, self._mark(node or "", "serial-cut " + ",".join(x + y for x, y in cables)))

    # --- redis -----------------------------------------------------------------------------------------

    def redis_stop(self) -> Heal:
        pid = topology.redis_pid(self.plan)
        if pid is not None:
            netns.kill_pids([pid], signal.SIGKILL)
            topology.wait_for(lambda: netns.gone(pid), 5, "redis-server to exit")

        def heal() -> None:
            self.started(topology.start_redis(self.plan))

        return _chain([heal], self._mark("", "redis-stop"))

    def redis_restart_empty(self) -> None:
        """Kill Redis and start it again with no data (it keeps none on disk): not a fault to heal."""
        pid = topology.redis_pid(self.plan)
        self.timeline.add(FAULT, "", "redis-restart-empty")
        if pid is not None:
            netns.kill_pids([pid], signal.SIGKILL)
            topology.wait_for(lambda: netns.gone(pid), 5, "redis-server to exit")
        self.started(topology.start_redis(self.plan))

    def sentinel_failover(self, timeout: float = 10.0) -> None:
        """`SENTINEL FAILOVER`: the sentinels promote the replica at once (no agreement needed), as an operator's
        forced failover; returns once the first sentinel names the new master. Not a fault to heal."""
        if not self.plan.spec.sentinel:
            raise LabError("sentinel-failover: this lab's witness is one Redis (no --witness sentinel)")
        before = topology.sentinel_master(self.plan)
        self.timeline.add(FAULT, "", f"sentinel-failover (master on port {before})")
        argv = ["redis-cli", "-p", str(topology.SENTINEL_PORT), "SENTINEL", "FAILOVER", topology.SENTINEL_SERVICE]
        done = run(argv, ns=self.plan.witness_ns, check=False)
        if done.stdout.strip() != "OK":
            raise LabError(f"sentinel-failover: {done.stdout.strip() or done.stderr.strip()}")
        topology.wait_for(
            lambda: topology.sentinel_master(self.plan) not in (None, before), timeout, "the sentinels' new master"
        )

    # --- processes -------------------------------------------------------------------------------------

    def _pids(self, node: str, process: str) -> list[int]:
        found = process_pids(self.plan.node(node), process)
        if not found:
            raise LabError(f"no running {process} on node {node}")
        return found

    def pause(self, node: str, process: str) -> Heal:
        pids = self._pids(node, process)
        netns.kill_pids(pids, signal.SIGSTOP)

        def heal() -> None:
            netns.kill_pids(pids, signal.SIGCONT)

        return _chain([heal], self._mark(node, f"pause {process}"))

    def kill(self, node: str, process: str) -> None:
        pids = self._pids(node, process)
        self.timeline.add(FAULT, node, f"kill {process}")
        netns.kill_pids(pids, signal.SIGKILL)


def vrrp_loss_rule(percent: int) -> str:
    """The input rule that drops `percent` % of VRRP packets: numgen draws 0..99 for each packet."""
    if percent == 100:
        return "ip protocol vrrp drop"  # nft refuses `numgen random mod 100 < 100`: 100 is out of 0..99
    return f"ip protocol vrrp numgen random mod 100 < {percent} drop"


def heartbeat_cut_rules(medium: str) -> tuple[list[str], list[str]]:
    """(input, output) rules of a heartbeat cut on `medium` (see Faults.heartbeat_cut)."""
    if medium == "ethernet":
        return (
            ["ip protocol vrrp drop", f"udp dport {HEARTBEAT_PORT} drop", f"ip saddr {HB_NET}.0/24 drop"],
            ["ip protocol vrrp drop", f"udp dport {HEARTBEAT_PORT} drop", f"ip daddr {HB_NET}.0/24 drop"],
        )
    if medium not in MEDIA:
        raise LabError(f"medium: one of {', '.join(MEDIA)} (got {medium!r})")
    # The agent's UDP heartbeat sockets are bound to their NIC (SO_BINDTODEVICE) and send every peer address
    # through each: the NIC, not the address, is the medium.
    dev = LINKS[medium]
    return [f'iifname "{dev}" udp dport {HEARTBEAT_PORT} drop'], [f'oifname "{dev}" udp dport {HEARTBEAT_PORT} drop']


def bridge_rules(there: NodePlan) -> tuple[list[str], list[str]]:
    """(input, output) rules that cut a node from `there`: by address, since VRRP goes to a multicast group."""
    addresses = "{ " + ", ".join((there.lan_ip, there.hb_ip, there.mgmt_ip)) + " }"
    return [f"ip saddr {addresses} drop"], [f"ip daddr {addresses} drop"]


def process_pids(node: NodePlan, process: str) -> list[int]:
    """The PIDs of one of a node's processes (keepalived: its parent and its VRRP child), from pid files."""
    if process == "keepalived":
        pids = [topology.keepalived_pid(node), topology.vrrp_pid(node)]
    elif process in ("sshd", "agent"):
        pids = [netns.read_pid(str(Path(node.dir, f"{process}.pid")))]
    else:
        raise LabError(f"process: one of {', '.join(PROCESSES)} (got {process!r})")
    return [p for p in pids if p is not None]


def _chain(heals: list[Heal], done: Callable[[], None]) -> Heal:
    def heal() -> None:
        for h in reversed(heals):
            h()
        done()

    return heal


def heal_all(plan: LabPlan, timeline: Timeline) -> list[str]:
    """Undo every fault the CLI verbs can leave behind in a running lab; returns what was undone."""
    undone: list[str] = []
    for node in plan.nodes:
        if not topology.node_powered(node):
            continue
        tables = run(["nft", "list", "tables"], ns=node.netns, check=False).stdout.split("\n")
        for line in tables:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "table" and parts[2].startswith("kalab_"):
                run(["nft", "delete", "table", parts[1], parts[2]], ns=node.netns, check=False)
                undone.append(f"{node.name}: nft {parts[1]} {parts[2]}")
        for dev in LINKS.values():
            run(["ip", "-n", node.netns, "link", "set", dev, "up"], check=False)
        for process in PROCESSES:
            netns.kill_pids(process_pids(node, process), signal.SIGCONT)
    for x, y, _, _ in topology.serial_links(plan):
        pid = netns.read_pid(str(Path(plan.dir, f"socat-{x}{y}.pid")))
        if pid is None or netns.gone(pid):
            topology.start_serial(plan, x, y)
            undone.append(f"serial {x}{y}")
    pid = topology.redis_pid(plan)
    if pid is None or netns.gone(pid):
        topology.start_redis(plan)
        undone.append("redis started")
    timeline.add(HEAL, "", "heal-all: " + (", ".join(undone) or "nothing to undo"))
    return undone
