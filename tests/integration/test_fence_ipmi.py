"""The IPMI driver (pyghmi) and the agent driver (fence_ipmilan) against the lab's real ipmi_sim BMC.

One BMC for the module (`reachable_bmc`: ipmi_sim in a namespace of its own, reached from this process over a
veth pair), stopped by PID and its namespace removed by name at the end. Needs root, openipmi, ipmitool and,
for the agent tests, fence-agents. The fake-agent tests at the end need none of that.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbiter.config import AgentFence, IpmiFence
from arbiter.lab.bench.fence import BmcLink, reachable_bmc
from arbiter.model import Power
from fencers import registry
from fencers.agent import AgentFencer
from fencers.base import FenceError, Fencer
from fencers.ipmi import IpmiFencer

pytestmark = pytest.mark.integration

TAG = f"t{os.getpid()}"[:10]
TIMEOUT = 2.0
SLACK = 0.5  # thread and process start-up on a busy machine
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool, package in (("ipmi_sim", "openipmi"), ("ipmitool", "ipmitool"), ("ip", "iproute2")):
        if shutil.which(tool, path=SBIN) is None:
            return f"{tool} not installed (Debian package {package})"
    return None


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _namespaces() -> list[str]:
    return [entry.name for entry in Path("/run/netns").glob("*")] if Path("/run/netns").is_dir() else []


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmcLink]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("pyghmi")
    with reachable_bmc(tmp_path_factory.mktemp("bmc"), TAG) as bmc_link:
        pid = bmc_link.bmc.pid
        assert pid is not None
        yield bmc_link
    assert not _alive(pid)
    assert bmc_link.netns not in _namespaces()


@pytest.fixture
def bmc(link: BmcLink) -> Iterator[BmcLink]:
    """The module's BMC, powered on and answering, whatever the previous test left."""
    pid = link.bmc.pid
    assert pid is not None
    os.kill(pid, signal.SIGCONT)
    done = link.bmc.ipmitool("chassis", "power", "on")
    assert done.returncode == 0, done.stderr
    yield link
    os.kill(pid, signal.SIGCONT)


@pytest.fixture
def ipmi(bmc: BmcLink) -> Iterator[IpmiFencer]:
    fencer = IpmiFencer(bmc.address, bmc.port, bmc.username.encode(), bmc.password.encode(), TIMEOUT)
    try:
        yield fencer
    finally:
        fencer.close()


def _chassis_log(link: BmcLink) -> str:
    return link.bmc.chassis_log_path.read_text()


def _fence_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fence: ")]


# --- IPMI driver (pyghmi) -------------------------------------------------------------------------------------


def test_status_reads_on(ipmi: IpmiFencer) -> None:
    assert ipmi.status("a") is Power.ON
    assert ipmi.last_error is None


def test_power_off_then_status_reads_off_and_the_bmc_ran_its_command(bmc: BmcLink, ipmi: IpmiFencer) -> None:
    bmc.power_off_marker.unlink(missing_ok=True)
    ipmi.power_off("a")
    assert ipmi.status("a") is Power.OFF
    assert bmc.bmc.power_state() is False
    assert bmc.power_off_marker.exists()
    assert "set power 0: done, power is 0" in _chassis_log(bmc)


def test_power_off_when_already_off_succeeds(bmc: BmcLink, ipmi: IpmiFencer) -> None:
    ipmi.power_off("a")
    bmc.power_off_marker.unlink()
    ipmi.power_off("a")
    assert ipmi.status("a") is Power.OFF
    assert not bmc.power_off_marker.exists()  # the chassis command did not run twice


def test_power_on(bmc: BmcLink, ipmi: IpmiFencer) -> None:
    ipmi.power_off("a")
    ipmi.power_on("a")
    assert ipmi.status("a") is Power.ON
    assert bmc.bmc.power_state() is True
    assert "set power 1: done, power is 1" in _chassis_log(bmc)


def test_check_logs_in_and_reads_power_without_changing_it(bmc: BmcLink, ipmi: IpmiFencer) -> None:
    before = _chassis_log(bmc)
    summary = ipmi.check("a")
    assert summary == f"ipmi {bmc.address}:{bmc.port}: logged in as admin; power on"
    new_lines = _chassis_log(bmc)[len(before) :]
    assert "get power" in new_lines
    assert "set power" not in new_lines


