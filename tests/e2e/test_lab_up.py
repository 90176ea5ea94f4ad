"""`keepalived-arbiter lab up` as an operator runs it: a lab kept up in one process, faults from other shells.

A power-off then a power-on of a node, each through the CLI (the node's BMC, ipmi_sim, runs the lab's chassis
script: a process other than `lab up`), must bring the node back exactly as its boot did: keepalived running
again in the node's namespace and BACKUP, the killed processes gone for good (not zombies of `lab up` whose PIDs
are still in their pid files: keepalived then refused to start, "daemon is already running"). Stopping `lab up`
leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from arbiter.lab import netns, topology
from arbiter.lab.topology import LAB_ROOT, LabPlan

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]

VIP = "10.0.0.100"
CLI = [sys.executable, "-m", "arbiter"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)


def exists(pid: int) -> bool:
    """The kernel still has the process, a zombie included."""
    return Path(f"/proc/{pid}").exists()


def state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def in_netns(pid: int, ns: str) -> bool:
    """Whether `pid` runs in the named network namespace (same namespace inode as /run/netns/NAME)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return False


def keepalived_log_since(plan: LabPlan, node: str, offset: int) -> str:
    return Path(plan.node(node).dir, "keepalived.log").read_bytes()[offset:].decode(errors="replace")


@pytest.fixture
def lab_up() -> Iterator[tuple[subprocess.Popen[str], LabPlan]]:
    """`lab up` in its own process; stopped by the test (Ctrl-C), or here (SIGTERM) if the test failed first."""
    proc = subprocess.Popen([*CLI, "lab", "up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("lab kal") and " is up " in line, line + proc.stdout.read()
        prefix = line.split()[1]
        yield proc, LabPlan.load(LAB_ROOT / prefix)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def power_cycle(plan: LabPlan, cycle: int) -> list[int]:
    """`lab power-off` then `lab power-on` of node b through the CLI; returns the PIDs it killed."""
    name, b = plan.prefix, plan.node("b")
    keepalived, vrrp = topology.keepalived_pid(b), topology.vrrp_pid(b)
    sshd = netns.read_pid(str(Path(b.dir, "sshd.pid")))
    assert keepalived is not None and vrrp is not None and sshd is not None
    killed = [keepalived, vrrp, sshd]

    off = cli("lab", "power-off", "--lab", name, "b")
    assert off.returncode == 0, off.stdout + off.stderr
    assert not topology.node_powered(b)
    # Gone for good: a zombie still has a PID, and keepalived reads "running" from a zombie's pid file.
    gone = wait(lambda: not any(exists(p) for p in killed), 5)
    assert gone, f"cycle {cycle}: b's killed processes left: " + ", ".join(f"{p} {state(p)}" for p in killed)

    log_offset = Path(b.dir, "keepalived.log").stat().st_size
    on = cli("lab", "power-on", "--lab", name, "b")
    assert on.returncode == 0, on.stdout + on.stderr
    assert topology.node_powered(b)

    def back() -> bool:
        pid, child = topology.keepalived_pid(b), topology.vrrp_pid(b)
        return (
            pid is not None
            and child is not None
            and pid != keepalived
            and state(pid) in ("S", "R")
            and state(child) in ("S", "R")
            and in_netns(pid, b.netns)
            and in_netns(child, b.netns)
            and "Entering BACKUP STATE" in keepalived_log_since(plan, "b", log_offset)
        )

    assert wait(back, 20), f"cycle {cycle}: no keepalived BACKUP again on b; its log since the power-on: " + (
        keepalived_log_since(plan, "b", log_offset)
    )
    assert "daemon is already running" not in keepalived_log_since(plan, "b", log_offset)
    # a (priority 150) keeps the VIP, b hears it: one master.
    status = cli("lab", "status", "--lab", name)
    assert status.stdout.startswith(f"{VIP}: a\n"), status.stdout + status.stderr
    return killed


def test_power_off_then_on_brings_keepalived_back_under_lab_up(lab_up: tuple[subprocess.Popen[str], LabPlan]) -> None:
    proc, plan = lab_up
    holds_a = wait(lambda: cli("lab", "status", "--lab", plan.prefix).stdout.startswith(f"{VIP}: a\n"), 20)
    assert holds_a, cli("lab", "status", "--lab", plan.prefix).stdout
    seen = power_cycle(plan, 1) + power_cycle(plan, 2)
    b, a = plan.node("b"), plan.node("a")
    seen += [p for p in (topology.keepalived_pid(b), topology.vrrp_pid(b), topology.keepalived_pid(a)) if p]
    namespaces = set(plan.namespaces)

    proc.send_signal(signal.SIGINT)  # Ctrl-C, as `lab up` says
    assert proc.wait(60) == 0
    assert not namespaces & set(netns.list_namespaces())
    assert not Path(plan.dir).exists()
    assert wait(lambda: not any(exists(p) for p in seen), 10), {p: state(p) for p in seen if exists(p)}
