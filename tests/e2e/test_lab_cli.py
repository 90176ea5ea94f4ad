"""The lab's CLI verbs against a running lab, the root check, and `lab clean` after a crashed run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arbiter.cli import main
from arbiter.lab import netns, topology
from arbiter.lab.faults import process_pids
from arbiter.lab.lab import Lab
from arbiter.lab.topology import LabSpec

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]


def test_fault_verbs_status_and_heal_on_a_running_lab(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    name = lab.plan.prefix
    assert main(["lab", "vrrp-cut", "--lab", name]) == 0
    lab.wait_holders("10.0.0.100", ["a", "b"], 10)
    assert main(["lab", "status", "--lab", name]) == 0
    assert "10.0.0.100: a b" in capsys.readouterr().out
    assert main(["lab", "serial-cut", "--lab", name]) == 0
    assert main(["lab", "pause", "--lab", name, "b", "keepalived"]) == 0
    paused = process_pids(lab.plan.node("b"), "keepalived")
    assert len(paused) == 2  # keepalived's parent and its VRRP child
    # Signals are delivered asynchronously: wait for the stopped state (wait_for raises on timeout).
    topology.wait_for(lambda: all(_state(pid) == "T" for pid in paused), 5, "keepalived stopped")
    assert main(["lab", "heal", "--lab", name]) == 0
    topology.wait_for(lambda: not any(_state(pid) == "T" for pid in paused), 5, "keepalived continued")
    out = capsys.readouterr().out
    assert "nft ip kalab_" in out
    assert "serial ab" in out
    lab.wait_holders("10.0.0.100", ["a"], 10)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_power_off_and_on_through_the_bmc(lab: Lab) -> None:
    name = lab.plan.prefix
    assert main(["lab", "power-off", "--lab", name, "a"]) == 0
    lab.wait_holders("10.0.0.100", ["b"], 10)
    assert not topology.node_powered(lab.plan.node("a"))
    assert main(["lab", "power-on", "--lab", name, "a"]) == 0
    lab.wait_holders("10.0.0.100", ["a"], 15)  # priority 150 preempts again


def test_unknown_node_is_named(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "isolate", "--lab", lab.plan.prefix, "z"]) == 1
    assert "no node 'z'" in capsys.readouterr().err


def test_clean_removes_a_crashed_lab() -> None:
    plan = topology.make_plan(LabSpec())
    Path(plan.dir).mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    Path(plan.dir, "owner.pid").write_text(str(dead.pid))  # the owner is gone: a crashed run
    try:
        topology.build_network(plan)
        assert set(plan.namespaces) <= set(netns.list_namespaces())
        assert main(["lab", "clean"]) == 0
        assert not set(plan.namespaces) & set(netns.list_namespaces())
        assert not Path(plan.dir).exists()
    finally:
        topology.teardown(plan)


def test_clean_leaves_a_live_lab_alone(lab: Lab) -> None:
    assert main(["lab", "clean"]) == 0
    assert set(lab.plan.namespaces) <= set(netns.list_namespaces())


def test_lab_refuses_without_root() -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "arbiter",
            "lab",
            "clean",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    if "Permission denied" in done.stderr and "lab:" not in done.stderr:
        pytest.skip(f"the interpreter is not readable by nobody here: {done.stderr.strip()[:200]}")
    assert done.returncode == 1, done.stderr
    assert "the lab needs root" in done.stderr