def test_calls_reuse_one_worker_and_its_session(ipmi: IpmiFencer) -> None:
    assert isinstance(ipmi, Fencer)
    ipmi.status("a")
    pid = ipmi.worker_pid
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert cmdline.split(b"\0")[1:3] == [b"-m", b"fencers.ipmi"]
    assert b"password" not in cmdline  # credentials go over the pipe
    ipmi.power_off("a")
    ipmi.status("a")
    assert ipmi.worker_pid == pid
    ipmi.end_session()
    assert ipmi.status("a") is Power.OFF  # logs in afresh in the same worker
    assert ipmi.worker_pid == pid
    ipmi.close()
    assert not _alive(pid)


def test_wrong_password_is_a_clear_error_within_a_second(bmc: BmcLink) -> None:
    fencer = IpmiFencer(bmc.address, bmc.port, b"admin", b"not-the-password", TIMEOUT)
    try:
        started = time.monotonic()
        with pytest.raises(FenceError, match=r"login refused: wrong user name or password") as caught:
            fencer.power_off("a")
        assert time.monotonic() - started < 1.0
        assert str(caught.value).startswith(f"ipmi {bmc.address}:{bmc.port} off: ")
        assert fencer.status("a") is Power.UNKNOWN
        assert fencer.last_error is not None and "wrong user name or password" in fencer.last_error
        assert bmc.bmc.power_state() is True
    finally:
        fencer.close()


def test_wrong_user_name_is_refused_too(bmc: BmcLink) -> None:
    fencer = IpmiFencer(bmc.address, bmc.port, b"nobody", bmc.password.encode(), TIMEOUT)
    try:
        with pytest.raises(FenceError, match=r"login refused: wrong user name or password"):
            fencer.check("a")
    finally:
        fencer.close()


def test_nothing_listening_gives_unknown_and_fence_error_within_the_timeout(bmc: BmcLink) -> None:
    fencer = IpmiFencer(bmc.address, bmc.port + 1, b"admin", b"password", TIMEOUT)
    try:
        started = time.monotonic()
        assert fencer.status("a") is Power.UNKNOWN
        assert TIMEOUT - 0.1 < time.monotonic() - started < TIMEOUT + SLACK
        assert fencer.last_error is not None and f"no answer within {TIMEOUT:g}s" in fencer.last_error
        assert fencer.worker_pid is None  # killed with its stuck session

        started = time.monotonic()
        with pytest.raises(FenceError, match=rf"off: no answer within {TIMEOUT:g}s"):
            fencer.power_off("a")
        assert time.monotonic() - started < TIMEOUT + SLACK
    finally:
        fencer.close()


def test_a_bmc_that_stops_answering_mid_session_then_recovers(bmc: BmcLink, ipmi: IpmiFencer) -> None:
    pid = bmc.bmc.pid
    assert pid is not None
    assert ipmi.status("a") is Power.ON  # a logged-in session, then silence
    worker = ipmi.worker_pid
    assert worker is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert ipmi.status("a") is Power.UNKNOWN
        assert time.monotonic() - started < TIMEOUT + SLACK
        assert not _alive(worker)  # the worker holding the stuck session is gone, by PID

        started = time.monotonic()
        with pytest.raises(FenceError, match="no answer within"):
            ipmi.check("a")
        assert time.monotonic() - started < TIMEOUT + SLACK
    finally:
        os.kill(pid, signal.SIGCONT)
    # The first call once the BMC answers again goes through: a new worker, a new login.
    started = time.monotonic()
    assert ipmi.status("a") is Power.ON, ipmi.last_error
    assert time.monotonic() - started < 1.0
    ipmi.power_off("a")
    assert ipmi.status("a") is Power.OFF
    deadline = time.monotonic() + 1.0
    while _fence_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _fence_threads() == []  # nothing left behind by the abandoned calls


