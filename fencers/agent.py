"""The agent driver: any installed ClusterLabs `fence_*` agent (PDUs, iLO, Redfish, clouds), run as a child process.

The agent gets its options on stdin, one `key=value` a line (the fence-agents protocol: `action=`, the configured
options, `password=` from the password file), so no secret appears on a command line. Each run is bounded by the
driver's timeout: on expiry the agent's process group (it runs in a session of its own, led by its PID) is killed,
which also stops the tool it was running (ipmitool, ssh, curl…). Exit codes: `status` 0 = ON, 2 = OFF;
`off`, `on` and `monitor` 0 = done; anything else fails with the tail of what the agent wrote to stderr.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arbiter.model import Power
from fencers.base import FenceError, read_password

AGENT_PATH = "/usr/sbin:/usr/bin"
PACKAGE = "fence-agents"  # Debian's package of the ClusterLabs agents
# Keys the driver sets itself: a configured one would be ambiguous (action) or a secret in the config (password).
_RESERVED = frozenset({"action", "option", "password", "passwd", "password_script", "passwd_script"})
_STDERR_TAIL = 400  # characters of stderr kept in an error message
_STATUS_ON, _STATUS_OFF = 0, 2


class AgentFencer:
    """One device driven by one fence agent; `target` is not passed: set `plug` in the options if it needs one."""

    driver = "agent"
    observes_power = True

    def __init__(
        self, agent: str, options: Mapping[str, str], password: bytes | None, timeout: float, path: str = AGENT_PATH
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"agent timeout must be positive, not {timeout!r}")
        for key, value in options.items():
            if key.replace("-", "_") in _RESERVED:
                raise FenceError(f"{agent}: option {key!r} is set by the driver; put a password in password_file")
            if "=" in key or any(c in key + value for c in "\r\n\0"):
                raise FenceError(f"{agent}: option {key!r}: no '=' in keys, no line breaks or NUL anywhere")
        if password is not None and any(c in password for c in b"\r\n\0"):
            raise FenceError(f"{agent}: the password must be one line")
        binary = shutil.which(agent, path=path)
        if binary is None:
            raise FenceError(f"fence agent {agent} not found in {path}: install the Debian package {PACKAGE}")
        self.agent = agent
        self.binary = binary
        self.options = dict(options)
        self.timeout = timeout
        where = self.options.get("ip") or self.options.get("ipaddr") or self.options.get("plug")
        self.device = f"agent {agent}" + (f" {where}" if where else "")
        self.last_error: str | None = None  # why the latest call failed (status() only says UNKNOWN)
        self._password = password

    def __repr__(self) -> str:
        return f"AgentFencer({self.device}, timeout={self.timeout:g}s)"

    def power_off(self, target: str, timeout: float | None = None) -> None:
        self._require_success("off", timeout)

    def power_on(self, target: str, timeout: float | None = None) -> None:
        self._require_success("on", timeout)

    def status(self, target: str, timeout: float | None = None) -> Power:
        try:
            code, _ = self._run("status", timeout)
        except FenceError:
            return Power.UNKNOWN
        if code == _STATUS_ON:
            return Power.ON
        if code == _STATUS_OFF:
            return Power.OFF
        return Power.UNKNOWN

    def check(self, target: str) -> str:
        self._require_success("monitor")
        return f"{self.device}: monitor ok"

    def _require_success(self, action: str, timeout: float | None = None) -> None:
        code, _ = self._run(action, timeout)
        if code != 0:
            raise FenceError(self.last_error or f"{self.device} {action}: exit {code}")

    def _stdin(self, action: str) -> bytes:
        lines = [f"action={action}".encode()]
        lines += [f"{key}={value}".encode() for key, value in self.options.items()]
        if self._password is not None:
            lines.append(b"password=" + self._password)
        return b"\n".join(lines) + b"\n"

    def _run(self, action: str, timeout: float | None = None) -> tuple[int, str]:
        """Run the agent with `action`; (exit code, stderr). FenceError if it cannot start or outlives `timeout`
        (default `self.timeout`; the agent and what it runs are killed then, so nothing more reaches the device).

        A non-zero exit sets `last_error` (status 2 aside) but is returned, not raised: what it means depends on
        the action.
        """
        label = f"{self.device} {action}"
        bound = self.timeout if timeout is None else timeout
        if bound <= 0:
            self.last_error = f"{label}: not run: no time left before the deadline"
            raise FenceError(self.last_error)
        try:
            proc = subprocess.Popen(
                [self.binary],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "PYTHONWARNINGS": "ignore"},
                start_new_session=True,  # its own process group, so a timeout can stop what it runs too
            )
        except OSError as exc:
            self.last_error = f"{label}: cannot run {self.binary}: {exc.strerror or exc}"
            raise FenceError(self.last_error) from exc
        try:
            _, err = proc.communicate(self._stdin(action), timeout=bound)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            self.last_error = f"{label}: no answer within {bound:.3g}s (agent killed)"
            raise FenceError(self.last_error) from None
        except BaseException:
            _kill_group(proc)
            raise
        stderr = err.decode(errors="replace").strip()
        code = proc.returncode
        if code == 0 or (action == "status" and code == _STATUS_OFF):
            self.last_error = None
        else:
            tail = stderr[-_STDERR_TAIL:] or "nothing on stderr"
            self.last_error = f"{label}: exit {code}: {tail}"
        return code, stderr


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the agent's process group (its PGID is its PID: start_new_session) and reap the agent."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)


def from_config(device: Any, timeout: float) -> AgentFencer:
    """The driver for an `arbiter.config.AgentFence`; finds the agent and reads the password file now."""
    password = None
    if device.password_file is not None:
        password = read_password(Path(device.password_file), f"agent {device.agent}")
    return AgentFencer(device.agent, device.options, password, timeout)
