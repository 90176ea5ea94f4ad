"""The IPMI driver: power off, power on and read power through a BMC over IPMI 2.0 lanplus, with pyghmi.

pyghmi runs in a worker process, one per fencing device, that this module starts on the driver's first call and talks to
over a pipe (one JSON line each way per call; credentials go over the pipe, never on a command line). Why a
process: pyghmi has no per-call timeout, retries a silent BMC for 5 to 30 s, and shares one session per BMC
across the whole process; a call abandoned on a deadline leaves that session mid-command, and the next call
queues behind it (measured: up to 9 s after the BMC answers again). So every call runs under
`fencers.base.within(timeout)`, and a call that misses its deadline kills the worker by PID: the next call starts
a fresh one (about 0.1 s) and logs in afresh. No thread or socket outlives a hung BMC. The bound covers the wait
for the per-BMC lock too, and a caller may shorten it per call (`timeout=`, what is left of a fence's deadline):
once it has passed the worker is dead, so pyghmi sends nothing more (in particular not the power-off that
`set_power` sends only after its own status read was answered).

Sessions: inside the worker, pyghmi keeps the session while it is used at least every ~45 s, so the status
polls that follow a power-off reuse the power-off's login (one round trip each); the first call after a quiet
spell logs in again. Credentials are bytes: pyghmi hangs a second `Command` with str credentials to one BMC.

The worker also fixes a lost wake-up in pyghmi 1.6 (`_no_lost_wakeup`) that stalled about 1 call in 100 for
0.5-1 s against a fast BMC. `python -m fencers.ipmi` is the worker; it exits when its stdin closes (the agent
exited).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from arbiter.model import Power
from fencers.base import FenceError, read_password, within

# What pyghmi says when the BMC refuses the user name or the password (RAKP2 status, RAKP2 HMAC check).
_REFUSED_LOGIN = ("Incorrect password", "Unauthorized name")
_OPS = ("status", "off", "on", "logout")


class IpmiFencer:
    """One BMC, reached over the network with IPMI 2.0 (RMCP+, lanplus); the whole node is its one target."""

    driver = "ipmi"
    observes_power = True

    def __init__(self, host: str, port: int, username: bytes, password: bytes, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"IPMI timeout must be positive, not {timeout!r}")
        self.host = host
        self.port = port
        self.device = f"ipmi {host}:{port}"
        self.timeout = timeout
        self.last_error: str | None = None  # why the latest call failed (status() only says UNKNOWN)
        self._username = username
        self._password = password
        self._worker: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # one call at a time per BMC, as pyghmi's session would anyway

    def __repr__(self) -> str:
        pid = self.worker_pid
        return f"IpmiFencer({self.device}, timeout={self.timeout:g}s, worker={pid})"

    @property
    def worker_pid(self) -> int | None:
        """PID of the running pyghmi worker; None before the first call, after close() or a killed call."""
        worker = self._worker
        return worker.pid if worker is not None and worker.poll() is None else None

    def power_off(self, target: str, timeout: float | None = None) -> None:
        """Chassis power off, hard (no OS shutdown); already off is success. Returns once the BMC accepted it."""
        self._call("off", timeout=timeout)

    def power_on(self, target: str, timeout: float | None = None) -> None:
        self._call("on", timeout=timeout)

    def status(self, target: str, timeout: float | None = None) -> Power:
        try:
            state = self._call("status", timeout=timeout)
        except FenceError:
            return Power.UNKNOWN
        if state == "on":
            return Power.ON
        if state == "off":
            return Power.OFF
        self.last_error = f"{self.device} status: unexpected power state {state!r}"
        return Power.UNKNOWN

    def check(self, target: str) -> str:
        state = self._call("status", what="check")
        return f"{self.device}: logged in as {self._username.decode(errors='replace')}; power {state}"

    def end_session(self) -> None:
        """Log out of the BMC: the next call logs in afresh (the state after a quiet spell). Raises FenceError."""
        if self.worker_pid is not None:
            self._call("logout")

    def close(self) -> None:
        """Stop the worker (by PID); a later call starts a new one."""
        with self._lock:
            self._stop_worker()

    def _call(self, op: str, what: str | None = None, timeout: float | None = None) -> str | None:
        """Run `op` in the worker within `timeout` (default `self.timeout`), the wait for the lock included,
        starting the worker if needed; its answer, or FenceError."""
        label = f"{self.device} {what or op}"
        bound = self.timeout if timeout is None else timeout
        started = time.monotonic()
        if bound <= 0:
            self.last_error = f"{label}: not sent: no time left before the deadline"
            raise FenceError(self.last_error)
        if not self._lock.acquire(timeout=bound):
            self.last_error = f"{label}: not sent: another call to this BMC is still running after {bound:.3g}s"
            raise FenceError(self.last_error)
        try:
            if self.worker_pid is None:
                self._stop_worker()  # reap one that exited on its own
                self._worker = self._start_worker(label)
            worker = self._worker
            assert worker is not None
            remaining = max(0.001, bound - (time.monotonic() - started))
            try:
                answer = within(remaining, label, lambda: _request(worker, {"op": op}))
            except FenceError as exc:
                message = str(exc)
                if worker.poll() is None:  # no answer in time, not a dead worker
                    message = f"{label}: no answer within {bound:.3g}s (pyghmi worker {worker.pid} killed)"
                # The worker may hold a session stuck mid-command: never hand it another call.
                self._stop_worker()
                raise FenceError(message) from exc
        except FenceError as exc:
            self.last_error = str(exc)
            raise
        finally:
            self._lock.release()
        if not answer.get("ok"):
            self.last_error = f"{label}: {answer.get('error') or 'failed'}"
            raise FenceError(self.last_error)
        self.last_error = None
        power: str | None = answer.get("power")
        return power

    def _start_worker(self, label: str) -> subprocess.Popen[bytes]:
        try:
            worker = subprocess.Popen(
                [sys.executable, "-m", "fencers.ipmi"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,  # no terminal signals: it ends when the agent closes its stdin
            )
        except OSError as exc:
            raise FenceError(f"{label}: cannot start the pyghmi worker: {exc.strerror or exc}") from exc
        hello = {
            "host": self.host,
            "port": self.port,
            "username": self._username.hex(),
            "password": self._password.hex(),
        }
        assert worker.stdin is not None
        try:
            worker.stdin.write(json.dumps(hello).encode() + b"\n")
            worker.stdin.flush()
        except OSError as exc:
            self._worker = worker
            self._stop_worker()
            raise FenceError(f"{label}: the pyghmi worker exited at start: {exc}") from exc
        return worker

    def _stop_worker(self) -> None:
        """SIGKILL the worker by PID and reap it; a BMC session it held is left to expire on the BMC."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if worker.poll() is None:
            worker.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=5)
        for pipe in (worker.stdin, worker.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _request(worker: subprocess.Popen[bytes], request: dict[str, str]) -> dict[str, Any]:
    """One request line to the worker and its one answer line (blocking: the caller bounds it with `within`)."""
    assert worker.stdin is not None and worker.stdout is not None
    try:
        worker.stdin.write(json.dumps(request).encode() + b"\n")
        worker.stdin.flush()
        line = worker.stdout.readline()
    except (OSError, ValueError) as exc:  # ValueError: the pipe was closed by a concurrent kill
        raise FenceError(f"pyghmi worker (pid {worker.pid}) gone: {exc}") from exc
    if not line:
        raise FenceError(f"pyghmi worker (pid {worker.pid}) exited with {worker.wait()}")
    answer: dict[str, Any] = json.loads(line)
    return answer


def _serve(requests: IO[str], answers: IO[str]) -> None:
    """The worker's loop: the first line names the BMC and credentials, each next one is an op to run."""
    from pyghmi import exceptions  # noqa: PLC0415 - the parent never loads pyghmi
    from pyghmi.ipmi import command  # noqa: PLC0415

    _no_lost_wakeup()
    hello = json.loads(requests.readline() or "{}")
    host, port = hello["host"], int(hello["port"])
    username, password = bytes.fromhex(hello["username"]), bytes.fromhex(hello["password"])

    def session() -> Any:
        # pyghmi returns its cached session for these credentials while it is live, else logs in.
        try:
            return command.Command(bmc=host, userid=username, password=password, port=port)
        except exceptions.IpmiException as exc:
            message = str(exc) or type(exc).__name__
            if any(marker in message for marker in _REFUSED_LOGIN):
                raise RuntimeError(f"login refused: wrong user name or password ({message})") from exc
            raise RuntimeError(f"login failed: {message}") from exc

    for line in requests:
        op = json.loads(line).get("op")
        answer: dict[str, Any]
        try:
            if op == "status":
                answer = {"ok": True, "power": session().get_power().get("powerstate")}
            elif op in ("off", "on"):
                result = session().set_power(op, wait=False)
                answer = {"ok": True, "power": result.get("powerstate") or result.get("pendingpowerstate")}
            elif op == "logout":
                session().ipmi_session.logout()
                answer = {"ok": True}
            else:
                answer = {"ok": False, "error": f"unknown op {op!r}; known: {', '.join(_OPS)}"}
        except RuntimeError as exc:
            answer = {"ok": False, "error": str(exc)}
        except Exception as exc:  # pyghmi raises IpmiException and others; the message goes to the operator
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def _no_lost_wakeup() -> None:
    """Make pyghmi's wait for a BMC's answer return at once when the answer is already queued.

    pyghmi 1.6 sends a request, then registers its wait with its IO thread; an answer the IO thread queued in
    between wakes nobody, and the caller sleeps until its retry timer (0.5-1 s) although the answer is there.
    A BMC answering within a fraction of a millisecond hits this on about one call in 20 (measured on ipmi_sim).
    Patched in the worker only; if pyghmi changes shape the patch stays off and calls are merely slower.
    """
    from pyghmi.ipmi.private import session  # noqa: PLC0415 - the parent never loads pyghmi

    wait = getattr(session, "_io_wait", None)
    handlers = getattr(getattr(session, "Session", None), "bmc_handlers", None)
    if wait is None or not isinstance(handlers, dict):
        return

    def io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> Any:
        if myaddr is not None and any(getattr(h, "pktqueue", None) for h in list(handlers.get(myaddr, {}).values())):
            return None
        return wait(timeout, myaddr, evq)

    session._io_wait = io_wait


def from_config(device: Any, timeout: float) -> IpmiFencer:
    """The driver for an `arbiter.config.IpmiFence`; reads the password file now."""
    what = f"ipmi {device.host}:{device.port}"
    password = read_password(Path(device.password_file), what)
    return IpmiFencer(device.host, device.port, device.username.encode(), password, timeout)


if __name__ == "__main__":
    _serve(sys.stdin, sys.stdout)
