"""Fencing in the lab: node a powers node b off through b's BMC (ipmi_sim) with the CLI, as an operator would.

`lab exec` runs `keepalived-arbiter fence ...` inside node a's namespace with the arbiter.toml the lab wrote for
it: the IPMI level reaches b's BMC over the management network, the SSH level b's sshd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from arbiter.lab import netns, topology
from arbiter.lab.lab import Lab

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed"),
]


def fence(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    cli = str(Path(lab.plan.python).with_name("keepalived-arbiter"))  # this venv's console script
    argv = [cli, "lab", "exec", "--lab", lab.plan.prefix, "a", "--", "keepalived-arbiter", "fence", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_node_a_powers_node_b_off_through_its_bmc(lab: Lab) -> None:
    status = fence(lab, "node-b", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "node-b: ON (read from ipmi 10.0.9.22" in status.stdout

    check = fence(lab, "node-b", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert [line.split(":")[0] for line in check.stdout.splitlines()] == [
        "level 1 ipmi 10.0.9.22",
        "level 2 ssh root@10.0.9.12",
    ]
    assert topology.node_powered(lab.plan.node("b"))  # check touched nothing

    keepalived_b = topology.keepalived_pid(lab.plan.node("b"))
    off = fence(lab, "node-b", "off", "--yes")
    assert off.returncode == 0, off.stdout + off.stderr
    assert "node-b is off: level 1" in off.stdout
    assert "proof: status OFF read from ipmi 10.0.9.22" in off.stdout
    assert not topology.node_powered(lab.plan.node("b"))
    assert keepalived_b is not None
    assert netns.gone(keepalived_b)  # the BMC's power-off took node b's processes with it

    after = fence(lab, "node-b", "status")
    assert after.returncode == 2, after.stdout + after.stderr
    assert "node-b: OFF" in after.stdout

    on = fence(lab, "node-b", "on", "--yes")
    assert on.returncode == 0, on.stdout + on.stderr
    assert fence(lab, "node-b", "status").returncode == 0
    lab.wait_holders("10.0.0.100", ["a"], 10)


def test_off_without_yes_touches_nothing(lab: Lab) -> None:
    refused = fence(lab, "node-b", "off")
    assert refused.returncode == 1
    assert "without --yes" in refused.stderr
    assert topology.node_powered(lab.plan.node("b"))
