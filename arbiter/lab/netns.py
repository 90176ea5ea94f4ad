"""Thin wrappers over iproute2 for the lab: run commands, create and remove network namespaces.

The lab shells out to `ip` and `nft` instead of using pyroute2 here: every step is then the same command an
operator would type to reproduce it, and the commands are logged in the lab's directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


class LabError(RuntimeError):
    """A lab step failed; the message names the command and what it printed."""


def run(
    argv: Sequence[str],
    ns: str | None = None,
    check: bool = True,
    timeout: float = 15.0,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    full = in_ns(ns, argv)
    try:
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False, input=input_text)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(full)}: no answer within {timeout:g}s") from exc
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(full)}: exit {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return done


def in_ns(ns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def list_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def add_namespace(name: str) -> None:
    run(["ip", "netns", "add", name])
    run(["ip", "link", "set", "lo", "up"], ns=name)


def pids_in(ns: str) -> list[int]:
    done = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def kill_pids(pids: Sequence[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_namespace_processes(ns: str, keep: Sequence[int] = (), timeout: float = 5.0) -> None:
    """SIGKILL every process inside `ns` (found by PID through `ip netns pids`) except `keep`."""
    deadline = time.monotonic() + timeout
    while True:
        victims = [p for p in pids_in(ns) if p not in keep]
        if not victims:
            return
        kill_pids(victims)
        if time.monotonic() > deadline:
            raise LabError(f"processes {victims} in namespace {ns} survive SIGKILL")
        time.sleep(0.02)


def delete_namespace(name: str) -> None:
    if name not in list_namespaces():
        return
    kill_namespace_processes(name)
    run(["ip", "netns", "delete", name], check=False)


def gone(pid: int) -> bool:
    """True once `pid` has exited; reaps it when it is our own child (a zombie still has a /proc entry)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def read_pid(path: str) -> int | None:
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM a child, then SIGKILL if it has not exited within `grace` seconds; waits for it either way."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5.0)
