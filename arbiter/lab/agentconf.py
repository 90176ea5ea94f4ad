"""The arbiter's files on each lab node, written the way an operator would write them on a real node.

Per node directory: `arbiter.toml` (every kind of evidence and both fencing levels: IPMI to the peer's BMC,
SSH power-off to the peer's management address), `heartbeat.key` (one secret shared by the nodes, mode 0600),
`ipmi.pass` (the BMCs' password, 0600) and a `state/` directory. Lab node `a` is arbiter node `node-a`.
`keepalived-arbiter lab exec --lab NAME a -- keepalived-arbiter fence node-b status` runs a command on node a
with this config as its default (`KEEPALIVED_ARBITER_CONFIG`).

With `LabSpec.arbiter`, each node also gets `on-boot`: the script the node runs at every boot (after sshd and
keepalived, inside its namespace) to start the agent, `keepalived-arbiter run -c arbiter.toml`, with its PID in
`agent.pid` and its output (one JSON line per decision) appended to `agent.log`.
"""

from __future__ import annotations

import os
import secrets
import shlex
from pathlib import Path

from arbiter.lab import topology
from arbiter.lab.topology import LabPlan, NodePlan

CONFIG = "arbiter.toml"
AGENT_LOG = "agent.log"
AGENT_PID = "agent.pid"
HEARTBEAT_PORT = 6941
# The node that should lose a no-lease fence race waits longer: node a (highest priority) fences first.
LEASE_TTL_MS = 3000  # every lab node's lease TTL
RACE_DELAY_MS = {"a": 0, "b": 2000, "c": 4000}


def arbiter_name(node: NodePlan) -> str:
    return f"node-{node.name}"


def config_path(node: NodePlan) -> Path:
    return Path(node.dir, CONFIG)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def _sentinel_table() -> list[str]:
    addresses = [f"{topology.WITNESS_IP}:{port}" for port in topology.SENTINEL_PORTS]
    return ["[lease.sentinel]", f"addresses = {_toml_list(addresses)}", f'service = "{topology.SENTINEL_SERVICE}"', ""]


