"""The lab's topology: namespaces, bridges, addresses, and the processes each part runs.

```
            switch namespace (bridges)             per node N (namespace PREFIX-N)
 br-lan  10.0.0.0/24   nodes eth0, client, gateway (.254 = reference IP), VIPs 10.0.0.100, .101
 br-hb   192.168.100.0/24  nodes eth1 (the dedicated heartbeat NIC)
 br-mg   10.0.9.0/24   nodes eth2 (.11+), witness redis (.1), BMCs (.21+)
 serial: one socat pty pair per node pair ("cable"), in the switch namespace
```

Every name starts with the lab's prefix so two labs can coexist; `LabPlan` (JSON in the lab directory) holds
everything needed to power a node off and on again from another process (the BMC's chassis script) and to
clean up after a crash (`lab clean`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from arbiter.lab import netns
from arbiter.lab.netns import LabError, run

LAB_ROOT = Path("/run/keepalived-arbiter-lab")
# The gates, on tmpfs as /run is on a real node: where /run is a disk (containers), every gate write would pay
# for an fsync that no real node pays, and the decision latency measured here would be the disk's.
GATE_ROOT = Path("/dev/shm/keepalived-arbiter-lab")
PREFIX_TAG = "kal"  # every lab namespace is named kal<4 hex>-<part>

LAN_NET, HB_NET, MGMT_NET = "10.0.0", "192.168.100", "10.0.9"
REFERENCE_IP = f"{LAN_NET}.254"
CLIENT_IP = f"{LAN_NET}.50"
WITNESS_IP = f"{MGMT_NET}.1"
VIPS = (f"{LAN_NET}.100", f"{LAN_NET}.101")
REDIS_PORT = 6379
SENTINEL_PORT = 26379
SENTINEL_PORTS = (SENTINEL_PORT, SENTINEL_PORT + 1, SENTINEL_PORT + 2)
SENTINEL_SERVICE = "arbiter"
REPLICA_PORT = 6381
NODE_NAMES = ("a", "b", "c")
PRIORITIES = (150, 100, 50)


@dataclass(frozen=True)
class LabSpec:
    nodes: int = 2
    advert_int: float = 1.0
    vrrp_version: int = 2
    instances: int = 1  # 2 = dual-instance: VI_1 prefers node a, VI_2 prefers node b
    nopreempt: bool = False
    sentinel: bool = False
    arbiter: bool = False  # an agent per node, gating keepalived through track_file + notify (issue 6)
    webhook: str | None = None  # [alerts] webhook URL written into every node's arbiter.toml
    webhook_secret: str | None = None  # its secret_file

    def check(self) -> None:
        if self.nodes not in (2, 3):
            raise LabError(f"nodes: 2 or 3 (got {self.nodes})")
        if self.vrrp_version not in (2, 3):
            raise LabError(f"vrrp-version: 2 or 3 (got {self.vrrp_version})")
        if self.vrrp_version == 2 and (self.advert_int < 1 or self.advert_int != int(self.advert_int)):
            raise LabError(f"advert-int: VRRPv2 takes whole seconds ≥ 1 (got {self.advert_int:g})")
        if self.vrrp_version == 3 and not 0.01 <= self.advert_int <= 40.95:
            raise LabError(f"advert-int: VRRPv3 takes 0.01 to 40.95 s (got {self.advert_int:g})")
        if self.instances not in (1, 2):
            raise LabError(f"instances: 1 or 2 (got {self.instances})")


@dataclass(frozen=True)
class NodePlan:
    name: str
    index: int
    netns: str
    bmc_netns: str
    lan_ip: str
    hb_ip: str
    mgmt_ip: str
    bmc_ip: str
    mac: str
    priority: int
    dir: str


@dataclass(frozen=True)
class LabPlan:
    prefix: str
    dir: str
    spec: LabSpec
    nodes: tuple[NodePlan, ...]
    switch_ns: str
    client_ns: str
    gateway_ns: str
    witness_ns: str
    vips: tuple[str, ...]
    python: str = sys.executable
    namespaces: tuple[str, ...] = ()

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise LabError(f"no node {name!r} in this lab (nodes: {', '.join(n.name for n in self.nodes)})")

    def save(self) -> None:
        Path(self.dir, "plan.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, lab_dir: Path) -> LabPlan:
        raw = json.loads((lab_dir / "plan.json").read_text())
        raw["spec"] = LabSpec(**raw["spec"])
        raw["nodes"] = tuple(NodePlan(**n) for n in raw["nodes"])
        for key in ("vips", "namespaces"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


def make_plan(spec: LabSpec, prefix: str | None = None) -> LabPlan:
    spec.check()
    prefix = prefix or f"{PREFIX_TAG}{secrets.token_hex(2)}"
    lab_dir = LAB_ROOT / prefix
    nodes = tuple(
        NodePlan(
            name=name,
            index=i,
            netns=f"{prefix}-{name}",
            bmc_netns=f"{prefix}-bmc{name}",
            lan_ip=f"{LAN_NET}.{i + 1}",
            hb_ip=f"{HB_NET}.{i + 1}",
            mgmt_ip=f"{MGMT_NET}.{11 + i}",
            bmc_ip=f"{MGMT_NET}.{21 + i}",
            mac=f"02:00:0a:00:00:{i + 1:02x}",
            priority=PRIORITIES[i],
            dir=str(lab_dir / name),
        )
        for i, name in enumerate(NODE_NAMES[: spec.nodes])
    )
    parts = [f"{prefix}-sw", f"{prefix}-client", f"{prefix}-gw", f"{prefix}-wit"]
    namespaces = (*parts, *(n.netns for n in nodes), *(n.bmc_netns for n in nodes))
    return LabPlan(
        prefix=prefix,
        dir=str(lab_dir),
        spec=spec,
        nodes=nodes,
        switch_ns=parts[0],
        client_ns=parts[1],
        gateway_ns=parts[2],
        witness_ns=parts[3],
        vips=VIPS[: spec.instances],
        namespaces=namespaces,
    )


# --- network -------------------------------------------------------------------------------------------


def _veth(plan: LabPlan, bridge: str, outer: str, ns: str, inner: str, cidr: str, *, mac: str | None = None) -> None:
    sw = plan.switch_ns
    run(["ip", "-n", sw, "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns])
    run(["ip", "-n", sw, "link", "set", outer, "master", bridge, "up"])
    if mac:
        run(["ip", "-n", ns, "link", "set", inner, "address", mac])
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", inner])
    run(["ip", "-n", ns, "link", "set", inner, "up"])


def build_network(plan: LabPlan) -> None:
    for ns in plan.namespaces:
        netns.add_namespace(ns)
    sw = plan.switch_ns
    for bridge in ("br-lan", "br-hb", "br-mg"):
        run(["ip", "-n", sw, "link", "add", bridge, "type", "bridge", "forward_delay", "0"])
        # No multicast snooping: VRRP's 224.0.0.18 must reach every port, as on a plain switch.
        run(["ip", "-n", sw, "link", "set", bridge, "type", "bridge", "mcast_snooping", "0"])
        run(["ip", "-n", sw, "link", "set", bridge, "up"])
    for node in plan.nodes:
        _veth(plan, "br-lan", f"{node.name}-lan", node.netns, "eth0", f"{node.lan_ip}/24", mac=node.mac)
        _veth(plan, "br-hb", f"{node.name}-hb", node.netns, "eth1", f"{node.hb_ip}/24")
        _veth(plan, "br-mg", f"{node.name}-mg", node.netns, "eth2", f"{node.mgmt_ip}/24")
        _veth(plan, "br-mg", f"bmc{node.name}", node.bmc_netns, "eth0", f"{node.bmc_ip}/24")
    _veth(plan, "br-lan", "client", plan.client_ns, "eth0", f"{CLIENT_IP}/24", mac="02:00:0a:00:00:32")
    _veth(plan, "br-lan", "gw", plan.gateway_ns, "eth0", f"{REFERENCE_IP}/24")
    _veth(plan, "br-mg", "wit", plan.witness_ns, "eth0", f"{WITNESS_IP}/24")


# --- processes -----------------------------------------------------------------------------------------


SOCKET_ENV = "KEEPALIVED_ARBITER_SOCKET"  # read by hooks/notify.py: where this node's agent listens


def gate_path(node: NodePlan, instance: str) -> Path:
    """The instance's gate (keepalived's track_file), as the node's arbiter.toml names it: under GATE_ROOT,
    in a directory named like the node's (lab prefix, node)."""
    return Path(gate_dir(node.dir), f"{instance}.gate")


