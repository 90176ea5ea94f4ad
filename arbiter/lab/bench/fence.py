"""`lab bench fence`: "fence → confirmed OFF" through our IPMI driver beside `fence_ipmilan`, on one ipmi_sim.

One run starts one BMC (the lab's ipmi_sim, see `reachable_bmc`) and alternates, for N rounds (default 10), with
the chassis powered on (untimed) before each timed fence:
  - ours, cold: the orchestrator's own sequence (status, power off, poll status until OFF) through `IpmiFencer`,
    after logging out of the BMC, so the time includes a fresh login (an agent's state after a quiet spell);
  - ours, warm: the same with the session of the untimed power-on still open (the driver keeps it ~45 s);
  - fence_ipmilan -o off with lanplus, cipher 3 and power_wait 0 (its fastest setting; it confirms OFF itself
    by polling status), run through the agent driver: options on stdin, one process per fence.
The order of the three rotates every round. `status` is timed the same way for each. Both clients run in this
process's namespace and reach the BMC over the same veth. The goal: ours (cold) ≤ 0.5 × fence_ipmilan.

Also owns `reachable_bmc`, the one-BMC setup the fencer integration tests share: the lab's ipmi_sim
(arbiter.lab.bmc) in a namespace of its own, reached from the calling process's namespace over a veth pair, so
that pyghmi and fence_ipmilan talk to the BMC from the same network position.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arbiter.lab.bmc import Bmc, BmcSpec
from arbiter.model import Power

BMC_USER = "admin"
BMC_PASSWORD = "password"
BMC_PORT = 623
_SUBNET_PREFIX = "10.213"  # /30s in 10.213.N.0 for the veth between this process and the BMC namespace
DEFAULT_ROUNDS = 10
GOAL_RATIO = 0.5  # ours ≤ half of fence_ipmilan's time
CALL_TIMEOUT = 10.0  # per driver call; the BMC answers in milliseconds, this only guards a broken run
NODE = "bench"


@dataclass(frozen=True)
class BmcLink:
    """Where a BMC started by `reachable_bmc` lives and how to reach it."""

    bmc: Bmc
    netns: str  # the BMC's namespace (removed on exit)
    host_if: str  # veth end in the caller's namespace (removed with the namespace)
    host_address: str  # the caller's address on that veth
    address: str  # the BMC's address, reachable from the caller
    port: int
    username: str
    password: str
    workdir: Path

    @property
    def power_off_marker(self) -> Path:
        return self.workdir / "powered-off"

    @property
    def power_on_marker(self) -> Path:
        return self.workdir / "powered-on"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def _free_subnet(start: int) -> int:
    """A third octet N whose 10.213.N.0/24 no interface here uses (parallel tests and benches pick by PID)."""
    for step in range(254):
        n = (start + step) % 254 + 1
        if not _ip("-o", "-4", "addr", "show", "to", f"{_SUBNET_PREFIX}.{n}.0/24").stdout.strip():
            return n
    raise RuntimeError(f"no free /24 in {_SUBNET_PREFIX}.0.0/16 for the BMC veth")


@contextlib.contextmanager
def reachable_bmc(workdir: Path, tag: str, port: int = BMC_PORT) -> Iterator[BmcLink]:
    """Start ipmi_sim in namespace `kf<tag>`, reachable from here over veth `kf<tag>h`; yield its link.

    `tag` (letters/digits, at most 10 characters) names the namespace and the veth pair so that cleanup works by
    name. The BMC's power commands only touch marker files in `workdir`. Everything is stopped by PID and
    removed by name on exit, whatever happened.
    """
    if not tag.isalnum() or len(tag) > 10:
        raise ValueError(f"BMC tag {tag!r}: use at most 10 letters or digits")
    netns, host_if, bmc_if = f"kf{tag}", f"kf{tag}h", f"kf{tag}b"
    n = _free_subnet(os.getpid())
    host_address, address = f"{_SUBNET_PREFIX}.{n}.1", f"{_SUBNET_PREFIX}.{n}.2"
    workdir = workdir.absolute()
    link: BmcLink | None = None
    try:
        _ip("netns", "add", netns)
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("link", "add", host_if, "type", "veth", "peer", "name", bmc_if, "netns", netns)
        _ip("addr", "add", f"{host_address}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", netns, "addr", "add", f"{address}/30", "dev", bmc_if)
        _ip("-n", netns, "link", "set", bmc_if, "up")
        spec = BmcSpec(
            node=tag,
            netns=netns,
            address=address,
            port=port,
            username=BMC_USER,
            password=BMC_PASSWORD,
            workdir=workdir,
            power_off_cmd=["touch", str(workdir / "powered-off")],
            power_on_cmd=["touch", str(workdir / "powered-on")],
        )
        bmc = Bmc(spec)
        link = BmcLink(bmc, netns, host_if, host_address, address, port, BMC_USER, BMC_PASSWORD, workdir)
        bmc.start(timeout=10)
        yield link
    finally:
        if link is not None:
            link.bmc.stop()
        _ip("netns", "del", netns, check=False)  # takes the veth pair with it
        _ip("link", "del", host_if, check=False)


def _ms(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[math.ceil(0.9 * len(ordered)) - 1] * 1000, 2),  # nearest rank
        "min_ms": round(ordered[0] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "samples_ms": [round(x * 1000, 2) for x in samples],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start one ipmi_sim, time N rounds of each fence and status path, stop everything (by PID, by name)."""
    if os.geteuid() != 0:
        raise RuntimeError("lab bench fence needs root (network namespace and veth for the BMC)")
    for tool, package in (("ipmi_sim", "openipmi"), ("ipmitool", "ipmitool"), ("fence_ipmilan", "fence-agents")):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            raise RuntimeError(f"{tool} not found: install the Debian package {package}")
    rounds = getattr(args, "rounds", None) or DEFAULT_ROUNDS
    if rounds < DEFAULT_ROUNDS:
        raise ValueError(f"lab bench fence: at least {DEFAULT_ROUNDS} rounds, not {rounds}")
    quiet = logging.getLogger("fencers.orchestration")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # one "fenced" warning per round would bury the figures
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-fence-") as tmp,
            reachable_bmc(Path(tmp) / "bmc", f"b{os.getpid()}"[:10]) as link,
        ):
            return asyncio.run(_measure(link, rounds))
    finally:
        quiet.setLevel(level)


