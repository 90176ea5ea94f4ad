"""Runs a chaos schedule against a real lab and judges the whole history: `keepalived-arbiter lab chaos` and
`lab replay`.

One run: build the lab (every node booted at once: the history starts at the first keepalived start), start the
data store, a service on every node (at every boot), the lease watcher (with the arbiter) and, once the cluster
has converged (or after a bound, judged either way), the client; then play the schedule, each event on a thread
of its own (inject at its start, heal at its end: a slow restart never delays another fault), wait out the quiet
end, collect everything, tear the lab down and look for anything left behind. `verdict.check` judges.

Faults are the lab's own verbs (arbiter/lab/faults.py, lab.py). A fault on an agent in a run of keepalived alone
has nothing to act on and is noted as such. A fault the lab refuses (e.g. a process that is not running) is noted
and counted in `nemesis_errors`, not a verdict: the schedule's rules keep that rare.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from arbiter.lab import agentconf, netns, topology
from arbiter.lab.chaos import verdict, workload
from arbiter.lab.chaos.schedule import BOOT_HOLD, CATALOGUE, Event, Fault, Schedule, down_until, touches
from arbiter.lab.checker import Interval, judge
from arbiter.lab.events import HEAL, NOTE, POWER
from arbiter.lab.events import Event as TimelineEvent
from arbiter.lab.faults import Heal, process_pids
from arbiter.lab.lab import AGENT_START_TIMEOUT, Lab
from arbiter.lab.netns import LabError
from arbiter.lab.report import write_report
from arbiter.lab.scenarios import Timing, copy_logs
from arbiter.lab.topology import WITNESS_IP, LabSpec

INSTANCE = "VI_1"
WRITE_INTERVAL = 0.01  # s between the client's writes
FENCE_ALLOW = 3.0  # s: a fence through the lab's BMC, request to confirmed OFF, with margin
WITNESS_KINDS = ("redis-stop", "redis-restart-empty", "sentinel-failover")
RETURN_AFTER = 8.0  # s: a fenced node stays off this long before the operator powers it on


@dataclass
class _Started:
    """The processes this run started outside the lab's own (they must all be gone after the teardown)."""

    pids: list[int]

    def add(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.pids.append(proc.pid)
        return proc


def bounds(spec: LabSpec) -> verdict.Bounds:
    """The verdicts' bounds for a lab (see arbiter/lab/chaos/verdict.py and the README's chaos section)."""
    timing = Timing.of(spec)
    deadtime = max(1.0, 5 * spec.advert_int)
    race = max(agentconf.RACE_DELAY_MS[n] for n in topology.NODE_NAMES[: spec.nodes]) / 1000
    ttl = agentconf.LEASE_TTL_MS / 1000
    return verdict.Bounds(
        dual_master_s=spec.advert_int,
        no_master_s=2 * timing.master_down + deadtime + ttl + race + FENCE_ALLOW,
        lease_overlap_s=1.0,
    )


def run_chaos(schedule: Schedule, *, arbiter: bool, report_dir: Path | None = None) -> dict[str, Any]:
    """Play `schedule` on a fresh lab (with the arbiter's agents or keepalived alone) and judge it."""
    spec = LabSpec(
        nodes=schedule.nodes,
        advert_int=schedule.advert_int,
        vrrp_version=schedule.vrrp_version,
        arbiter=arbiter,
        sentinel=schedule.witness == "sentinel",
    )
    spec.check()
    timing = Timing.of(spec)
    started = _Started([])
    nemesis_errors: list[str] = []
    with Lab(spec) as lab:
        plan = lab.plan
        prefix = plan.prefix
        t_start = lab.started_at if lab.started_at is not None else lab.timeline.t0
        lab.timeline.add(NOTE, "", f"chaos seed {schedule.seed}: first keepalived start, judged from here", t=t_start)
        lab.reaper.add(topology.start_redis_server(plan, "store", workload.STORE_PORT))
        for node in plan.nodes:
            _write_service_hook(lab, node, arbiter)
            proc = topology.start_service(node)
            if proc is not None:
                lab.reaper.add(started.add(proc).pid)
        watcher = None
        if arbiter:
            sentinel = str(topology.SENTINEL_PORT) if spec.sentinel else "-"
            argv = [
                plan.python,
                "-m",
                "arbiter.lab.chaos.workload",
                "leases",
                prefix,
                _file(lab, "leases.jsonl"),
                sentinel,
            ]
            watcher = started.add(_spawn(netns.in_ns(plan.witness_ns, [*argv, *topology.instance_names(plan)])))
        converged = _converge(lab, timing)
        lab.timeline.add(NOTE, "", f"converged: {converged}")
        argv = [plan.python, "-m", "arbiter.lab.chaos.workload", "client", plan.vips[0], str(WRITE_INTERVAL)]
        client = started.add(_spawn(netns.in_ns(plan.client_ns, [*argv, _file(lab, "writes.jsonl")])))
        chaos_at = time.monotonic()
        lab.timeline.add(NOTE, "", "chaos begins", t=chaos_at)
        threads = [
            threading.Thread(target=_play, args=(lab, e, chaos_at, nemesis_errors), daemon=True)
            for e in schedule.events
        ]
        returner = _Returner(lab, schedule, chaos_at)
        for thread in [*threads, returner]:
            thread.start()
        time.sleep(max(0.0, chaos_at + schedule.duration - time.monotonic()))
        returner.stop.set()
        returner.join(timeout=30)
        for thread in threads:
            thread.join(timeout=30)
            if thread.is_alive():
                nemesis_errors.append("a fault's thread still runs at the end")
        end_at = time.monotonic()
        for proc in (client, watcher):
            if proc is not None:
                netns.terminate(proc, 5.0)  # SIGTERM first: the workload flushes its file
        stored = _store_entries(lab)
        processes = lab.processes()
        lab.recorder.stop()
        lab.record_agents_and_power()
        events = lab.timeline.sorted()
        names = [n.name for n in plan.nodes]
        history = verdict.History(
            events=events,
            nodes=names,
            vip=plan.vips[0],
            instance=INSTANCE,
            start=t_start,
            end=end_at,
            wall_minus_mono=lab.wall_minus_mono,
            arbiter=arbiter,
            writes=workload.read_writes(Path(_file(lab, "writes.jsonl"))),
            stored=stored,
            leases=workload.read_leases(Path(_file(lab, "leases.jsonl"))),
            able=able_intervals(schedule, chaos_at, t_start, end_at, powered_off(events, end_at)),
            agent_problems=_agent_problems(lab, processes) if arbiter else [],
        )
        if report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
            title = f"chaos seed {schedule.seed}: {'keepalived + arbiter' if arbiter else 'keepalived alone'}"
            figures = judge(events, names, plan.vips[0], None, None, end_at, None, t_start)
            write_report(report_dir, events, lab.timeline.t0, names, list(plan.vips), {plan.vips[0]: figures}, title)
            for name in ("writes.jsonl", "leases.jsonl"):
                if Path(_file(lab, name)).exists():
                    (report_dir / name).write_bytes(Path(_file(lab, name)).read_bytes())
            (report_dir / "stored.txt").write_text("".join(f"{s.value} {s.node} {s.token} {s.t:.6f}\n" for s in stored))
            copy_logs(lab, report_dir, ("agent.log", "keepalived.log", "service.log"))
        t0 = lab.timeline.t0
        faults_seen = [
            {"t": round(e.t - t0, 3), "kind": e.kind, "node": e.node, "detail": e.detail}
            for e in events
            if e.kind in ("fault", "heal")
        ]
    left = _left_behind(prefix, started.pids)
    history = replace(history, left_behind=left)
    judged = verdict.check(history, bounds(spec))
    return {
        "seed": schedule.seed,
        "arbiter": arbiter,
        "nodes": schedule.nodes,
        "vrrp_version": schedule.vrrp_version,
        "advert_int": schedule.advert_int,
        "witness": schedule.witness,
        "duration_s": schedule.duration,
        "converged": converged,
        **judged,
        "nemesis_errors": nemesis_errors,
        "faults": faults_seen,
        "schedule": schedule.describe().splitlines(),
    }


def _file(lab: Lab, name: str) -> str:
    return str(Path(lab.plan.dir, name))


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _store_entries(lab: Lab) -> list[workload.Stored]:
    """Every write the store accepted (read with redis-py in the witness namespace: LRANGE of a long list)."""
    done = netns.run(
        [lab.plan.python, "-c", _READ_STORE, workload.STORE_KEY, str(workload.STORE_PORT)], ns=lab.plan.witness_ns
    )
    return workload.parse_stored(done.stdout.splitlines())


_READ_STORE = (
    "import sys, redis\n"
    "r = redis.Redis(port=int(sys.argv[2]), decode_responses=True)\n"
    "print('\\n'.join(r.lrange(sys.argv[1], 0, -1)))\n"
)


def _write_service_hook(lab: Lab, node: topology.NodePlan, arbiter: bool) -> None:
    """The node's `service` script: the workload's service, started at every boot (topology.start_service)."""
    agent_socket = str(topology.agent_socket(node)) if arbiter else "-"
    argv = [lab.plan.python, "-m", "arbiter.lab.chaos.workload", "service", node.name, agent_socket, WITNESS_IP]
    Path(node.dir, topology.SERVICE).write_text(
        "#!/bin/sh\n"
        f"# lab node {node.name}: the chaos workload's service; written by the chaos runner\n"
        f"echo $$ > {node.dir}/service.pid\n"
        f"exec {' '.join(argv)} {INSTANCE}\n"
    )


def _converge(lab: Lab, timing: Timing) -> str:
    """Wait for the agents' gates (with the arbiter) and one holder of the first VIP; what was reached."""
    try:
        if lab.plan.spec.arbiter:
            lab.wait_agents_ready(AGENT_START_TIMEOUT)
        lab.wait_holders(lab.plan.vips[0], [lab.plan.nodes[0].name], timing.master_down + 8)
    except LabError as exc:
        return f"no: {exc}"
    return "yes"


def _play(lab: Lab, event: Event, chaos_at: float, errors: list[str]) -> None:
    """Inject `event` at its start and heal it at its end."""
    time.sleep(max(0.0, chaos_at + event.start - time.monotonic()))
    try:
        heal = inject(lab, event.fault)
    except (LabError, OSError, subprocess.SubprocessError) as exc:
        errors.append(f"{event.fault.describe()} at {event.start:g} s: {exc}")
        lab.timeline.add(NOTE, event.fault.node or "", f"fault not injected: {event.fault.describe()}: {exc}")
        return
    if heal is None:
        return
    time.sleep(max(0.0, chaos_at + event.start + event.duration - time.monotonic()))
    try:
        heal()
    except (LabError, OSError, subprocess.SubprocessError) as exc:
        errors.append(f"heal of {event.fault.describe()}: {exc}")
        lab.timeline.add(NOTE, event.fault.node or "", f"heal failed: {event.fault.describe()}: {exc}")


def inject(lab: Lab, fault: Fault) -> Heal | None:
    """One fault through the lab's verbs; its heal (None: an instant fault, or nothing to act on)."""
    f, faults, arbiter = fault, lab.faults, lab.plan.spec.arbiter
    node = f.node or ""
    if (f.process == "agent" or f.kind == "agent-restart") and not arbiter:
        lab.timeline.add(NOTE, node, f"keepalived alone: no agent for {f.describe()}")
        return None
    if f.kind == "vrrp-cut":
        return faults.vrrp_cut(f.node, f.direction or "both")
    if f.kind == "hb-cut":
        return faults.heartbeat_cut(f.node, f.medium or "ethernet")
    if f.kind == "vrrp-loss":
        return faults.vrrp_loss(f.node, int(f.percent or 0))
    if f.kind == "bridge":
        return faults.bridge(node, str(f.peer))
    if f.kind == "link-down":
        return faults.link_down(node, f.link or "lan")
    if f.kind == "serial-cut":
        return faults.serial_cut(f.node, f.peer)
    if f.kind == "isolate":
        return faults.isolate(node)
    if f.kind == "redis-stop":
        return faults.redis_stop()
    if f.kind == "redis-restart-empty":
        faults.redis_restart_empty()
        return None
    if f.kind == "redis-partition":
        return faults.redis_partition(node)
    if f.kind == "reference-lost":
        return faults.reference_lost(node)
    if f.kind == "pause":
        return faults.pause(node, str(f.process))
    if f.kind == "kill":
        return _kill(lab, node, str(f.process))
    if f.kind == "keepalived-restart":
        lab.restart_keepalived(node)
        return None
    if f.kind == "agent-restart":
        lab.restart_agent(node)
        return None
    if f.kind == "sentinel-failover":
        faults.sentinel_failover()
        return None
    if f.kind == "power-off":
        lab.power(node, "off")
        return lambda: lab.power(node, "on")
    raise LabError(f"the lab cannot inject {f.kind} yet ({CATALOGUE[f.kind].summary})")


def _kill(lab: Lab, node: str, process: str) -> Heal:
    """SIGKILL a node's process; the heal starts it again, as systemd's Restart= would."""
    lab.faults.kill(node, process)
    plan_node = lab.plan.node(node)

    def heal() -> None:
        if not topology.node_powered(plan_node):  # fenced meanwhile: its next boot starts everything
            lab.timeline.add(NOTE, node, f"{process} not started again: the node is powered off")
            return
        running = process_pids(plan_node, process)
        if running and not any(netns.gone(p) for p in running):
            # The node was fenced and booted again meanwhile: its boot started the process; a second one would
            # take the first one's pid file and socket.
            lab.timeline.add(NOTE, node, f"{process} not started again: the node's boot started it")
            return
        if process == "keepalived":
            lab.reaper.add(topology.start_keepalived(lab.plan, plan_node))
        else:
            proc = topology.start_on_boot(plan_node)
            lab.reaper.add(None if proc is None else proc.pid)
        lab.timeline.add(HEAL, node, f"{process} started again")

    return heal


class _Returner(threading.Thread):
    """The operator who powers a fenced node on again: a node found off that the schedule did not power off is
    powered on `RETURN_AFTER` s after it was first seen off (the return of a fenced node is one more transition)."""

    def __init__(self, lab: Lab, schedule: Schedule, chaos_at: float) -> None:
        super().__init__(name="chaos-returner", daemon=True)
        self.lab, self.chaos_at, self.stop = lab, chaos_at, threading.Event()
        self.planned = [e for e in schedule.events if e.fault.kind == "power-off"]

    def run(self) -> None:
        off_since: dict[str, float] = {}
        while not self.stop.wait(0.5):
            now = time.monotonic()
            for node in self.lab.plan.nodes:
                planned = any(
                    e.fault.node == node.name
                    and self.chaos_at + e.start - 1 <= now <= self.chaos_at + e.start + e.duration + 5
                    for e in self.planned
                )
                if topology.node_powered(node) or planned:
                    off_since.pop(node.name, None)
                    continue
                since = off_since.setdefault(node.name, now)
                if now - since >= RETURN_AFTER:
                    self.lab.timeline.add(NOTE, node.name, "found powered off (fenced): the operator powers it on")
                    try:
                        self.lab.power(node.name, "on")
                    except LabError as exc:
                        self.lab.timeline.add(NOTE, node.name, f"power-on failed: {exc}")
                    off_since.pop(node.name, None)


def powered_off(events: list[TimelineEvent], end: float) -> dict[str, list[Interval]]:
    """Per node, from the BMCs' power log on the timeline: each stretch from a power-off to its power-on."""
    spans: dict[str, list[Interval]] = {}
    since: dict[str, float] = {}
    for e in events:
        if e.kind == POWER and e.detail == "off":
            since.setdefault(e.node, e.t)
        elif e.kind == POWER and e.detail == "on" and e.node in since:
            spans.setdefault(e.node, []).append((since.pop(e.node), e.t))
    for node, t in since.items():
        spans.setdefault(node, []).append((t, end))
    return spans


def able_intervals(
    schedule: Schedule, chaos_at: float, start: float, end: float, off: dict[str, list[Interval]] | None = None
) -> dict[str, list[Interval]]:
    """Per node, the monotonic stretches of [start, end) in which it was booted and no fault touched it or the
    witness (a fault on every node, a witness fault, a power-off until its boot is done; `off`: the stretches it
    was powered off, by the schedule or by a fence, each followed by a boot): when a node could hold."""
    nodes = schedule.nodes
    busy: dict[str, list[Interval]] = {n: [(start, start + BOOT_HOLD)] for n in topology.NODE_NAMES[:nodes]}
    for node, spans in (off or {}).items():
        busy.setdefault(node, []).extend((s, e + BOOT_HOLD) for s, e in spans)
    for e in schedule.events:
        window = (chaos_at + e.start, chaos_at + down_until(e))
        hit = set(busy) if e.fault.kind in WITNESS_KINDS else touches(e.fault, nodes)
        for n in hit:
            busy[n].append(window)
    return {n: _complement(spans, start, end) for n, spans in busy.items()}


def _complement(spans: list[Interval], start: float, end: float) -> list[Interval]:
    out: list[Interval] = []
    at = start
    for s, e in sorted(spans):
        if s > at:
            out.append((at, min(s, end)))
        at = max(at, e)
    if at < end:
        out.append((at, end))
    return [(s, e) for s, e in out if e > s]


def _agent_problems(lab: Lab, processes: dict[str, dict[str, object]]) -> list[str]:
    """A traceback in an agent's log, or an agent not running at the end on a powered node."""
    found = []
    for node in lab.plan.nodes:
        try:
            text = Path(node.dir, agentconf.AGENT_LOG).read_text(errors="replace")
        except OSError:
            text = ""
        tracebacks = text.split("Traceback (most recent call last):")[1:]
        if tracebacks:
            # A traceback's frames are indented; its first line that is not is the exception.
            lines = tracebacks[0].splitlines()[1:]
            what = next((line for line in lines if line and not line.startswith(" ")), "")
            found.append(f"node {node.name}: {len(tracebacks)} traceback(s) in agent.log, the first: {what[:160]}")
        state = processes.get(node.name, {})
        if state.get("powered") and state.get("agent") is None:
            found.append(f"node {node.name}: the agent is not running at the end")
    return found


def _left_behind(prefix: str, pids: list[int]) -> list[str]:
    """Namespaces of this lab and processes this run started that survive the teardown."""
    left = [f"namespace {ns}" for ns in netns.list_namespaces() if ns.startswith(f"{prefix}-")]
    left += [f"process {pid}" for pid in pids if not netns.gone(pid)]
    return left