def gate_dir(node_dir: str) -> Path:
    return GATE_ROOT.joinpath(*Path(node_dir).parts[-2:])


def agent_socket(node: NodePlan) -> Path:
    return Path(node.dir, "agent.sock")


def venv_bin(plan: LabPlan) -> Path:
    """The directory holding the lab's own interpreter and this package's console scripts."""
    return Path(plan.python).parent


def instance_names(plan: LabPlan) -> list[str]:
    return [f"VI_{i + 1}" for i in range(len(plan.vips))]


def keepalived_conf(plan: LabPlan, node: NodePlan, extra_instance: str = "", extra_global: str = "") -> str:
    """keepalived.conf of one node; with `spec.arbiter`, the three lines deploy/keepalived.conf.example adds:
    a weight-0 track_file per instance (the gate) and the notify hook."""
    spec = plan.spec
    blocks = [
        "global_defs {",
        f"    router_id {plan.prefix}-{node.name}",
        "    enable_script_security",
        "    script_user root",
        f"    vrrp_notify_fifo {node.dir}/notify.fifo",
        "    vrrp_garp_master_refresh 0",
        extra_global,
        "}",
    ]
    if spec.arbiter:
        for name in instance_names(plan):
            # init_file 1: fail closed; keepalived starting without a running agent takes no VIP.
            blocks += [
                f"track_file arbiter_{name} {{",
                f'    file "{gate_path(node, name)}"',
                "    init_file 1 overwrite",
                "}",
            ]
    arbiter_lines = [f'    notify "{venv_bin(plan) / "keepalived-arbiter-notify"}"'] if spec.arbiter else []
    for i, vip in enumerate(plan.vips):
        # dual-instance: VI_2's priorities are rotated so another node is its natural master.
        prio = PRIORITIES[(node.index - i) % len(plan.nodes)] if i else node.priority
        blocks += [
            f"vrrp_instance VI_{i + 1} {{",
            "    state BACKUP",
            "    interface eth0",
            f"    virtual_router_id {51 + i}",
            f"    priority {prio}",
            f"    advert_int {spec.advert_int:g}",
            f"    version {spec.vrrp_version}",
            *(["    nopreempt"] if spec.nopreempt else []),
            "    virtual_ipaddress {",
            f"        {vip}/24 dev eth0",
            "    }",
            *(["    track_file {", f"        arbiter_VI_{i + 1} weight 0", "    }"] if spec.arbiter else []),
            *arbiter_lines,
            extra_instance.replace("{instance}", f"VI_{i + 1}"),
            "}",
        ]
    return "\n".join(line for line in blocks if line) + "\n"


