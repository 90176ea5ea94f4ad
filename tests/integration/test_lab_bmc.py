"""The lab's BMC: a real ipmi_sim in a network namespace whose chassis power runs the lab's commands.

Needs root (network namespaces) and Debian's openipmi (ipmi_sim) and ipmitool. Every test's BMC is stopped by
PID and the namespace removed even when a test fails; the last test checks that nothing was left behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbiter.lab.bmc import CHASSIS_LOG, Bmc, BmcSpec

pytestmark = pytest.mark.integration

NS = f"kbmc{os.getpid()}"
ADDR = "10.0.9.21"
PORT = 623
STARTED_PIDS: list[int] = []


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool, package in (("ipmi_sim", "openipmi"), ("ipmitool", "ipmitool"), ("ip", "iproute2")):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{tool} not installed (Debian package {package})"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    """A process with this PID exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[1][:1] != "Z"


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        _ip("netns", "add", NS)
        _ip("-n", NS, "link", "set", "lo", "up")
        # The BMC address on lo: no dummy/veth needed when ipmitool runs in the BMC's own namespace.
        _ip("-n", NS, "addr", "add", f"{ADDR}/24", "dev", "lo")
        yield NS
    finally:
        _ip("netns", "del", NS, check=False)
    assert NS not in _namespaces()


def _spec(workdir: Path, ns: str, port: int = PORT, off: list[str] | None = None) -> BmcSpec:
    return BmcSpec(
        node="a",
        netns=ns,
        address=ADDR,
        port=port,
        username="admin",
        password="password",
        workdir=workdir,
        power_off_cmd=off or ["touch", str(workdir / "off-marker")],
        power_on_cmd=["touch", str(workdir / "on-marker")],
    )


@pytest.fixture
def bmc(netns: str, tmp_path: Path) -> Iterator[Bmc]:
    b = Bmc(_spec(tmp_path / "bmc-a", netns))
    try:
        b.start(timeout=10)
        assert b.pid is not None
        STARTED_PIDS.append(b.pid)
        yield b
    finally:
        b.stop()
    assert b.pid is None
    assert [pid for pid in STARTED_PIDS if _alive(pid)] == []


def test_power_off_and_on_run_the_lab_commands(bmc: Bmc) -> None:
    workdir = bmc.spec.workdir
    status = bmc.ipmitool("chassis", "power", "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == "Chassis Power is on"
    assert bmc.power_state() is True

    off = bmc.ipmitool("chassis", "power", "off")
    assert off.returncode == 0, off.stderr
    assert (workdir / "off-marker").exists()
    assert bmc.power_state() is False
    assert bmc.ipmitool("chassis", "power", "status").stdout.strip() == "Chassis Power is off"

    # Off again: already off, the command does not run a second time.
    (workdir / "off-marker").unlink()
    assert bmc.ipmitool("chassis", "power", "off").returncode == 0
    assert not (workdir / "off-marker").exists()

    on = bmc.ipmitool("chassis", "power", "on")
    assert on.returncode == 0, on.stderr
    assert (workdir / "on-marker").exists()
    assert bmc.power_state() is True
    assert bmc.ipmitool("chassis", "power", "status").stdout.strip() == "Chassis Power is on"

    log = (workdir / CHASSIS_LOG).read_text()
    assert "set power 0: done" in log
    assert "set power 0: already 0" in log
    assert "set power 1: done" in log


def test_wrong_password_is_refused_quickly(bmc: Bmc) -> None:
    argv = bmc.ipmitool_argv("chassis", "power", "off")
    argv[argv.index("-P") + 1] = "wrong"
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode != 0
    assert time.monotonic() - started < 3.0
    assert bmc.power_state() is True
    assert not (bmc.spec.workdir / "off-marker").exists()


def test_pyghmi_reads_power_state(bmc: Bmc) -> None:
    pytest.importorskip("pyghmi")
    code = (
        "import json, os\n"
        "from pyghmi.ipmi import command\n"
        f"c = command.Command(bmc={ADDR!r}, userid=b'admin', password=b'password', port={PORT})\n"
        "print(json.dumps(c.get_power()), flush=True)\n"
        "os._exit(0)\n"  # pyghmi's session thread must not hold the interpreter open
    )
    done = subprocess.run(
        ["ip", "netns", "exec", bmc.spec.netns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=20,  # pyghmi has no per-call timeout: the subprocess is the hard deadline
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"powerstate": "on"}


def test_failing_power_command_leaves_power_on_and_fails_the_request(netns: str, tmp_path: Path) -> None:
    b = Bmc(_spec(tmp_path / "bmc-broken", netns, port=PORT + 1, off=["sh", "-c", "echo no-power-cut; exit 3"]))
    try:
        b.start(timeout=10)
        assert b.pid is not None
        STARTED_PIDS.append(b.pid)
        done = b.ipmitool("chassis", "power", "off")
        assert done.returncode != 0
        assert b.power_state() is True
        assert b.ipmitool("chassis", "power", "status").stdout.strip() == "Chassis Power is on"
        log = (b.spec.workdir / CHASSIS_LOG).read_text()
        assert "no-power-cut" in log
        assert "command failed with exit 3" in log
    finally:
        b.stop()


def test_start_failure_names_the_log_and_leaves_nothing_running(netns: str, tmp_path: Path) -> None:
    spec = _spec(tmp_path / "bmc-unbound", netns)
    b = Bmc(dataclasses.replace(spec, address="10.0.8.99"))  # not an address of the namespace
    with pytest.raises(RuntimeError, match=r"ipmi_sim\.log"):
        b.start(timeout=5)
    assert b.pid is None
    b.stop()  # idempotent


def test_stop_kills_by_pid_and_is_idempotent(bmc: Bmc) -> None:
    pid = bmc.pid
    assert pid is not None
    assert _alive(pid)
    bmc.stop()
    assert bmc.pid is None
    assert not _alive(pid)
    bmc.stop()


def test_nothing_left_behind(netns: str) -> None:
    """Runs last in this module: every BMC started above is gone (the namespace goes at module teardown)."""
    assert STARTED_PIDS
    assert [pid for pid in STARTED_PIDS if _alive(pid)] == []
    assert netns in _namespaces()


def test_spec_rejects_a_workdir_ipmi_sim_cannot_run_from(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shell-safe"):
        _spec(tmp_path / "bmc a", "ns")
