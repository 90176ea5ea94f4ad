"""A running lab: build it, watch it, inject faults, tear it all down (on exit, Ctrl-C, SIGTERM or failure)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType

from arbiter.lab import agentconf, agentlog, netns, topology
from arbiter.lab.agentlog import AgentRecord
from arbiter.lab.bmc import Bmc, BmcSpec
from arbiter.lab.events import FAULT, HEAL, NOTE, POWER, Event, Timeline
from arbiter.lab.faults import Faults
from arbiter.lab.netns import LabError, run
from arbiter.lab.recorder import AddressWatch, ArpWatch, KeepalivedStateWatch, Recorder
from arbiter.lab.topology import WITNESS_IP, LabPlan, LabSpec

AGENT_START_TIMEOUT = 30.0


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, nftables, raw sockets): run it as root")


class Reaper:
    """Waits for the daemons this process started for the lab (keepalived, sshd, the agent, redis, socat) as soon
    as they exit, from a thread of its own.

    A power-off runs in another process (the BMC's chassis script): it kills them but cannot wait for them. Under
    `lab run` the next subprocess this process spawned reaped them by chance (subprocess reaps dropped children
    then); under `lab up` nothing runs, and a killed keepalived stayed a zombie for the life of the lab. keepalived
    takes a zombie named in its pid file for a running daemon ("daemon is already running"; the power-off also
    removes the pid files, as a power cut empties /run). Only PIDs handed to `add` are waited for: waiting for any
    child would steal the exit status of a command a `subprocess.run` is waiting for.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._pids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, *pids: int | None) -> None:
        with self._lock:
            self._pids.update(p for p in pids if p is not None)

    def pending(self) -> set[int]:
        with self._lock:
            return set(self._pids)

    def reap(self) -> list[int]:
        """Wait (without blocking) for every PID added; returns those that exited now."""
        done = []
        for pid in self.pending():
            try:
                exited = os.waitpid(pid, os.WNOHANG)[0] == pid
            except ChildProcessError:  # reaped elsewhere (netns.gone, subprocess), or not our child
                exited = False
                with self._lock:
                    self._pids.discard(pid)
            if exited:
                done.append(pid)
                with self._lock:
                    self._pids.discard(pid)
        return done

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="lab-reaper", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, then wait up to `timeout` for what is still pending (the teardown killed it all)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        deadline = time.monotonic() + timeout
        while self.reap() or self.pending():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.reap()


