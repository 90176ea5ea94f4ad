"""Why the agent is being stopped: for good (hand the VIPs over) or to be started again at once (keep them).

A SIGTERM looks the same for `systemctl stop` and `systemctl restart`. systemd tells them apart by the job it
runs on the unit: during the stop half of a restart (`restart`, and `try-restart` on an active unit, which
systemd collapses into `restart`), the unit's job is of type "restart"; for `systemctl stop`, a shutdown or
an isolate it is "stop". `SystemdStopQuery` asks systemctl for that job, only when this process is the main
process of the systemd service it runs in, and answers STOP whenever it cannot be sure (no systemd, a slow or
failing systemctl, another unit's process): a clean stop is always safe, a restart mode only saves a VIP move.

The agent still stops cleanly for a restart when a peer holds a lease (Agent._restartable): that peer would
fence the silence of a node that did not say "leaving".

systemd's own `Restart=` follows a crash or a watchdog kill: the agent is dead by then and never asked; the
decision record (arbiter.agent.record) is what lets the next agent keep the VIP in that case.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

QUERY_TIMEOUT = 1.0  # the whole systemd question; TimeoutStopSec= is 15 s, and a restart waits for this stop
RESTART_JOBS = frozenset({"restart", "try-restart"})


class StopMode(Enum):
    STOP = "stop"  # for good: gates closed, leases released, "leaving" frames (a planned hand-over)
    RESTART = "restart"  # started again at once: gates, leases and VIPs stay for the next agent


@dataclass(frozen=True)
class StopReason:
    mode: StopMode
    why: str  # one line for the log, the stop event and the agent_stopping alert


class StopQuery(Protocol):
    async def __call__(self) -> StopReason: ...


def service_of(cgroup_text: str) -> str | None:
    """The systemd service a process runs in, from /proc/PID/cgroup (v2 "0::/system.slice/x.service", or the
    v1 name=systemd line); None outside a service (a login session's scope, a container without systemd)."""
    for line in cgroup_text.splitlines():
        _, _, path = line.partition(":")
        controllers, _, path = path.partition(":")
        if controllers not in ("", "name=systemd"):
            continue
        unit = path.rstrip("/").rpartition("/")[2]
        if unit.endswith(".service"):
            return unit
    return None


def parse_show(text: str) -> dict[str, str]:
    """`systemctl show -p A -p B UNIT` output: one KEY=VALUE a line."""
    pairs = (line.partition("=") for line in text.splitlines())
    return {key: value for key, sep, value in pairs if sep}


def job_type(list_jobs: str, job: str) -> str | None:
    """The TYPE of job `job` in `systemctl list-jobs --no-legend` output ("JOB UNIT TYPE STATE" rows)."""
    for line in list_jobs.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == job:
            return fields[2]
    return None


class SystemdStopQuery:
    """Asks systemd (through `systemctl`, as root over its private socket) whether this stop is a restart."""

    def __init__(
        self,
        unit: str | None,
        *,
        pid: int | None = None,
        systemctl: str = "systemctl",
        timeout: float = QUERY_TIMEOUT,
    ) -> None:
        self.unit = unit
        self.pid = os.getpid() if pid is None else pid
        self.systemctl = systemctl
        self.timeout = timeout

    @classmethod
    def from_env(cls) -> SystemdStopQuery:
        """The service this process runs in, when systemd started it (INVOCATION_ID is set for its services)."""
        unit = None
        if os.environ.get("INVOCATION_ID"):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                unit = service_of(Path("/proc/self/cgroup").read_text(encoding="utf-8"))
        return cls(unit)

    async def __call__(self) -> StopReason:
        if self.unit is None:
            return StopReason(StopMode.STOP, "not started by systemd: a stop")
        try:
            async with asyncio.timeout(self.timeout):
                return await self._ask(self.unit)
        except TimeoutError:
            return StopReason(StopMode.STOP, f"systemd did not answer within {self.timeout:g}s: a clean stop")
        except (OSError, QueryError) as exc:
            return StopReason(StopMode.STOP, f"cannot ask systemd ({exc}): a clean stop")

    async def _ask(self, unit: str) -> StopReason:
        shown = parse_show(await self._run("show", "--property=MainPID", "--property=Job", unit))
        if shown.get("MainPID") != str(self.pid):
            return StopReason(StopMode.STOP, f"not {unit}'s main process (MainPID={shown.get('MainPID')}): a stop")
        job = shown.get("Job", "")
        if not job.isdigit() or job == "0":
            return StopReason(StopMode.STOP, f"{unit} has no job (signalled directly): a stop")
        kind = job_type(await self._run("list-jobs", "--no-legend", "--no-pager", "--full"), job)
        if kind in RESTART_JOBS:
            return StopReason(StopMode.RESTART, f"systemd job {job} on {unit} is a {kind}")
        return StopReason(StopMode.STOP, f"systemd job {job} on {unit} is a {kind or 'job gone'}: a stop")

    async def _run(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            self.systemctl,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await proc.communicate()
        finally:
            if proc.returncode is None:  # cancelled by the timeout: leave no systemctl behind
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip().splitlines()
            raise QueryError(f"systemctl {args[0]} exited {proc.returncode}: {message[-1] if message else ''}")
        return out.decode(errors="replace")


class QueryError(Exception):
    """systemctl ran but did not answer (exit status and its last line of stderr)."""


class Fixed:
    """A stop mode chosen in advance (SIGUSR2, tests): no question asked."""

    def __init__(self, mode: StopMode, why: str) -> None:
        self.reason = StopReason(mode, why)

    async def __call__(self) -> StopReason:
        return self.reason