def test_from_config_reads_the_password_file_as_bytes_without_its_newline(bmc: BmcLink, tmp_path: Path) -> None:
    secret = tmp_path / "bmc.pass"
    secret.write_text(f"{bmc.password}\n")
    secret.chmod(0o600)
    device = IpmiFence(driver="ipmi", host=bmc.address, port=bmc.port, username="admin", password_file=secret)
    fencer = registry.build(device, TIMEOUT)
    assert isinstance(fencer, IpmiFencer)
    try:
        assert (fencer.driver, fencer.device, fencer.observes_power) == ("ipmi", f"ipmi {bmc.address}:623", True)
        assert fencer.status("a") is Power.ON, fencer.last_error
    finally:
        fencer.close()

    missing = device.model_copy(update={"password_file": tmp_path / "absent"})
    with pytest.raises(FenceError, match=r"cannot read password_file .*absent"):
        registry.build(missing, TIMEOUT)


# --- agent driver with fence_ipmilan ----------------------------------------------------------------------------


def _ipmilan(bmc: BmcLink, password: str | None = None, timeout: float = 10.0) -> AgentFencer:
    if shutil.which("fence_ipmilan", path=SBIN) is None:
        pytest.skip("fence_ipmilan not installed (Debian package fence-agents)")
    options = {
        "ip": bmc.address,
        "ipport": str(bmc.port),
        "lanplus": "1",
        "cipher": "3",
        "username": bmc.username,
        "power_wait": "0",
    }
    return AgentFencer("fence_ipmilan", options, (password or bmc.password).encode(), timeout)


def test_agent_status_off_off_again_on_and_monitor(bmc: BmcLink) -> None:
    agent = _ipmilan(bmc)
    assert isinstance(agent, Fencer)
    assert (agent.driver, agent.observes_power) == ("agent", True)
    assert agent.device == f"agent fence_ipmilan {bmc.address}"
    assert agent.status("a") is Power.ON

    bmc.power_off_marker.unlink(missing_ok=True)
    agent.power_off("a")
    assert agent.status("a") is Power.OFF
    assert bmc.bmc.power_state() is False
    assert bmc.power_off_marker.exists()

    agent.power_off("a")  # already off: success
    assert agent.status("a") is Power.OFF

    agent.power_on("a")
    assert agent.status("a") is Power.ON
    assert agent.check("a") == f"agent fence_ipmilan {bmc.address}: monitor ok"
    assert agent.last_error is None


def test_agent_wrong_password_fails_with_the_agents_stderr(bmc: BmcLink) -> None:
    agent = _ipmilan(bmc, password="not-the-password")
    with pytest.raises(FenceError, match=r"fence_ipmilan .* off: exit 1: .*Failed") as caught:
        agent.power_off("a")
    assert "not-the-password" not in str(caught.value)
    assert agent.status("a") is Power.UNKNOWN
    assert bmc.bmc.power_state() is True


def test_agent_against_a_silent_bmc_is_killed_at_the_timeout(bmc: BmcLink) -> None:
    pid = bmc.bmc.pid
    assert pid is not None
    agent = _ipmilan(bmc, timeout=TIMEOUT)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert agent.status("a") is Power.UNKNOWN
        assert time.monotonic() - started < TIMEOUT + SLACK
        assert (
            agent.last_error
            == f"agent fence_ipmilan {bmc.address} status: no answer within {TIMEOUT:g}s (agent killed)"
        )
        # ipmitool, which the agent was running, went with it (its process group).
        assert [p for p in _processes_mentioning(bmc.address) if "ipmitool" in p] == []
    finally:
        os.kill(pid, signal.SIGCONT)
    assert agent.status("a") is Power.ON


def _processes_mentioning(text: str) -> list[str]:
    """Command lines (read-only look-up) of live processes that mention `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def test_agent_from_config(bmc: BmcLink, tmp_path: Path) -> None:
    if shutil.which("fence_ipmilan", path=SBIN) is None:
        pytest.skip("fence_ipmilan not installed (Debian package fence-agents)")
    secret = tmp_path / "agent.pass"
    secret.write_text(f"{bmc.password}\n")
    options = {"ip": bmc.address, "ipport": str(bmc.port), "lanplus": "1", "cipher": "3", "username": "admin"}
    device = AgentFence(driver="agent", agent="fence_ipmilan", options=options, password_file=secret)
    fencer = registry.build(device, 10.0)
    assert isinstance(fencer, AgentFencer)
    assert fencer.status("a") is Power.ON, fencer.last_error


# --- agent driver protocol, with a fake agent (no root needed) -----------------------------------------------

FAKE_AGENT = """#!/bin/sh
# Records how it was called, then behaves as the `rc_<action>` line of its stdin says.
input=$(cat)
printf '%s\\n' "$*" >"{dir}/argv"
printf '%s\\n' "$input" >"{dir}/stdin"
action=$(printf '%s\\n' "$input" | sed -n 's/^action=//p')
rc=$(printf '%s\\n' "$input" | sed -n "s/^rc_$action=//p")
if [ "$rc" = hang ]; then
    sleep 60 &
    echo $! >"{dir}/grandchild"
    echo $$ >"{dir}/child"
    wait