async def _measure(link: BmcLink, rounds: int) -> dict[str, Any]:
    from fencers.agent import AgentFencer  # noqa: PLC0415 - fencers load only when this bench runs
    from fencers.ipmi import IpmiFencer  # noqa: PLC0415
    from fencers.orchestration import Orchestrator  # noqa: PLC0415

    ours = IpmiFencer(link.address, link.port, link.username.encode(), link.password.encode(), CALL_TIMEOUT)
    options = {
        "ip": link.address,
        "ipport": str(link.port),
        "lanplus": "1",
        "cipher": "3",
        "username": link.username,
        "power_wait": "0",
    }
    theirs = AgentFencer("fence_ipmilan", options, link.password.encode(), CALL_TIMEOUT)
    # hold_down 0: every round is a new fence, not "fenced a moment ago".
    orchestrator = Orchestrator({NODE: [[ours]]}, power_timeout=CALL_TIMEOUT, hold_down=0.0)
    try:
        started = time.monotonic()
        first = ours.status(NODE)  # starts the pyghmi worker: once per driver, not per fence
        worker_start = time.monotonic() - started
        if first is not Power.ON:
            raise RuntimeError(f"first status through the IPMI driver: {first.value} ({ours.last_error})")
        theirs.status(NODE)  # page cache warm for the agent's Python and ipmitool too

        def power_on() -> None:
            ours.power_on(NODE)
            orchestrator.came_back(NODE)
            if not link.bmc.power_state():
                raise RuntimeError("power on did not take")

        def power_on_logged_out() -> None:
            power_on()
            ours.end_session()  # the next call logs in afresh, as after a quiet spell

        def session_warm() -> None:
            ours.status(NODE)

        def nothing() -> None:
            pass

        def confirm_off(what: str) -> None:
            if link.bmc.power_state():
                raise RuntimeError(f"{what}: reported done but the chassis is still on")

        async def ours_fence() -> None:
            report = await orchestrator.fence(NODE, token=1, why="bench")
            if not report.off:
                raise RuntimeError(f"our fence failed: {report.reason}")
            confirm_off("our fence")

        async def theirs_fence() -> None:
            theirs.power_off(NODE)
            confirm_off("fence_ipmilan -o off")

        async def ours_status() -> None:
            if ours.status(NODE) is not Power.ON:
                raise RuntimeError(f"our status: {ours.last_error}")

        async def theirs_status() -> None:
            if theirs.status(NODE) is not Power.ON:
                raise RuntimeError(f"fence_ipmilan status: {theirs.last_error}")

        fence_paths: dict[str, tuple[Callable[[], None], Callable[[], Awaitable[None]]]] = {
            # name: (untimed preparation, timed fence)
            "ours_cold": (power_on_logged_out, ours_fence),
            "ours_warm": (power_on, ours_fence),
            "fence_ipmilan": (power_on, theirs_fence),
        }
        status_paths: dict[str, tuple[Callable[[], None], Callable[[], Awaitable[None]]]] = {
            "ours_cold": (ours.end_session, ours_status),
            "ours_warm": (session_warm, ours_status),
            "fence_ipmilan": (nothing, theirs_status),
        }
        fences: dict[str, list[float]] = {name: [] for name in fence_paths}
        statuses: dict[str, list[float]] = {name: [] for name in status_paths}
        names = list(fence_paths)
        for index in range(rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                prepare, fence = fence_paths[name]
                prepare()
                started = time.monotonic()
                await fence()
                fences[name].append(time.monotonic() - started)
            power_on()
            for name in order:
                prepare, status = status_paths[name]
                prepare()
                started = time.monotonic()
                await status()
                statuses[name].append(time.monotonic() - started)
        fence_figures = {name: _ms(samples) for name, samples in fences.items()}
        status_figures = {name: _ms(samples) for name, samples in statuses.items()}
        baseline = fence_figures["fence_ipmilan"]["median_ms"]
        ratio_cold = fence_figures["ours_cold"]["median_ms"] / baseline
        ratio_warm = fence_figures["ours_warm"]["median_ms"] / baseline
        log = link.bmc.chassis_log_path.read_text()
        return {
            "rounds": rounds,
            "bmc": f"ipmi_sim {link.address}:{link.port} in namespace {link.netns}, over veth {link.host_if}",
            "ours": "IpmiFencer (pyghmi worker) through Orchestrator.fence: status, power off, poll status to OFF",
            "fence_ipmilan": "fence_ipmilan action=off lanplus=1 cipher=3 power_wait=0 (stdin), confirms OFF itself",
            "pyghmi_worker_start_ms": round(worker_start * 1000, 2),
            "fence": fence_figures,
            "status": status_figures,
            "ratio_cold": round(ratio_cold, 3),
            "ratio_warm": round(ratio_warm, 3),
            "goal_ratio": GOAL_RATIO,
            "goal_met": ratio_cold <= GOAL_RATIO,
            "chassis_power_offs": log.count("set power 0: done"),
        }
    finally:
        ours.close()


def render(result: dict[str, Any]) -> str:
    labels = {
        "ours_cold": "ours, cold (new login)",
        "ours_warm": "ours, warm (session kept)",
        "fence_ipmilan": "fence_ipmilan",
    }
    lines = [
        f"fence: {result['rounds']} rounds against {result['bmc']}",
        f"  ours:          {result['ours']}",
        f"  fence_ipmilan: {result['fence_ipmilan']}",
        f"  pyghmi worker start: {result['pyghmi_worker_start_ms']:.1f} ms (untimed below; the first call after"
        " the agent starts, or after a hung call, pays it)",
        "",
        "  fence → confirmed OFF        median      p90      min      max   (ms)",
    ]

    def table(figures: dict[str, dict[str, Any]]) -> None:
        for name, label in labels.items():
            f = figures[name]
            lines.append(
                f"  {label:<27} {f['median_ms']:>7.1f}  {f['p90_ms']:>7.1f}  {f['min_ms']:>7.1f}  {f['max_ms']:>7.1f}"
            )

    table(result["fence"])
    lines.append("  status")
    table(result["status"])
    goal = "met" if result["goal_met"] else "MISSED"
    lines += [
        "",
        f"  ratio ours/fence_ipmilan (median fence → OFF): cold {result['ratio_cold']:.3f}, "
        f"warm {result['ratio_warm']:.3f}   goal cold ≤ {result['goal_ratio']:g}: {goal}",
        f"  chassis power-offs the BMC ran: {result['chassis_power_offs']}",
        "",
        "  samples (ms)",
    ]
    for kind in ("fence", "status"):
        for name, label in labels.items():
            samples = " ".join(f"{x:.1f}" for x in result[kind][name]["samples_ms"])
            lines.append(f"  {kind:<6} {label:<27} {samples}")
    return "\n".join(lines)