KEEPALIVED_PID_FILES = ("keepalived.pid", "vrrp.pid", "checkers.pid")


def start_keepalived(plan: LabPlan, node: NodePlan) -> int:
    d = Path(node.dir)
    for name in KEEPALIVED_PID_FILES:
        # keepalived refuses to start while a pid file names a live process, a zombie included.
        pid = netns.read_pid(str(d / name))
        if pid is not None and netns.gone(pid):
            (d / name).unlink(missing_ok=True)
    fifo = d / "notify.fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    conf = d / "keepalived.conf"
    if not conf.exists():
        conf.write_text(keepalived_conf(plan, node))
    log = open(d / "keepalived.log", "ab")  # noqa: SIM115 - handed to the child, closed below
    argv = [
        "keepalived",
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--vrrp",
        "--use-file",
        str(conf),
        "--pid",
        str(d / "keepalived.pid"),
        "--vrrp_pid",
        str(d / "vrrp.pid"),
        "--checkers_pid",
        str(d / "checkers.pid"),
    ]
    # The notify hook inherits keepalived's environment: this finds the node's own agent, no shim in between.
    env = {**os.environ, SOCKET_ENV: str(agent_socket(node))} if plan.spec.arbiter else None
    proc = subprocess.Popen(
        netns.in_ns(node.netns, argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )
    log.close()
    return proc.pid


def keepalived_pid(node: NodePlan) -> int | None:
    return netns.read_pid(str(Path(node.dir) / "keepalived.pid"))


def vrrp_pid(node: NodePlan) -> int | None:
    return netns.read_pid(str(Path(node.dir) / "vrrp.pid"))


def write_ssh_material(plan: LabPlan) -> None:
    """Host keys per node, one fencing key pair for the lab, known_hosts with every node's mgmt address."""
    keys = Path(plan.dir, "ssh")
    keys.mkdir(parents=True, exist_ok=True)
    fence_key = keys / "fence_ed25519"
    if not fence_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-fence", "-f", str(fence_key)])
    known = []
    for node in plan.nodes:
        host_key = Path(node.dir, "ssh_host_ed25519_key")
        if not host_key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", node.name, "-f", str(host_key)])
        pub = host_key.with_suffix(".pub").read_text().split()
        known.append(f"{node.mgmt_ip} {pub[0]} {pub[1]}")
        Path(node.dir, "authorized_keys").write_text(fence_key.with_suffix(".pub").read_text())
        Path(node.dir, "sshd_config").write_text(
            "\n".join(
                [
                    f"ListenAddress {node.mgmt_ip}",
                    "Port 22",
                    f"HostKey {host_key}",
                    f"PidFile {node.dir}/sshd.pid",
                    f"AuthorizedKeysFile {node.dir}/authorized_keys",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "",
                ]
            )
        )
    (keys / "known_hosts").write_text("\n".join(known) + "\n")


def start_sshd(node: NodePlan) -> int:
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    log = open(Path(node.dir) / "sshd.log", "ab")  # noqa: SIM115 - handed to the child, closed below
    argv = ["/usr/sbin/sshd", "-D", "-e", "-f", f"{node.dir}/sshd_config"]
    proc = subprocess.Popen(netns.in_ns(node.netns, argv), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc.pid


def start_redis(plan: LabPlan) -> int:
    """The witness Redis (the leases; with `spec.sentinel` the master Sentinel first knew), in the witness
    namespace."""
    return start_redis_server(plan, "witness", REDIS_PORT)


def start_witness(plan: LabPlan) -> list[int]:
    """The lease witness: one Redis; with `spec.sentinel` also a replica of it and three sentinels watching it as
    service `SENTINEL_SERVICE` (a quorum of 2, a master down after 1 s). Returns their PIDs."""
    pids = [start_redis(plan)]
    if plan.spec.sentinel:
        replica = ["--replicaof", WITNESS_IP, str(REDIS_PORT)]
        pids.append(start_redis_server(plan, "replica", REPLICA_PORT, replica))
        pids += [start_sentinel(plan, port) for port in SENTINEL_PORTS]
    return pids


def start_sentinel(plan: LabPlan, port: int) -> int:
    d = Path(plan.dir, f"sentinel-{port}")
    d.mkdir(parents=True, exist_ok=True)
    # Sentinel rewrites its config file: one each. Small timers keep a failover to a few seconds.
    (d / "sentinel.conf").write_text(
        f"port {port}\nbind {WITNESS_IP} 127.0.0.1\nprotected-mode no\ndir {d}\npidfile {d}/sentinel.pid\n"
        f"sentinel monitor {SENTINEL_SERVICE} {WITNESS_IP} {REDIS_PORT} 2\n"
        f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
        f"sentinel failover-timeout {SENTINEL_SERVICE} 2000\n"
        f"sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
    )
    argv = ["redis-sentinel", str(d / "sentinel.conf")]
    return _start_answering(plan, argv, d / "sentinel.log", port, f"redis-sentinel on port {port}")


def _start_answering(plan: LabPlan, argv: list[str], log_path: Path, port: int, what: str) -> int:
    """Start a Redis program in the witness namespace and return its PID once it answers PING on `port`."""
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    proc = subprocess.Popen(netns.in_ns(plan.witness_ns, argv), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    wait_for(
        lambda: run(["redis-cli", "-p", str(port), "ping"], ns=plan.witness_ns, check=False).stdout.strip() == "PONG",
        10,
        f"{what} answering PING in the witness namespace",
    )
    return proc.pid


def sentinel_master(plan: LabPlan) -> int | None:
    """The port of the Redis the first sentinel names master now (None: no answer)."""
    argv = ["redis-cli", "-p", str(SENTINEL_PORTS[0]), "SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE]
    words = run(argv, ns=plan.witness_ns, check=False).stdout.split()
    return int(words[1]) if len(words) == 2 and words[1].isdigit() else None


def start_redis_server(plan: LabPlan, name: str, port: int, extra: Sequence[str] = ()) -> int:
    """A redis-server without persistence in the witness namespace, in `plan.dir/name` (its pid file
    `redis.pid` there); returns once it answers PING."""
    d = Path(plan.dir, name)
    d.mkdir(parents=True, exist_ok=True)
    argv = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        f"{WITNESS_IP} 127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--dir",
        str(d),
        "--pidfile",
        str(d / "redis.pid"),
        *extra,
    ]
    return _start_answering(plan, argv, d / "redis.log", port, f"redis-server ({name})")


def redis_pid(plan: LabPlan) -> int | None:
    return netns.read_pid(str(Path(plan.dir, "witness", "redis.pid")))


def serial_links(plan: LabPlan) -> list[tuple[str, str, Path, Path]]:
    """One cable per node pair: (node, peer, node's pty path, peer's pty path)."""
    cables = []
    for i, x in enumerate(plan.nodes):
        for y in plan.nodes[i + 1 :]:
            cables.append((x.name, y.name, Path(x.dir, f"tty-{y.name}"), Path(y.dir, f"tty-{x.name}")))
    return cables


def start_serial(plan: LabPlan, x: str, y: str) -> int:
    cable = next(((nx, ny, px, py) for nx, ny, px, py in serial_links(plan) if {nx, ny} == {x, y}), None)
    if cable is None:
        raise LabError(f"no serial cable between {x} and {y}")
    nx, ny, px, py = cable
    log = open(Path(plan.dir, f"socat-{nx}{ny}.log"), "ab")  # noqa: SIM115 - handed to the child, closed below
    argv = ["socat", f"pty,raw,echo=0,link={px}", f"pty,raw,echo=0,link={py}"]
    proc = subprocess.Popen(netns.in_ns(plan.switch_ns, argv), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    wait_for(lambda: px.exists() and py.exists(), 5, f"socat pty pair {px} {py}")
    Path(plan.dir, f"socat-{nx}{ny}.pid").write_text(str(proc.pid))
    return proc.pid


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, LabError):
            pass
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:g}s waiting for {what}")


# --- power ---------------------------------------------------------------------------------------------


def observers_file(plan: LabPlan) -> Path:
    return Path(plan.dir, "observers.pids")


def register_observer(plan: LabPlan, pid: int) -> None:
    """Recorder processes live in node namespaces too; a node's power-off must not kill them."""
    with observers_file(plan).open("a") as f:
        f.write(f"{pid}\n")


def observers(plan: LabPlan) -> list[int]:
    try:
        return [int(x) for x in observers_file(plan).read_text().split()]
    except OSError:
        return []


def power_log(plan: LabPlan) -> Path:
    """`MONOTONIC off|on NODE` per line: when a BMC switched a node, whoever asked (scenario or fencing agent)."""
    return Path(plan.dir, "power.log")


def _log_power(plan: LabPlan, state: str, name: str) -> None:
    # The monotonic clock is the host's in every namespace: the lab puts these lines on its timeline as they are.
    with power_log(plan).open("a") as f:
        f.write(f"{time.monotonic():.6f} {state} {name}\n")


def read_power_log(plan: LabPlan) -> list[tuple[float, str, str]]:
    """(monotonic time, "off"|"on", node) per BMC power change, in the order they happened."""
    try:
        lines = power_log(plan).read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("off", "on"):
            try:
                found.append((float(parts[0]), parts[1], parts[2]))
            except ValueError:
                continue
    return found


def power_off_node(plan: LabPlan, name: str) -> None:
    """What pulling the plug looks like from the network: every process gone, no address, no carrier."""
    node = plan.node(name)
    # Carrier and addresses first: a real power cut takes the VIP off the wire at once. Killing keepalived
    # first left its VIP configured for the few ms until the flush: a dual master no real power-off has.
    devices = ("eth0", "eth1", "eth2")
    for dev in devices:
        run(["ip", "-n", node.netns, "link", "set", dev, "down"], check=False)
    for dev in devices:
        run(["ip", "-n", node.netns, "addr", "flush", "dev", dev], check=False)
    netns.kill_namespace_processes(node.netns, keep=observers(plan))
    for dev in devices:  # anything a dying process re-added
        run(["ip", "-n", node.netns, "addr", "flush", "dev", dev], check=False)
    # A power cut empties /run: keepalived must not find its old pid files at the next boot. A killed
    # keepalived stays a zombie until the lab reaps it, and keepalived then refuses to start ("daemon is
    # already running"): the node would never come back.
    for pid_file in KEEPALIVED_PID_FILES:
        Path(node.dir, pid_file).unlink(missing_ok=True)
    Path(node.dir, "power").write_text("off\n")
    _log_power(plan, "off", name)


def power_on_node(plan: LabPlan, name: str) -> None:
    node = plan.node(name)
    for dev, cidr in (("eth0", node.lan_ip), ("eth1", node.hb_ip), ("eth2", node.mgmt_ip)):
        run(["ip", "-n", node.netns, "link", "set", dev, "up"])
        run(["ip", "-n", node.netns, "addr", "replace", f"{cidr}/24", "dev", dev])
    start_node_processes(plan, node)
    Path(node.dir, "power").write_text("on\n")
    _log_power(plan, "on", name)


ON_BOOT = "on-boot"
SERVICE = "service"  # a workload started at every boot after the agent (arbiter.lab.chaos)


def start_node_processes(plan: LabPlan, node: NodePlan) -> list[int]:
    """What a node runs when it boots: sshd, keepalived, then the `on-boot` script (the arbiter's agent, when the
    lab has one), inside the node's namespace so that a power-off kills it with the rest. Returns their PIDs: the
    caller's children, for it to wait for (lab.Reaper)."""
    hook = Path(node.dir, ON_BOOT)
    if hook.exists():
        # keepalived's init_file (1: closed) rewrites the gates when it starts; the script waits for that, so
        # the agent's gates are never overwritten by keepalived's start. Stale gates from before a power-off
        # must not count.
        for name in instance_names(plan):
            gate_path(node, name).unlink(missing_ok=True)
    pids = [start_sshd(node), start_keepalived(plan, node)]
    agent = start_on_boot(node)
    service = start_service(node)
    return [*pids, *(p.pid for p in (agent, service) if p is not None)]


def start_on_boot(node: NodePlan) -> subprocess.Popen[bytes] | None:
    """Run the node's `on-boot` script (the arbiter's agent), if it has one, in the node's namespace."""
    return _start_hook(node, ON_BOOT)


def start_service(node: NodePlan) -> subprocess.Popen[bytes] | None:
    """Run the node's `service` script (a workload the chaos runner wrote), if it has one, in its namespace."""
    return _start_hook(node, SERVICE)


def _start_hook(node: NodePlan, name: str) -> subprocess.Popen[bytes] | None:
    hook = Path(node.dir, name)
    if hook.exists():
        log = open(Path(node.dir, f"{name}.log"), "ab")  # noqa: SIM115 - handed to the child, closed below
        proc = subprocess.Popen(
            netns.in_ns(node.netns, ["/bin/sh", str(hook)]),
            cwd=node.dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return proc
    return None


def node_powered(node: NodePlan) -> bool:
    try:
        return Path(node.dir, "power").read_text().strip() != "off"
    except OSError:
        return True


# --- teardown ------------------------------------------------------------------------------------------


def teardown(plan: LabPlan) -> None:
    """Kill every process in the lab's namespaces (by PID), delete the namespaces, remove the lab dir."""
    errors: list[str] = []
    for ns in plan.namespaces:
        try:
            netns.delete_namespace(ns)
        except LabError as exc:
            errors.append(str(exc))
    shutil.rmtree(plan.dir, ignore_errors=True)
    shutil.rmtree(GATE_ROOT / plan.prefix, ignore_errors=True)
    if errors:
        raise LabError("; ".join(errors))


def leftovers() -> list[str]:
    """Namespaces of labs whose process is gone (crashed runs)."""
    found = []
    for ns in netns.list_namespaces():
        prefix = ns.split("-", 1)[0]
        if ns.startswith(PREFIX_TAG) and len(prefix) == len(PREFIX_TAG) + 4:
            owner = netns.read_pid(str(LAB_ROOT / prefix / "owner.pid"))
            if owner is None or not Path(f"/proc/{owner}").exists():
                found.append(ns)
    return found


def clean() -> list[str]:
    removed = leftovers()
    for ns in removed:
        netns.delete_namespace(ns)
    for ns in removed:
        shutil.rmtree(LAB_ROOT / ns.split("-", 1)[0], ignore_errors=True)
        shutil.rmtree(GATE_ROOT / ns.split("-", 1)[0], ignore_errors=True)
    return removed