fi
echo "fake agent: $action failed on purpose" >&2
exit "${{rc:-0}}"
"""


def _fake_agent(tmp_path: Path, options: dict[str, str], timeout: float = 5.0) -> AgentFencer:
    script = tmp_path / "fence_fake"
    script.write_text(FAKE_AGENT.format(dir=tmp_path))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return AgentFencer("fence_fake", options, b"s3cret", timeout, path=str(tmp_path))


def test_agent_protocol_stdin_only_and_exit_codes(tmp_path: Path) -> None:
    agent = _fake_agent(tmp_path, {"ip": "10.0.9.12", "plug": "node-b", "rc_status": "2", "rc_off": "0"})
    assert agent.status("b") is Power.OFF
    assert (tmp_path / "argv").read_text() == "\n"  # nothing on the command line
    lines = (tmp_path / "stdin").read_text().splitlines()
    assert lines == ["action=status", "ip=10.0.9.12", "plug=node-b", "rc_status=2", "rc_off=0", "password=s3cret"]
    agent.power_off("b")
    assert (tmp_path / "stdin").read_text().splitlines()[0] == "action=off"


@pytest.mark.parametrize(("rc", "power"), [("0", Power.ON), ("2", Power.OFF), ("1", Power.UNKNOWN)])
def test_agent_status_codes(tmp_path: Path, rc: str, power: Power) -> None:
    assert _fake_agent(tmp_path, {"rc_status": rc}).status("b") is power


def test_agent_failing_action_raises_with_the_stderr_tail(tmp_path: Path) -> None:
    agent = _fake_agent(tmp_path, {"rc_off": "1", "rc_on": "3", "rc_monitor": "1"})
    with pytest.raises(FenceError, match=r"^agent fence_fake off: exit 1: fake agent: off failed on purpose$"):
        agent.power_off("b")
    with pytest.raises(FenceError, match=r"on: exit 3"):
        agent.power_on("b")
    with pytest.raises(FenceError, match=r"monitor: exit 1"):
        agent.check("b")


def test_agent_timeout_kills_the_agent_and_what_it_runs(tmp_path: Path) -> None:
    agent = _fake_agent(tmp_path, {"rc_off": "hang"}, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(FenceError, match=r"off: no answer within 1s \(agent killed\)"):
        agent.power_off("b")
    assert time.monotonic() - started < 1.0 + SLACK
    child = int((tmp_path / "child").read_text())
    grandchild = int((tmp_path / "grandchild").read_text())
    deadline = time.monotonic() + 2
    while (_alive(child) or _alive(grandchild)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(child)
    assert not _alive(grandchild)


def test_agent_missing_names_it_and_the_package(tmp_path: Path) -> None:
    with pytest.raises(
        FenceError, match=r"fence agent fence_nosuch not found in .*install the Debian package fence-agents"
    ):
        AgentFencer("fence_nosuch", {}, None, 5.0)
    device = AgentFence(driver="agent", agent="fence_nosuch")
    with pytest.raises(FenceError, match="fence_nosuch not found"):
        registry.build(device, 5.0)


@pytest.mark.parametrize("key", ["password", "passwd", "action", "password-script"])
def test_agent_refuses_options_the_driver_owns(tmp_path: Path, key: str) -> None:
    with pytest.raises(FenceError, match="set by the driver"):
        _fake_agent(tmp_path, {key: "x"})


def test_agent_refuses_line_breaks_in_options(tmp_path: Path) -> None:
    with pytest.raises(FenceError, match="line breaks"):
        _fake_agent(tmp_path, {"ip": "10.0.9.12\naction=on"})