def arbiter_config(plan: LabPlan, node: NodePlan) -> str:
    spec = plan.spec
    keys = Path(plan.dir, "ssh")
    lines = [
        f"# keepalived-arbiter config of lab node {node.name} ({plan.prefix}); written by the lab",
        "[node]",
        f'name = "{arbiter_name(node)}"',
        f'cluster = "{plan.prefix}"',
        f'state_dir = "{node.dir}/state"',
        "",
    ]
    for peer in plan.nodes:
        if peer is node:
            continue
        lines += [
            "[[peer]]",
            f'name = "{arbiter_name(peer)}"',
            f"heartbeat_addresses = {_toml_list([peer.lan_ip, peer.hb_ip])}",
            "fence = [",
            f'    {{ driver = "ipmi", level = 1, host = "{peer.bmc_ip}", username = "admin", '
            f'password_file = "{node.dir}/ipmi.pass" }},',
            f'    {{ driver = "ssh", level = 2, host = "{peer.mgmt_ip}", user = "root", '
            f'key_file = "{keys}/fence_ed25519", known_hosts = "{keys}/known_hosts" }},',
            "]",
            "",
        ]
    advert_ms = round(spec.advert_int * 1000)
    for i, vip in enumerate(plan.vips):
        priority = topology.PRIORITIES[(node.index - i) % len(plan.nodes)] if i else node.priority
        lines += [
            "[[instance]]",
            f'name = "VI_{i + 1}"',
            f'vip = ["{vip}/24"]',
            'interface = "eth0"',
            f'track_file = "{topology.gate_path(node, f"VI_{i + 1}")}"',
            f"priority = {priority}",
            f"virtual_router_id = {51 + i}",
            f"advert_int_ms = {advert_ms}",
            f"vrrp_version = {spec.vrrp_version}",
            f"nopreempt = {'true' if spec.nopreempt else 'false'}",
            "",
        ]
    serial = [str(mine) for x, y, mine, _ in _cables(plan, node)]
    interval = min(200, max(20, advert_ms // 5))
    lines += [
        "[reference]",
        f'addresses = ["{topology.REFERENCE_IP}"]',
        "quorum = 1",
        "interval_ms = 1000",
        "timeout_ms = 500",
        "",
        "[lease]",
        *([] if spec.sentinel else [f'redis_url = "redis://{topology.WITNESS_IP}:{topology.REDIS_PORT}/0"']),
        f"ttl_ms = {LEASE_TTL_MS}",
        "renew_ms = 1000",
        "timeout_ms = 300",
        "safety_ms = 500",
        "",
        *(_sentinel_table() if spec.sentinel else []),
        "[heartbeat]",
        f"port = {HEARTBEAT_PORT}",
        f"interval_ms = {interval}",
        f"deadtime_ms = {max(1000, 5 * interval)}",
        f'key_file = "{node.dir}/heartbeat.key"',
        'udp = [{ interface = "eth0" }, { interface = "eth1" }]',
        "serial = [" + ", ".join(f'{{ device = "{device}" }}' for device in serial) + "]",
        "",
        "[fencing]",
        f"delay_ms = {RACE_DELAY_MS.get(node.name, 0)}",
        "power_timeout_ms = 10000",
        "confirm_ms = 5000",
        'on_failure = "close"',
        "",
        "[api]",
        f'socket = "{node.dir}/agent.sock"',
        'metrics = "127.0.0.1:9687"',
        "",
        "[keepalived]",
        f'config = "{node.dir}/keepalived.conf"',
        "",
    ]
    if spec.webhook is not None:
        secret = f', secret_file = "{spec.webhook_secret}"' if spec.webhook_secret else ""
        lines += ["[alerts]", f'webhooks = [{{ url = "{spec.webhook}"{secret}, retry_min_ms = 100 }}]', ""]
    return "\n".join(lines)


def _cables(plan: LabPlan, node: NodePlan) -> list[tuple[str, str, Path, Path]]:
    """This node's serial cables, each as (node, peer, this node's pty, the peer's pty)."""
    mine = []
    for x, y, px, py in topology.serial_links(plan):
        if x == node.name:
            mine.append((x, y, px, py))
        elif y == node.name:
            mine.append((y, x, py, px))
    return mine


def write_agent_files(plan: LabPlan) -> None:
    key = secrets.token_hex(32) + "\n"
    for node in plan.nodes:
        d = Path(node.dir)
        Path(d, "state").mkdir(parents=True, exist_ok=True)
        for name, text in (("heartbeat.key", key), ("ipmi.pass", "password\n")):
            path = d / name
            # Created 0600 from the start: the agent refuses secrets readable by group or others.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        config_path(node).write_text(arbiter_config(plan, node))
        if plan.spec.arbiter:
            Path(d, topology.ON_BOOT).write_text(on_boot_script(plan, node))


def on_boot_script(plan: LabPlan, node: NodePlan) -> str:
    """Start the node's agent once keepalived has written its gates (init_file 1: closed), so that keepalived's
    start-up never overwrites what the agent wrote (an agent restart finds the gates there and starts at once)."""
    q = shlex.quote
    gates = " && ".join(f"[ -s {q(str(topology.gate_path(node, name)))} ]" for name in topology.instance_names(plan))
    agent = topology.venv_bin(plan) / "keepalived-arbiter"
    return "\n".join(
        [
            "#!/bin/sh",
            f"# lab node {node.name}: starts keepalived-arbiter in this node's namespace; written by the lab",
            f"cd {q(node.dir)} || exit 1",
            "i=0",
            f"until {gates}; do",
            "    i=$((i + 1)); [ $i -gt 100 ] && break",
            "    sleep 0.05",
            "done",
            # exec: the shell's PID becomes the agent's, so agent.pid names the agent itself.
            f"echo $$ > {AGENT_PID}",
            "export PYTHONUNBUFFERED=1",
            # The scheduling the shipped systemd unit gives the agent (CPUSchedulingPolicy=rr, reset on fork).
            f"exec chrt --rr --reset-on-fork 1 {q(str(agent))} run -c {q(str(config_path(node)))} >> {AGENT_LOG} 2>&1",
            "",
        ]
    )