class Lab:
    """Context manager: `with Lab(LabSpec()) as lab: ...`."""

    def __init__(self, spec: LabSpec, prefix: str | None = None, boot: Sequence[str] | None = None) -> None:
        require_root()
        self.plan: LabPlan = topology.make_plan(spec, prefix)
        # The nodes powered on at build (None: all); the others start powered off, for `power(node, "on")`.
        self.boot = [n.name for n in self.plan.nodes] if boot is None else [self.plan.node(n).name for n in boot]
        self.started_at: float | None = None  # the first keepalived start: the checker judges from here
        self.timeline = Timeline()
        self.reaper = Reaper()
        self.faults = Faults(self.plan, self.timeline, started=self.reaper.add)
        self.recorder = Recorder()
        self.bmcs: dict[str, Bmc] = {}
        self._old_sigterm: object = None
        # Agents may stamp their log lines with the wall clock: this moves them onto the timeline's clock.
        self.wall_minus_mono = time.time() - time.monotonic()

    # --- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_exit)
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def build(self) -> None:
        plan = self.plan
        Path(plan.dir).mkdir(parents=True, exist_ok=True)
        Path(plan.dir, "owner.pid").write_text(str(os.getpid()))
        for node in plan.nodes:
            Path(node.dir).mkdir(parents=True, exist_ok=True)
            topology.gate_dir(node.dir).mkdir(parents=True, exist_ok=True)
            fifo = Path(node.dir, "notify.fifo")
            if not fifo.exists():
                os.mkfifo(fifo)
        plan.save()
        topology.build_network(plan)
        topology.write_ssh_material(plan)
        agentconf.write_agent_files(plan)
        self.reaper.start()
        self.reaper.add(*topology.start_witness(plan))
        for x, y, _, _ in topology.serial_links(plan):
            self.reaper.add(topology.start_serial(plan, x, y))
        for node in plan.nodes:
            bmc = Bmc(bmc_spec(plan, node.name))
            bmc.start()
            self.bmcs[node.name] = bmc
        self._start_recorder()
        for node in plan.nodes:
            if node.name not in self.boot:
                self._start_powered_off(node.name)
        self.started_at = time.monotonic()
        for node in plan.nodes:
            if node.name in self.boot:
                self.reaper.add(*topology.start_node_processes(plan, node))
        arbiter = " with the arbiter" if plan.spec.arbiter else ""
        self.timeline.add(NOTE, "", f"lab {plan.prefix} up: {len(plan.nodes)} nodes{arbiter}")

    def _start_powered_off(self, name: str) -> None:
        """Switch a node that has not booted yet off through its BMC, so that `power(name, "on")` boots it."""
        self.timeline.add(NOTE, name, "starts powered off")
        done = self.bmcs[name].ipmitool("chassis", "power", "off", from_netns=self.plan.witness_ns)
        if done.returncode != 0:
            raise LabError(f"ipmitool power off {name}: {done.stderr.strip() or done.stdout.strip()}")

    def _start_recorder(self) -> None:
        plan = self.plan
        mac_to_node = {n.mac: n.name for n in plan.nodes}
        for node in plan.nodes:
            watch = AddressWatch(self.timeline, node.name, node.netns, list(plan.vips))
            self.recorder.add(watch)
            self.recorder.add(KeepalivedStateWatch(self.timeline, node.name, Path(node.dir, "notify.fifo")))
        self.recorder.add(ArpWatch(self.timeline, plan.client_ns, "eth0", list(plan.vips), mac_to_node))
        self.recorder.start()
        for pid in self.recorder.pids():
            topology.register_observer(plan, pid)

    def close(self) -> None:
        errors: list[str] = []
        try:
            self.recorder.stop()
        except Exception as exc:  # teardown must go on whatever one part did
            errors.append(f"recorder: {exc}")
        for bmc in self.bmcs.values():
            try:
                bmc.stop()
            except Exception as exc:
                errors.append(f"bmc: {exc}")
        try:
            topology.teardown(self.plan)
        except LabError as exc:
            errors.append(str(exc))
        self.reaper.stop()
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)  # type: ignore[arg-type]
            self._old_sigterm = None
        if errors:
            raise LabError("teardown: " + "; ".join(errors))

    # --- looking -------------------------------------------------------------------------------------

    def holders(self, vip: str) -> list[str]:
        found = []
        for node in self.plan.nodes:
            out = run(["ip", "-n", node.netns, "-o", "-4", "addr", "show"], check=False).stdout
            if any(f" {vip}/" in line for line in out.splitlines()):
                found.append(node.name)
        return found

    def wait_holders(self, vip: str, want: list[str], timeout: float) -> float:
        """Seconds until exactly `want` hold `vip`; raises LabError with what was seen instead."""
        start = time.monotonic()
        seen: list[str] = []
        while time.monotonic() - start < timeout:
            seen = self.holders(vip)
            if sorted(seen) == sorted(want):
                return time.monotonic() - start
            time.sleep(0.05)
        raise LabError(f"{vip}: expected holders {want} within {timeout:g}s, saw {seen}")

    def wait_advert(self, listener: str, timeout: float = 10.0) -> float:
        """Block until `listener` receives a VRRP advert; returns its monotonic arrival time. Faults injected
        right after an advert give keepalived's full master-down interval, the failover figure DESIGN quotes."""
        code = (
            "import socket,sys,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,112)\n"
            "print('ready',flush=True)\n"
            "s.recv(2048)\n"
            "print(time.monotonic(),flush=True)\n"
        )
        argv = netns.in_ns(self.plan.node(listener).netns, [self.plan.python, "-c", code])
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
            try:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise LabError(f"VRRP listener in {listener} did not start")
                deadline = time.monotonic() + timeout
                ready, _, _ = select.select([proc.stdout], [], [], timeout)
                line = proc.stdout.readline() if ready else ""
                if not line or time.monotonic() > deadline:
                    raise LabError(f"no VRRP advert reached {listener} within {timeout:g}s")
                return float(line)
            finally:
                proc.kill()

    # --- the arbiter's agents ------------------------------------------------------------------------

    def agent_pid(self, node: str) -> int | None:
        return netns.read_pid(str(Path(self.plan.node(node).dir, agentconf.AGENT_PID)))

    def agent_running(self, node: str) -> bool:
        pid = self.agent_pid(node)
        return pid is not None and not netns.gone(pid)

    def agents_ready(self) -> bool:
        """Every powered node's agent runs and has opened every gate since it started (keepalived's init_file
        writes 1, closed, and the agent starts after it: an open gate newer than agent.pid is this agent's own,
        not one left by an agent before a restart)."""
        for node in self.plan.nodes:
            if not topology.node_powered(node):
                continue
            pid_file = Path(node.dir, agentconf.AGENT_PID)
            if not self.agent_running(node.name):
                return False
            try:
                started = pid_file.stat().st_mtime
                for name in topology.instance_names(self.plan):
                    gate = topology.gate_path(node, name)
                    if gate.read_text().strip() != "0" or gate.stat().st_mtime < started:
                        return False
            except OSError:  # a gate between the agent's rename and our read, or before keepalived wrote it
                return False
        return True

    def wait_agents_ready(self, timeout: float) -> float:
        start = time.monotonic()
        while not self.agents_ready():
            # The lab directory goes with the lab: say here what the agents said.
            dead = [
                n.name
                for n in self.plan.nodes
                if topology.node_powered(n) and self.agent_pid(n.name) is not None and not self.agent_running(n.name)
            ]
            if dead:
                raise LabError(f"the agent of node {', '.join(dead)} exited; {self.agent_log_tails()}")
            if time.monotonic() - start > timeout:
                raise LabError(f"no agent opened its gates within {timeout:g}s; {self.agent_log_tails()}")
            time.sleep(0.05)
        return time.monotonic() - start

    def wait_agent_started(self, node: str, old_pid: int | None, timeout: float = AGENT_START_TIMEOUT) -> int:
        """The PID of node's agent once one other than `old_pid` runs (raises LabError with the logs if not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.agent_pid(node)
            if pid is not None and pid != old_pid and not netns.gone(pid):
                return pid
            time.sleep(0.05)
        boot_log = _read(Path(self.plan.node(node).dir, "on-boot.log")).splitlines()[-3:]
        raise LabError(
            f"no new agent on node {node} within {timeout:g}s (powered: "
            f"{topology.node_powered(self.plan.node(node))}, agent.pid {self.agent_pid(node)}, on-boot.log: "
            f"{' | '.join(boot_log) or 'empty'}); {self.agent_log_tails()}"
        )

    def restart_agent(self, node: str) -> tuple[int, int]:
        """`systemctl restart` of node's agent: SIGUSR2 (what the agent does on SIGTERM when systemd says a restart
        job is running; the lab has no systemd), wait for it to exit (SIGKILL after 10 s), start the node's on-boot
        script again. Returns (old PID, new PID)."""
        old = self.agent_pid(node)
        if old is None or netns.gone(old):
            raise LabError(f"no running agent on node {node} to restart")
        self.timeline.add(FAULT, node, f"agent restart (SIGUSR2, stop for a restart, to {old})")
        netns.kill_pids([old], signal.SIGUSR2)
        try:
            topology.wait_for(lambda: netns.gone(old), 10, f"the agent of node {node} to exit")
        except LabError:
            netns.kill_pids([old], signal.SIGKILL)
            topology.wait_for(lambda: netns.gone(old), 5, f"the agent of node {node} to exit after SIGKILL")
        exited = time.monotonic()
        proc = topology.start_on_boot(self.plan.node(node))
        self.reaper.add(None if proc is None else proc.pid)
        try:
            new = self.wait_agent_started(node, old)
        except LabError as exc:
            code = None if proc is None else proc.poll()
            raise LabError(f"{exc} (the on-boot script's exit status: {code})") from None
        self.timeline.add(HEAL, node, f"agent restarted: PID {old} -> {new}", t=exited)
        return old, new

    def restart_keepalived(self, node: str) -> tuple[int, int]:
        """`systemctl restart keepalived` on node: SIGTERM, wait for both its processes to exit, start it again.
        Returns (old PID, new PID) of keepalived's parent, once the new one runs its VRRP child."""
        plan_node = self.plan.node(node)
        old = topology.keepalived_pid(plan_node)
        pids = [p for p in (old, topology.vrrp_pid(plan_node)) if p is not None]
        if old is None or netns.gone(old):
            raise LabError(f"no running keepalived on node {node} to restart")
        self.timeline.add(FAULT, node, f"keepalived restart (SIGTERM to {old})")
        netns.kill_pids([old], signal.SIGTERM)
        topology.wait_for(lambda: all(netns.gone(p) for p in pids), 10, f"keepalived of node {node} to exit")
        self.reaper.add(topology.start_keepalived(self.plan, plan_node))

        def started() -> bool:
            pid, child = topology.keepalived_pid(plan_node), topology.vrrp_pid(plan_node)
            return pid not in (None, old) and child is not None and child not in pids and not netns.gone(child)

        topology.wait_for(started, 10, f"keepalived of node {node} to start again")
        new = topology.keepalived_pid(plan_node)
        assert new is not None
        self.timeline.add(HEAL, node, f"keepalived restarted: PID {old} -> {new}")
        return old, new

    def processes(self) -> dict[str, dict[str, object]]:
        """Per node: powered, and the PIDs of its running keepalived and agent (None: not running)."""
        out: dict[str, dict[str, object]] = {}
        for node in self.plan.nodes:
            ka = topology.keepalived_pid(node)
            agent = self.agent_pid(node.name)
            out[node.name] = {
                "powered": topology.node_powered(node),
                "keepalived": ka if ka is not None and not netns.gone(ka) else None,
                "agent": agent if agent is not None and not netns.gone(agent) else None,
            }
        return out

    def agent_log_tails(self, lines: int = 4) -> str:
        tails = []
        for node in self.plan.nodes:
            gates = " ".join(
                f"{name}={_read(topology.gate_path(node, name)) or 'absent'}"
                for name in topology.instance_names(self.plan)
            )
            running = "running" if self.agent_running(node.name) else "not running"
            log = _read(Path(node.dir, agentconf.AGENT_LOG)).splitlines()[-lines:]
            tails.append(f"node {node.name}: agent {running}, gates {gates}, agent.log ends: {' | '.join(log)}")
        return "; ".join(tails)

    def agent_records(self) -> dict[str, list[AgentRecord]]:
        """Every decision and fence line of every node's agent.log so far, per node, in time order."""
        return {
            node.name: agentlog.read_agent_log(Path(node.dir, agentconf.AGENT_LOG), node.name, self.wall_minus_mono)
            for node in self.plan.nodes
        }

    def record_agents_and_power(self) -> dict[str, list[AgentRecord]]:
        """Put the agents' decisions (gate changes, rule changes, fences) and the BMCs' power changes on the
        timeline. Call once, at the end of a run: the agents' logs and the power log are read back whole."""
        records = self.agent_records()
        nodes = [n.name for n in self.plan.nodes]
        events: list[Event] = agentlog.timeline_events((r for rs in records.values() for r in rs), nodes)
        for t, state, node in topology.read_power_log(self.plan):
            events.append(Event(t, POWER, node, state))
        for e in events:
            self.timeline.add(e.kind, e.node, e.detail, t=e.t)
        return records

    # --- operator actions ---------------------------------------------------------------------------

    def power(self, node: str, state: str) -> None:
        """Through the node's BMC with ipmitool, from the management network, as an operator would."""
        bmc = self.bmcs[node]
        self.timeline.add("fault" if state == "off" else "heal", node, f"power-{state} (ipmitool)")
        done = bmc.ipmitool("chassis", "power", state, from_netns=self.plan.witness_ns)
        if done.returncode != 0:
            raise LabError(f"ipmitool power {state} {node}: {done.stderr.strip() or done.stdout.strip()}")

    def redis_cli(self, *args: str) -> str:
        return run(["redis-cli", "-h", WITNESS_IP, *args], ns=self.plan.witness_ns).stdout.strip()


def bmc_spec(plan: LabPlan, name: str) -> BmcSpec:
    """A node's BMC: ipmi_sim in its own namespace on the management network; its chassis power control
    runs `python -m arbiter.lab.power` against this lab."""
    node = plan.node(name)
    return BmcSpec(
        node=node.name,
        netns=node.bmc_netns,
        address=node.bmc_ip,
        port=623,
        username="admin",
        password="password",
        workdir=Path(plan.dir, f"bmc-{node.name}"),
        power_off_cmd=[plan.python, "-m", "arbiter.lab.power", plan.dir, "off", node.name],
        power_on_cmd=[plan.python, "-m", "arbiter.lab.power", plan.dir, "on", node.name],
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _sigterm_to_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def clean() -> list[str]:
    require_root()
    return topology.clean()


__all__ = ["Lab", "LabError", "LabSpec", "clean", "netns"]
