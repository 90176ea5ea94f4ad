"""The per-node agent: evidence in, `decide()` per instance, actions out — one asyncio process.

What runs, each on its own schedule and none able to block the decision loop:
- heartbeats (`HeartbeatService`: send/receive loops on monotonic deadlines), reference rounds, lease
  renew/read every `lease.renew_ms` (renewals of the instances held here batched in one script call);
- no medium missing at start stops the agent: a heartbeat medium that cannot be opened is down and retried with
  backoff (`_link_loop` alerts on it), an unreachable Redis is an unknown lease and an unreachable reference a
  lost quorum, each asked again on its own schedule;
- keepalived's state as it arrives: the VIP appearing or going (netlink), the notify hook (Unix socket);
- VRRP adverts on each instance's interface (raw socket, after the host firewall);
- the decision loop: every heartbeat interval, and at once when an event arrives (a VIP appearing here must
  close a gate within milliseconds). Each cycle returns its reason; decisions are logged as JSON lines.
- actions run as tasks: gate writes are synchronous and immediate (atomic file replace); lease acquire/release,
  fences, power reads and gratuitous ARP are tasks whose results feed the next cycle.

Start-up: every gate is written closed before anything else (S0), so a restarted agent never leaves a stale
open gate behind while it gathers its first evidence; except a gate found open that the previous agent's
decision record (`state_dir/decisions.json`, arbiter.agent.record) still vouches for: that one stays as found
until the first full evidence round decides, so a restart moves no VIP. A paused agent (maintenance mode,
arbiter.agent.maintenance) keeps each gate as found on disk, and stops without closing them.

Stop: for good (`systemctl stop`), every gate is closed, the leases released and the peers told ("leaving");
for a restart (systemd's restart job, arbiter.agent.stopmode, or SIGUSR2) while no peer holds a lease, gates and
leases stay, the leases are renewed and the record written one last time, so the next agent resumes as after a
crash, with fresher evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from arbiter import config as config_mod
from arbiter.agent import maintenance
from arbiter.agent.bmcreads import ReadSchedule, reads_due
from arbiter.agent.edges import Callbacks, EdgeFactory, Edges
from arbiter.agent.gate import GateFile, GateWrite
from arbiter.agent.kstate import KeepalivedStates
from arbiter.agent.metrics import AgentMetrics, loop_status
from arbiter.agent.notify import BadRequestError
from arbiter.agent.record import DECISION_FILE_NAME, Clocks, DecisionFile, DecisionFileError, Entry
from arbiter.agent.sdnotify import WatchdogGate, keep_watchdog
from arbiter.agent.status import build_status
from arbiter.agent.stopmode import Fixed, StopMode, StopQuery, StopReason
from arbiter.alerts import SecretFileError
from arbiter.config import Config
from arbiter.evidence.heartbeat import Frame, InstanceReport, Snapshot
from arbiter.evidence.reference import Change, Round
from arbiter.evidence.ticks import deadline_ticks
from arbiter.kconf.lint import lint, vrrp_fingerprint
from arbiter.kconf.parser import KconfError
from arbiter.kconf.parser import load as kconf_load
from arbiter.model import (
    AcquireLease,
    Action,
    Alert,
    Decision,
    Evidence,
    Fence,
    FenceOutcome,
    FenceResult,
    Gate,
    LeaseStatus,
    LeaseView,
    PeerView,
    PolicyConfig,
    PolicyState,
    Power,
    ReleaseLease,
    Resumed,
    SendGarp,
    VrrpState,
)
from arbiter.policy import decide, initial_state, may_resume, withhold
from fencers.base import FenceError
from fencers.orchestration import FenceAttempt

log = logging.getLogger(__name__)
POWER_READ_INTERVAL = 1.0  # how often a fenced peer's BMC is re-read (it may be powered on by hand)
POWER_KEEP_WARM = 20.0  # every BMC is read at least this often: its session stays logged in (pyghmi: ~45 s)
ARP_PROBE_INTERVAL = 1.0  # housekeeping: heartbeats carry the peer's VIP state every cycle already
ARP_PROBE_TIMEOUT = 0.2
EXPIRY_SLACK = 0.005  # re-read a peer's lease this long after its expected expiry (Redis expires keys lazily)
LEAVE_WAIT = 3.0  # on a clean stop, how long to wait for keepalived to drop the VIPs after the gates close
ALERT_FLUSH = 2.0  # on stop, how long queued alerts (agent_stopping among them) may take to go out
LEAVE_FRAMES = 3  # "leaving" frames sent on a clean stop (UDP may lose one)
RESTART_ALERT_FLUSH = 0.5  # shorter when restarting: the next agent must start within TTL − safety
# What SIGHUP may change in place; anything else needs a restart (the reload is then refused as a whole).
RELOADABLE = ("alerts", "fencing", "keepalived")


class Agent:
    def __init__(
        self,
        cfg: Config,
        edges: EdgeFactory,
        *,
        out: Callable[[dict[str, Any]], None] | None = None,
        config_path: Path | None = None,
    ) -> None:
        """`edges` builds the agent's edges given its callbacks (arbiter.agent.edges): `from_config` wires the
        real ones; tests pass fakes. Besides them the agent writes its state_dir (decision record, pause flag),
        reads keepalived.conf (drift check) and serves /metrics when configured."""
        self.cfg = cfg
        self.config_path = config_path
        e = edges(
            Callbacks(
                vip_changed=self._vip_changed,
                gate_overwritten=self._gate_overwritten,
                notified=self._notified,
                fifo_line=self._fifo_line,
                fence_event=self._fence_event,
                snapshot=self.snapshot,
            )
        )
        self.clock, self.wall, self.clocks = e.clock, e.wall, e.clocks
        self.started_wall = self.loaded_wall = self.wall()
        self.started_mono = self.clock()
        self.reload_result: dict[str, Any] | None = None  # the last SIGHUP: {"ok", "at", "error"}
        self.drift: dict[str, Any] | None = None  # the last keepalived.conf check
        self.cycle_at: float | None = None  # monotonic time of the last decision cycle
        # systemd (Type=notify): READY=1 after the first decision cycle; WATCHDOG=1 only while cycles keep coming.
        self.systemd = e.systemd
        self.watchdog = WatchdogGate(max(5 * cfg.heartbeat.interval_ms / 1000, 1.0), self.clock)
        self.decided_at: dict[str, float] = {}  # instance → wall time its rule or gate last changed
        self.last_fence: dict[str, dict[str, Any]] = {}  # peer → the last fence run against it
        self.last_fence_any: dict[str, Any] | None = None
        self.leaving = False
        self.fingerprints: dict[str, str] = {}  # instance → this node's keepalived.conf fingerprint (drift check)
        self.metrics = AgentMetrics()
        # Webhooks: emit() only queues; delivery runs in its own task and never delays a decision.
        self.alerts = e.alerts
        self.alerts_for, self.fencing_for = e.alerts_for, e.fencing_for  # what a reload builds anew
        self._gate_alerted: set[str] = set()  # instances whose gate_closed went out (gate_opened resolves it)
        self._media_down: set[tuple[str, str]] = set()  # (peer, medium) reported down (medium_up resolves it)
        self._alerts_task: asyncio.Future[None] | None = None
        # Housekeeping on the wall clock (APScheduler): the keepalived.conf drift check. Never heartbeats or
        # lease renewals, which run on monotonic-deadline loops.
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.node = cfg.node.name
        self.peers = [p.name for p in cfg.peer]
        self.instances = {i.name: i for i in cfg.instance}
        self.gates = e.gates
        # keepalived rewrites the gates when it starts (init_file ... overwrite): wake up and put them back.
        self.gate_watch = e.gate_watch
        drawn = e.drawn_delay_ms
        self.policy_cfg = {name: PolicyConfig.from_config(cfg, name, drawn) for name in self.instances}
        self.state: dict[str, PolicyState] = {}
        # keepalived's state from netlink, FIFO and hooks, merged in one place; kstate/kprio are its tables.
        self.keepalived = KeepalivedStates({name: i.priority for name, i in self.instances.items()})
        self.kstate, self.kprio = self.keepalived.state, self.keepalived.priority
        self.record = DecisionFile(cfg.node.state_dir / DECISION_FILE_NAME)
        self.resumed: dict[str, Resumed] = {}  # what the previous agent decided last (from the record)
        self._recorded: dict[str, Entry] = {}  # what the record on disk says, and when it was written
        self._recorded_at = float("-inf")
        self._record_error: str | None = None
        self.lease_views = {name: LeaseView(LeaseStatus.PENDING) for name in self.instances}
        self.fence_results: dict[str, FenceResult] = {}
        self.power: dict[str, tuple[Power, float]] = {}
        self._power_started: dict[str, float] = {}  # peer → when its latest power read started
        self.last: dict[str, Decision] = {}
        self._out = out or _print_json
        self._wake = asyncio.Event()
        self._trigger: tuple[str, float] | None = None  # what woke the loop, and when (decision latency)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._busy: set[str] = set()  # names of one-at-a-time jobs in flight: "lease:VI_1", "fence:node-b"
        self._lease_calls: dict[str, int] = {}  # instance → acquisitions and releases started (stale reads)
        self._stopping = asyncio.Event()
        # SIGTERM: a stop for good, or the stop half of `systemctl restart` (then nothing is handed over).
        self.stop_query: StopQuery = e.stop_query
        self.orchestrator = e.orchestrator
        self.store = e.store
        self.leases = e.leases
        self.reference = e.reference
        self.heartbeats = e.heartbeats
        self.vips = e.vips
        self.adverts = e.adverts
        self.arp = e.arp
        self.notify = e.notify
        # Open to whoever may connect at all: the socket's mode (0600, or 0660 with api.group) is the access rule.
        self.notify.add_verb("STATUS", self._status_verb, privileged=False)
        # Maintenance mode: persisted under state_dir, so an agent restarted while paused starts paused.
        self.pause_file = maintenance.PauseFile(cfg.node.state_dir)
        self.pause = self.pause_file.load()
        self.held: dict[str, Gate] = {}  # while paused: instance → the gate held
        self.withheld: dict[str, tuple[str, ...]] = {}  # instance → actions withheld in the last cycle (paused)
        self.notify.add_verb("PAUSE", self._pause_verb, privileged=True)
        self.notify.add_verb("RESUME", self._resume_verb, privileged=True)
        self.notify.add_verb("CONFIRM-OFF", self._confirm_off_verb, privileged=True)
        self.notify.add_verb("TOKEN", self._token_verb, privileged=False)
        self.fifo = e.fifo
        # Another MAC answering ARP for a VIP held here: instance → (MACs, when seen).
        self.arp_claims: dict[str, tuple[frozenset[str], float]] = {}

    @classmethod
    def from_config(
        cls, cfg: Config, *, out: Callable[[dict[str, Any]], None] | None = None, config_path: Path | None = None
    ) -> Agent:
        """The agent with its real edges (sockets, netlink, Redis, fencers, webhooks, the system clocks)."""
        return cls(cfg, functools.partial(Edges.from_config, cfg), out=out, config_path=config_path)

    # --- start and stop -----------------------------------------------------------------------------------

    async def run(self) -> None:
        kept = self.begin()
        if self.pause is None:
            gates: dict[str, str] | str = {name: "kept open" if name in kept else "closed" for name in self.instances}
            what = f"gates of {', '.join(kept)} kept open as found, others closed" if kept else "gates closed"
            what += " until the first evidence round"
        else:
            gates, what = "held (paused)", "PAUSED: gates held as found"
        self._emit({"event": "start", "node": self.node, "instances": list(self.instances), "gates": gates})
        self.alerts.emit(
            "agent_started",
            summary=f"agent started on {self.node}; {what}",
            details={"instances": list(self.instances), "pid": os.getpid(), "kept_open": kept},
        )
        if self.pause is not None:
            self._paused_alert("still paused after a restart of the agent")
        self.gate_watch.start()
        await self.notify.start()
        self.metrics.attach_status(loop_status(asyncio.get_running_loop(), self.status))
        if self.cfg.api.metrics is not None:
            self.metrics.serve(self.cfg.api.metrics)
        await self.vips.start()
        found_at = self.clock()
        for name in self.instances:  # a VIP already up at start: keepalived is MASTER (no event fires for it)
            self.keepalived.vip(name, self.vips.present(name), found_at)
        for listener in self.adverts.values():
            listener.start()
        if self.fifo is not None:
            self.fifo.start()
        # A peer's news (its VRRP state, VIP, gate or rule changed) is decided on at once, not at the next tick: a
        # handover's step-down (Y3) must come before keepalived's preemption there.
        self.heartbeats.on_news = lambda peer: self._wake_up("peer")
        await self.heartbeats.start()
        loops = [
            self._decision_loop(),
            self._lease_loop(),
            self.reference.run(self._quorum_changed),
            self._power_loop(),
            self._medium_loop(),
            self._link_loop(),
            self._arp_loop(),
            keep_watchdog(self.systemd, self.watchdog),
        ]
        for peer in self.peers:  # starts each IPMI worker now: the first fence must not pay for it
            self._spawn(f"power:{peer}", self._read_power(peer))
        runners = [asyncio.ensure_future(loop) for loop in loops]
        self._alerts_task = asyncio.ensure_future(self.alerts.run())
        self.scheduler.add_job(
            self.drift_check,
            "interval",
            seconds=self.cfg.keepalived.check_interval_ms / 1000,
            next_run_time=datetime.now(UTC),
            id="drift",
            max_instances=1,
            coalesce=True,
        )
        # Once more when the peers' first fingerprints have arrived in their heartbeats.
        settle = max(5.0, 2 * self.cfg.heartbeat.deadtime_ms / 1000)
        self.scheduler.add_job(self.drift_check, "date", run_date=datetime.now(UTC) + timedelta(seconds=settle))
        self.scheduler.start()
        try:
            await self._stopping.wait()
        finally:
            self.scheduler.shutdown(wait=False)
            for task in [*runners, *self._tasks]:
                task.cancel()
            await asyncio.gather(*runners, *self._tasks, return_exceptions=True)
            await self.shutdown()

    def begin(self) -> list[str]:
        """What `run` does before anything else (tests start a loop of cycles here): S0's gates, then each
        instance's first policy state; returns the instances whose gate was kept open as found."""
        kept = self.write_start_gates(self.clocks())  # S0: before anything else
        tokens = self.store.tokens
        self.state = {name: initial_state(tokens.highest(name), self.resumed.get(name)) for name in self.instances}
        return kept

    def write_start_gates(self, clocks: Clocks | None = None) -> list[str]:
        """S0, before anything else: every gate closed that the previous agent's decision record does not vouch
        for (`resume`); returns the instances kept open as found. Paused (maintenance), nothing may move, not
        even at start: each gate is held as found on disk (a missing file is written closed: fail safe)."""
        if self.pause is None:
            return self.resume(clocks or self.clocks())
        self.held = {name: gate.read() or Gate.CLOSED for name, gate in self.gates.items()}
        for name, gate in self.gates.items():
            gate.write(self.held[name])
        return [name for name, gate in self.held.items() if gate is Gate.OPEN]

    def stop(self) -> None:
        self._stopping.set()

    def stop_for_restart(self) -> None:
        """SIGUSR2: stop as for a restart whoever supervises the agent (it is started again by them, not here)."""
        self.stop_query = Fixed(StopMode.RESTART, "SIGUSR2: asked to stop for a restart")
        self._stopping.set()

    def resume(self, clocks: Clocks) -> list[str]:
        """Close every gate the previous agent's record cannot vouch for; returns the instances left open as
        found. A record that cannot be read is reported and counts as none (every gate closed)."""
        try:
            self.resumed = {n: r for n, r in self.record.load(clocks).items() if n in self.instances}
        except DecisionFileError as exc:
            self._record_error = str(exc)
            log.error("%s; every gate closed at start (it is rewritten after the first decisions)", exc)
            self._emit({"event": "record", "node": self.node, "error": str(exc)})
            self.resumed = {}
        return resume_gates(self.gates, self.resumed, self.policy_cfg, clocks.monotonic)

    async def shutdown(self) -> None:
        self.systemd.stopping()
        paused = self.pause is not None
        reason = self._restartable(await self._stop_reason())
        restart = reason.mode is StopMode.RESTART
        if paused:
            held = "paused: gates left as they are"
        elif restart:
            held = "restart: gates, leases and VIPs left for the next agent"
        else:
            held = "gates closed"
        self.alerts.emit(
            "agent_stopping",
            summary=f"agent stopping on {self.node}; {held}",
            details={"mode": reason.mode.value, "why": reason.why},
        )
        # Closed, not left open: without the agent nothing keeps this node from a second master. Paused, the
        # operator asked that nothing move (an upgrade): gates, VIPs and leases stay as they are. Restarting,
        # the next agent resumes from the record written last thing here, as after a crash but fresher.
        handing = restart and not paused
        if not paused and not handing:
            for gate in self.gates.values():
                with contextlib.suppress(OSError):
                    gate.write(Gate.CLOSED)
            with contextlib.suppress(Exception):
                await self._leave()
        self.metrics.stop()
        for closer in (self.heartbeats.stop(), self.notify.stop(), *(() if handing else (self.store.close(),))):
            with contextlib.suppress(Exception):
                await closer
        self.vips.stop()
        self.gate_watch.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.orchestrator.close)
        if self.fifo is not None:
            self.fifo.stop()
        for listener in self.adverts.values():
            listener.stop()
        with contextlib.suppress(Exception):
            await self.alerts.close(RESTART_ALERT_FLUSH if restart else ALERT_FLUSH)
        if self._alerts_task is not None:
            self._alerts_task.cancel()
            await asyncio.gather(self._alerts_task, return_exceptions=True)
        if handing:  # last, so that the next agent finds the lease and the record as fresh as they can be
            with contextlib.suppress(Exception):
                await self._hand_to_next()
            with contextlib.suppress(Exception):
                await self.store.close()
        gates = "held (paused)" if paused else "kept" if restart else "closed"
        self._emit({"event": "stop", "node": self.node, "mode": reason.mode.value, "why": reason.why, "gates": gates})
        self.systemd.close()

    async def _stop_reason(self) -> StopReason:
        try:
            return await self.stop_query()
        except Exception as exc:  # whatever went wrong, a clean stop is the safe answer
            return StopReason(StopMode.STOP, f"stop mode unknown ({type(exc).__name__}: {exc}): a clean stop")

    def _restartable(self, reason: StopReason) -> StopReason:
        """A restart keeps everything only while no peer would fence this node for the silence it brings: a peer
        holding a lease fences a silent node that did not say "leaving" (H1) once the heartbeat deadtime has
        passed, and a restart takes longer. So with any lease neither this node's nor free (a peer's, unknown,
        not read yet), the stop is a clean one: a backup then moves no VIP and is not fenced."""
        if reason.mode is not StopMode.RESTART:
            return reason
        others = [n for n in self.instances if not self._mine_or_nobodys(n)]
        if not others:
            return reason
        leases = ", ".join(f"{n} {self.lease_views[n].status.value}" for n in others)
        why = f"{reason.why}, but a peer may hold a lease ({leases}) and would fence a silent node: a clean stop"
        return StopReason(StopMode.STOP, why)

    def _mine_or_nobodys(self, name: str) -> bool:
        """The lease of `name` is held here, or free with no peer claiming the VIP or naming itself the lease
        holder in its newest frame (a "free" read here may predate a peer's acquisition by up to renew_ms)."""
        status = self.lease_views[name].status
        if status is LeaseStatus.MINE:
            return True
        if status is not LeaseStatus.FREE:
            return False
        views = [self.heartbeats.peer_view(peer, name) for peer in self.peers]
        return not any(v.claims_vip or v.lease_holder == v.name for v in views)

    async def _hand_to_next(self) -> None:
        """The stop half of a restart: gates untouched, no lease released, no "leaving" frame. The leases held
        here are renewed one last time and the decision record written after it, so the next agent finds both
        as fresh as they can be (it keeps a gate only within TTL − safety of them: arbiter.policy.may_resume)."""
        held = [n for n in self.instances if self.lease_views[n].status is LeaseStatus.MINE]
        if held:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.cfg.lease.timeout_ms / 1000 * 2):
                    views = await self.store.renew_many([self.leases[n] for n in held])
                for name, view in zip(held, views, strict=True):
                    self._set_lease(name, view)
        recorded = False
        if all(s.started for s in self.state.values()) and all(n in self.last for n in self.instances):
            entries = {name: self._entry(name) for name in self.instances}
            await self._write_record(entries)
            recorded = self._recorded is entries
        # Not recorded (stopped before the first decisions, or the write failed): the next agent reads the older
        # record, or none, and closes what it cannot vouch for.
        self._emit({"event": "restarting", "node": self.node, "renewed": held, "recorded": recorded})

    async def _leave(self) -> None:
        """A clean stop must not look like a crash: a peer that sees silence after a frame claiming a VIP fences
        this node (H1, B3). So: wait (at most LEAVE_WAIT) until keepalived, its gates closed, has dropped the
        VIPs; release the leases held here so the peer takes over at once; then tell the peers the truth with
        `leaving` set. If a VIP stays up (keepalived not wired to the gate), the frames say so, and the peer
        fences this node as it should."""
        deadline = time.monotonic() + LEAVE_WAIT  # a real wait for keepalived (asyncio.sleep), not a decision time
        while any(self.vips.present(n) for n in self.instances) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        held = [n for n in self.instances if self.lease_views[n].status is LeaseStatus.MINE]
        if not any(self.vips.present(n) for n in self.instances):
            async with asyncio.timeout(self.cfg.lease.timeout_ms / 1000 * 2):
                for name, view in zip(
                    held, await asyncio.gather(*(self.leases[n].release() for n in held)), strict=True
                ):
                    self.lease_views[name] = view
        self.leaving = True
        for _ in range(LEAVE_FRAMES):
            self.heartbeats.send_now()
            await asyncio.sleep(0.02)
        self._emit(
            {
                "event": "leaving",
                "node": self.node,
                "released": held,
                "vips_down": not any(self.vips.present(n) for n in self.instances),
            }
        )

    # --- reload (SIGHUP) ------------------------------------------------------------------------------------

    def request_reload(self) -> None:
        self._spawn("reload", self.reload())

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file; apply it whole or not at all. Refused (old config kept, reason in status, an
        alert) when the file is invalid, when a section that needs a restart changed, or while a fence runs."""
        at = round(self.wall(), 3)
        self.systemd.reloading()
        try:
            return await self._apply_reload(at)
        finally:
            self.systemd.ready("config reloaded" if (self.reload_result or {}).get("ok") else "reload refused")

    async def _apply_reload(self, at: float) -> dict[str, Any]:
        try:
            if self.config_path is None:
                raise ReloadError("the agent was started without a config file")
            new = config_mod.load(self.config_path)
            problems = config_mod.check(new, offline=False)
            if problems:
                raise config_mod.ConfigError(problems)
            needs_restart = restart_needed(self.cfg, new)
            if needs_restart:
                raise ReloadError(
                    f"{', '.join(needs_restart)} changed: restart the agent to apply them "
                    f"(only {', '.join(RELOADABLE)} and peer[].fence reload in place); nothing was applied"
                )
            if any(key.startswith("fence:") for key in self._busy):
                raise ReloadError("a fence is running; send SIGHUP again when it is done")
            alerts = None
            if new.alerts != self.cfg.alerts:
                alerts = self.alerts_for(new)
            orchestrator = None
            if _fencing_of(new) != _fencing_of(self.cfg):
                orchestrator, drawn = self.fencing_for(new)
                policy_cfg = {name: PolicyConfig.from_config(new, name, drawn) for name in self.instances}
        except (config_mod.ConfigError, ReloadError, FenceError, SecretFileError, OSError) as exc:
            text = "; ".join(str(p) for p in exc.problems) if isinstance(exc, config_mod.ConfigError) else str(exc)
            self.reload_result = {"ok": False, "at": at, "error": text}
            self.alerts.emit(
                "config_reload_failed", summary=f"{self.node}: reload refused, old config kept: {text}"[:500]
            )
            self._emit({"event": "reload", "node": self.node, "ok": False, "error": text})
            return self.reload_result
        if orchestrator is not None:
            old, self.orchestrator, self.policy_cfg = self.orchestrator, orchestrator, policy_cfg
            await asyncio.to_thread(old.close)
        if alerts is not None:
            old_alerts, old_task = self.alerts, self._alerts_task
            self.alerts, self._alerts_task = alerts, asyncio.ensure_future(alerts.run())
            await old_alerts.close(ALERT_FLUSH)
            if old_task is not None:
                old_task.cancel()
        if new.keepalived != self.cfg.keepalived and self.scheduler.running:
            self.scheduler.reschedule_job("drift", trigger="interval", seconds=new.keepalived.check_interval_ms / 1000)
        self.cfg = new
        self.loaded_wall = at
        self.reload_result = {"ok": True, "at": at, "error": None}
        self._emit(
            {
                "event": "reload",
                "node": self.node,
                "ok": True,
                "fencing": orchestrator is not None,
                "alerts": alerts is not None,
            }
        )
        if self.scheduler.running:  # the new config is checked at once, not at the next interval
            self.scheduler.modify_job("drift", next_run_time=datetime.now(UTC))
        self._wake_up("reload")
        return self.reload_result

    # --- status ---------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return build_status(self)

    def healthy(self, now: float) -> bool:
        """The decision loop ran recently: what the systemd watchdog is fed on, and what `status` shows."""
        return self.watchdog.healthy(now)

    def _status_verb(self, words: Sequence[str], at: float) -> str:
        if words:
            raise BadRequestError("STATUS takes no arguments")
        return "OK " + json.dumps(self.status(), separators=(",", ":"))

    def _token_verb(self, words: Sequence[str], at: float) -> str:
        """`TOKEN INSTANCE`: this node's fencing token for a service that writes on its VIP: given only while the
        lease is this node's, valid past the safety margin (H2 steps down inside it), and the gate keepalived
        reads is open. A store that checks each write against the highest token it has seen (README, "Carrying
        the token into your data") then refuses a former holder's late writes."""
        if len(words) != 1:
            raise BadRequestError(f"TOKEN: expected INSTANCE, got {len(words)} words")
        name = words[0]
        if name not in self.instances:
            raise BadRequestError(f"TOKEN: unknown instance {name[:64]!r}; instances: {', '.join(self.instances)}")
        view, gate, now = self.lease_views[name], self.gates[name].cached, self.clock()
        safety = self.cfg.lease.safety_ms / 1000
        left = None if view.expires_at is None else view.expires_at - now
        reason = None
        if view.status is not LeaseStatus.MINE or view.token is None:
            holder = f"held by {view.holder}" if view.status is LeaseStatus.PEER else view.status.value
            reason = f"the lease of {name} is not this node's ({holder})"
        elif left is None or left <= safety:
            reason = f"the lease of {name} is within its safety margin of expiry (not renewed)"
        elif gate is not Gate.OPEN:
            last = self.last.get(name)
            reason = f"the gate of {name} is closed" + (f" ({last.rule}: {last.reason})" if last is not None else "")
        body = {
            "instance": name,
            "token": None if reason is not None else view.token,
            "reason": reason,
            "vip": self.vips.present(name),
            "valid_s": None if reason is not None or left is None else round(left - safety, 3),
        }
        return "OK " + json.dumps(body, separators=(",", ":"))

    # --- maintenance mode (pause / resume) -------------------------------------------------------------------

    def _pause_verb(self, words: Sequence[str], at: float) -> str:
        by, reason = maintenance.parse_pause(words)
        if self.pause is not None:
            since = datetime.fromtimestamp(self.pause.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            why = f" ({self.pause.reason})" if self.pause.reason else ""
            text = f"already paused by {self.pause.by} since {since}{why}; nothing changed"
            return maintenance.reply(changed=False, pause=self.pause, message=text)
        pause = maintenance.Pause(by, round(self.wall(), 3), reason)
        try:
            self.pause_file.save(pause)  # on disk first: a restart from here on starts paused
        except OSError as exc:
            raise BadRequestError(f"not paused: {exc}") from None
        # The gates as this agent enforces them now (read from disk only before its first write).
        self.held = {name: gate.cached or gate.read() or Gate.CLOSED for name, gate in self.gates.items()}
        self.pause = pause
        self._emit({"event": "pause", "node": self.node, **pause.as_dict(), "gates": self._held_text()})
        self._paused_alert("paused")
        self._wake_up("pause")
        text = (
            f"paused by {by}: gates held ({self._held_text()}), no fencing, no lease acquired or released; "
            "`keepalived-arbiter resume` to end"
        )
        return maintenance.reply(changed=True, pause=pause, message=text)

    def _resume_verb(self, words: Sequence[str], at: float) -> str:
        by = maintenance.parse_resume(words)
        pause = self.pause
        if pause is None:
            return maintenance.reply(changed=False, pause=None, message="not paused; nothing to do")
        try:
            self.pause_file.clear()  # off disk first: never resumed in memory but paused again by a restart
        except OSError as exc:
            raise BadRequestError(f"still paused: {exc}") from None
        self.pause, self.held, self.withheld = None, {}, {}
        paused_for = round(self.wall() - pause.at, 3)
        self._emit({"event": "resume", "node": self.node, "by": by, "paused_by": pause.by, "paused_s": paused_for})
        self.alerts.emit(
            "maintenance_resumed",
            summary=f"{self.node} resumed by {by} after {paused_for:.0f}s of maintenance; the policy acts again",
            details={"by": by, "paused_by": pause.by, "paused_s": paused_for},
        )
        self._wake_up("resume")
        text = f"resumed by {by} (paused by {pause.by} for {paused_for:.0f}s); the policy acts again from this cycle"
        return maintenance.reply(changed=True, pause=None, message=text)

    def _confirm_off_verb(self, words: Sequence[str], at: float) -> str:
        """`CONFIRM-OFF WHO NODE`: an operator's word that a silent peer is powered off (as Pacemaker's
        `stonith_admin --confirm`), for when no fence device can prove it. It ends F1's hold and counts as a
        fence OFF (H5's failsafe included) until the peer is heard again or its BMC reads ON. Refused for a peer
        that is heard, or whose BMC read ON after its last frame: the word would contradict what is seen."""
        if len(words) != 2:
            raise BadRequestError(f"CONFIRM-OFF: expected WHO NODE, got {len(words)} words")
        by, peer = maintenance.who(words[0], "CONFIRM-OFF"), words[1]
        if peer not in self.peers:
            raise BadRequestError(f"CONFIRM-OFF: unknown node {peer[:64]!r}; peers: {', '.join(self.peers)}")
        if self.heartbeats.alive(peer) is not False:
            raise BadRequestError(f"CONFIRM-OFF: {peer} is not silent (heard within the deadtime, or not yet judged)")
        power, power_at = self.power.get(peer, (Power.UNKNOWN, None))
        newest = self.heartbeats.newest(peer)
        if power is Power.ON and power_at is not None and (newest is None or power_at > newest.received_at):
            raise BadRequestError(f"CONFIRM-OFF: {peer}'s BMC read ON {self.clock() - power_at:.1f}s ago")
        when = datetime.fromtimestamp(self.wall(), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        proof = f"confirmed off by hand by {by} at {when}"
        self.fence_results[peer] = FenceResult(FenceOutcome.OFF, self.clock(), proof, by_hand=True)
        self.last_fence[peer] = self.last_fence_any = {
            "peer": peer,
            "outcome": FenceOutcome.OFF.value,
            "token": None,
            "why": "operator confirmation",
            "proof": proof,
            "reason": proof,
            "by": by,
            "at": round(self.wall(), 3),
        }
        self._emit({"event": "fence", "node": self.node, "peer": peer, "outcome": "off", "proof": proof, "by": by})
        self.alerts.emit(
            "fence_confirmed_off",
            peer=peer,
            summary=f"{self.node}: {peer} {proof}; it counts as fenced until it is heard again or reads ON",
            details={"by": by, "at": round(self.wall(), 3)},
        )
        self._wake_up("confirm-off")
        return "OK " + json.dumps({"peer": peer, "by": by, "message": f"{peer} {proof}"}, separators=(",", ":"))

    def _held_text(self) -> str:
        return ", ".join(f"{name} {gate.value}" for name, gate in self.held.items())

    def _paused_alert(self, what: str) -> None:
        if self.pause is None:
            return
        why = f": {self.pause.reason}" if self.pause.reason else ""
        self.alerts.emit(
            "maintenance_paused",
            summary=f"{self.node} {what} by {self.pause.by}{why}; gates held ({self._held_text()}), no fencing, "
            "no lease changes: the arbiter does not guard this node until `keepalived-arbiter resume`",
            details={**self.pause.as_dict(), "gates": {n: g.value for n, g in self.held.items()}},
        )

    # --- the decision -------------------------------------------------------------------------------------

    async def _decision_loop(self) -> None:
        interval = self.cfg.heartbeat.interval_ms / 1000
        ticker = deadline_ticks(interval)
        tick = asyncio.ensure_future(anext(ticker))
        while True:
            waker = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({tick, waker}, return_when=asyncio.FIRST_COMPLETED)
            if tick.done():
                tick = asyncio.ensure_future(anext(ticker))
            waker.cancel()
            self._wake.clear()
            first = self.cycle_at is None
            self.run_cycle()
            self.watchdog.beat()
            if first:
                self.systemd.ready(f"deciding for {len(self.instances)} instance(s); gates written")

    def run_cycle(self, only: str | None = None, trigger: tuple[str, float] | None = None) -> str:
        """One decision per instance; returns the reasons (Patroni's run_cycle: the log says why).

        With `only`: that instance alone, at once, from an event callback (`trigger` is the event); the loop's
        own cycle (cycle_at, watchdog, suspect reads) is left to the loop."""
        now = self.clock()
        if only is None:
            self.cycle_at = now
            trigger, self._trigger = self._trigger, None
            self._read_suspects(now)
        reasons = []
        for name in self.instances if only is None else (only,):
            evidence = self.evidence(name, now)
            decision = decide(self.state[name], evidence, self.policy_cfg[name], now)
            carried = decision
            withheld: tuple[Action, ...] = ()
            if self.pause is not None:  # maintenance: decided and logged, the gate held, nothing moved
                carried, withheld = withhold(
                    self.state[name], evidence, self.policy_cfg[name], now, decision, self.held[name]
                )
            self.state[name] = carried.state
            wrote = self.gates[name].write(carried.gate)
            written = self.clock()
            changed = wrote is GateWrite.CHANGED
            if wrote is GateWrite.RESTORED:
                self._gate_restored(name, carried)
            self._act(name, carried)
            would = tuple(maintenance.describe(a) for a in withheld)
            news = would != self.withheld.get(name, ())
            self.withheld[name] = would
            previous = self.last.get(name)
            self.last[name] = decision
            vip_event = trigger is not None and trigger[0] == "vip"
            moved = previous is None or (previous.rule, previous.gate) != (decision.rule, decision.gate)
            if moved:
                self.decided_at[name] = round(self.wall(), 3)
            if changed:
                self._gate_changed(name, carried)
            if vip_event or moved or changed or carried.actions or news:
                self.metrics.decisions.labels(name, decision.rule).inc()
                line: dict[str, Any] = {
                    "event": "decision",
                    "node": self.node,
                    "instance": name,
                    "rule": decision.rule,
                    "gate": decision.gate.value,
                    "reason": decision.reason,
                    "state": self.kstate[name].value,
                    "lease": self.lease_views[name].status.value,
                }
                if carried.actions:
                    line["actions"] = [type(a).__name__ for a in carried.actions]
                if self.pause is not None:  # what resume would do now, and the gate really written
                    line.update(paused=True, held_gate=carried.gate.value, would=list(would))
                # Decision latency: the event that woke this cycle → this gate written (or confirmed unchanged).
                if trigger is not None and (changed or vip_event):
                    line["trigger"] = trigger[0]
                    line["latency_ms"] = round((written - trigger[1]) * 1000, 3)
                    self.metrics.latency.labels(trigger[0]).observe(written - trigger[1])
                self._emit(line)
            reasons.append(f"{name}: {decision.reason}")
        if only is None:  # the fast path's decision is recorded by the loop's cycle it wakes
            self._record_decisions(now)
        return "; ".join(reasons)

    def _record_decisions(self, now: float) -> None:
        """Keep `state_dir/decisions.json` current: on every change, and at least every renew interval (a
        restarted agent trusts it only while it is younger than TTL − safety). Written off the event loop.
        Not before every instance has left S0: until then the previous agent's record, with its own age,
        is the better one."""
        if not all(s.started for s in self.state.values()) or not all(n in self.last for n in self.instances):
            return
        entries = {name: self._entry(name) for name in self.instances}
        if entries == self._recorded and now - self._recorded_at < self.cfg.lease.renew_ms / 1000:
            return
        self._spawn("record", self._write_record(entries))

    def _entry(self, name: str) -> Entry:
        decision, view, state = self.last[name], self.lease_views[name], self.state[name]
        token, until = (view.token, view.expires_at) if view.status is LeaseStatus.MINE else (None, None)
        previous = self._recorded.get(name)
        if view.status is LeaseStatus.UNKNOWN and state.lease_valid_until is not None and previous is not None:
            token, until = previous.lease_token, state.lease_valid_until  # store unreachable: own lease still valid
        failing = tuple(sorted(state.fence_failing))
        return Entry(decision.gate, decision.rule, state.was_holding, token, until, state.holding_since, failing)

    async def _write_record(self, entries: dict[str, Entry]) -> None:
        clocks = self.clocks()
        try:
            await asyncio.to_thread(self.record.write, entries, clocks)
        except OSError as exc:
            if str(exc) != self._record_error:
                log.error("%s; a restart will close every gate", exc)
            self._record_error = str(exc)
            return
        self._recorded, self._recorded_at, self._record_error = entries, clocks.monotonic, None

    def evidence(self, name: str, now: float) -> Evidence:
        found = None
        if not self.state[name].started:  # S0 keeps an open gate only while it is still open on disk
            with contextlib.suppress(OSError):
                found = self.gates[name].read()
        return Evidence(
            instance=name,
            state=self.kstate[name],
            vip_present=self.vips.present(name),
            priority=self.kprio[name],
            reference_quorate=self.reference.quorate,
            lease=self.lease_views[name],
            peers=tuple(self.peer_view(peer, name) for peer in self.peers),
            gate_found=found,
        )

    def peer_view(self, peer: str, name: str) -> PeerView:
        view = self.heartbeats.peer_view(peer, name)
        listener = self.adverts.get(self.instances[name].interface)
        power, power_at = self.power.get(peer, (Power.UNKNOWN, None))
        return replace(
            view,
            adverts_at=listener.last_advert(name, peer) if listener is not None else None,
            listening_since=listener.listening_since(name, peer) if listener is not None else None,
            fence=self.fence_results.get(peer),
            power=power,
            power_at=power_at,
        )

    def snapshot(self) -> Snapshot:
        """What the next heartbeat frame says about this node."""
        reports = []
        for name in self.instances:
            view = self.lease_views[name]
            reports.append(
                InstanceReport(
                    name=name,
                    state=self.kstate[name],
                    vip_present=self.vips.present(name),
                    priority=self.kprio[name],
                    lease_holder=view.holder,
                    lease_token=view.token,
                    gate_open=None if (gate := self.gates[name].cached) is None else gate is Gate.OPEN,
                    rule=last.rule if (last := self.last.get(name)) is not None else None,
                    fingerprint=self.fingerprints.get(name),
                    advert_int_ms=self.instances[name].advert_int_ms,
                )
            )
        highest = max([s.highest_token for s in self.state.values()] or [0])
        return Snapshot(tuple(reports), self.reference.quorate, highest, leaving=self.leaving)

    # --- actions ------------------------------------------------------------------------------------------

    def _act(self, name: str, decision: Decision) -> None:
        inst = self.instances[name]
        for action in decision.actions:
            if isinstance(action, AcquireLease):
                acquire = functools.partial(self.leases[name].acquire, action.seed)
                self._spawn(f"lease:{name}", self._lease_call(name, acquire))
            elif isinstance(action, ReleaseLease):
                self._spawn(f"lease:{name}", self._lease_call(name, self.leases[name].release, releasing=True))
            elif isinstance(action, Fence):
                self.fence_results[action.peer] = FenceResult(FenceOutcome.RUNNING, self.clock())
                self._spawn(f"fence:{action.peer}", self._fence(action, name))
            elif isinstance(action, SendGarp):
                for vip in inst.vip:
                    self._spawn(f"garp:{vip.ip}", asyncio.to_thread(self.arp.send_garp, inst.interface, str(vip.ip), 2))
            elif isinstance(action, Alert):
                self._emit(
                    {
                        "event": "alert",
                        "node": self.node,
                        "instance": name,
                        "kind": action.kind,
                        "detail": action.detail,
                    }
                )
                if action.kind == "split-brain":
                    self._split_brain(name, "heartbeat", action.detail)

    async def _lease_call(
        self, name: str, call: Callable[[], Coroutine[Any, Any, LeaseView]], *, releasing: bool = False
    ) -> None:
        self._lease_calls[name] = self._lease_calls.get(name, 0) + 1
        self._set_lease(name, await call(), releasing=releasing)
        self._wake_up("lease")

    def _read_is_stale(self, name: str, calls_before: int) -> bool:
        """A read started before an acquisition or release of the same lease (or answered while one runs) may
        predate it: its "free" would overwrite the lease just acquired until the next round."""
        return self._lease_calls.get(name, 0) != calls_before or f"lease:{name}" in self._busy

    def _set_lease(self, name: str, view: LeaseView, *, releasing: bool = False) -> None:
        """Every lease answer goes through here: a lease held here that is now the peer's or free, without this
        node releasing it, was lost (renewals failed past the TTL, or the store lost it)."""
        old = self.lease_views[name]
        self.lease_views[name] = view
        if old.status is LeaseStatus.MINE and view.status in (LeaseStatus.PEER, LeaseStatus.FREE) and not releasing:
            holder = f"now held by {view.holder}" if view.status is LeaseStatus.PEER else "now free"
            self.alerts.emit(
                "lease_lost",
                instance=name,
                summary=f"{self.node} lost the lease of {name} (token {old.token}); {holder}",
                details={"token": old.token, "status": view.status.value, "holder": view.holder},
            )

    async def _fence(self, action: Fence, instance: str) -> None:
        peer = action.peer
        report = await self.orchestrator.fence(
            peer,
            token=action.token,
            why=action.why,
            still_wanted=functools.partial(self._still_a_threat, peer),
            lease_holds=functools.partial(self._lease_holds, instance),
        )
        current = self.fence_results.get(peer)
        if current is not None and current.by_hand:
            # An operator confirmed it off while this fence ran: their word stands (F1 ended), not this result.
            self._emit(
                {"event": "fence", "node": self.node, "peer": peer, "outcome": "superseded", "reason": report.reason}
            )
            return
        if not report.off and report.attempts and report.attempts[-1].result == "aborted":
            # Not a failure: the peer came back as a backup, or the lease moved on, before a device was touched.
            self.fence_results.pop(peer, None)
            self._emit(
                {"event": "fence", "node": self.node, "peer": peer, "outcome": "aborted", "reason": report.reason}
            )
            self._wake_up("fence")
            return
        outcome = FenceOutcome.OFF if report.off else FenceOutcome.FAILED
        self.fence_results[peer] = FenceResult(
            outcome, self.clock(), report.proof or report.reason, ineffective=report.ineffective and not report.off
        )
        if report.read_off:
            self.power[peer] = (Power.OFF, self.clock())  # read for this very fence (never on silence alone)
        self._wake_up("fence")
        if report.repeats:
            return  # the same held-down answer again: the orchestrator counts it; one record per fence
        self.metrics.fences.labels(peer, outcome.value).inc()
        details = {"token": action.token, "why": action.why}
        if report.off:
            self.alerts.emit(
                "peer_fenced",
                peer=peer,
                summary=f"{self.node} fenced {peer}: {report.proof}",
                details={**details, "proof": report.proof},
            )
        elif report.ineffective:
            self.alerts.emit(
                "fence_ineffective",
                peer=peer,
                summary=f"{self.node}: {peer} was fenced but reads ON again while still silent: {report.reason}",
                details={**details, "reason": report.reason},
            )
        else:
            self.alerts.emit(
                "fence_failed",
                peer=peer,
                summary=f"{self.node} could not fence {peer}: {report.reason}",
                details={**details, "reason": report.reason},
            )
        self.last_fence[peer] = self.last_fence_any = {
            "peer": peer,
            "outcome": outcome.value,
            "token": action.token,
            "why": action.why,
            "proof": report.proof,
            "reason": report.reason,
            "ineffective": report.ineffective,
            "at": round(self.wall(), 3),
        }
        self._emit(
            {
                "event": "fence",
                "node": self.node,
                "peer": peer,
                "token": action.token,
                "outcome": outcome.value,
                "proof": report.proof,
                "reason": report.reason,
                "ineffective": report.ineffective,
            }
        )

    async def _lease_holds(self, instance: str, token: int) -> bool:
        """Right before a power-off is sent: the store, read again, still names this node as the holder of the
        lease of `instance` (the one whose decision asked for the fence) with `token`: it may have run out, or a
        store restart given it to the peer, since. A store that does not answer does not confirm it."""
        fresh = await self.leases[instance].read()
        self._set_lease(instance, fresh)
        return fresh.status is LeaseStatus.MINE and fresh.token == token

    def _still_a_threat(self, peer: str) -> bool:
        """Whether a fence asked for is still needed just before a device is touched: the peer is still silent
        (it may hold a VIP unseen), or it is heard again but still claims a VIP (a dual master that did not
        step down). A peer heard again as a backup is not fenced, nor any peer once this agent is paused."""
        if self.pause is not None:
            return False
        if self.heartbeats.alive(peer) is not True:
            return True
        return any(self.heartbeats.peer_view(peer, name).claims_vip for name in self.instances)

    def _fence_event(self, attempt: FenceAttempt) -> None:
        self._emit(
            {
                "event": "fence-attempt",
                "node": self.node,
                "peer": attempt.node,
                "level": attempt.level,
                "driver": attempt.driver,
                "device": attempt.device,
                "token": attempt.token,
                "duration_ms": round(attempt.duration * 1000, 1),
                "result": attempt.result,
                "proof": attempt.proof,
                "detail": attempt.detail,
            }
        )

    # --- evidence loops -----------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        async for _ in deadline_ticks(self.cfg.lease.renew_ms / 1000):
            # A lease the previous agent held is renewed at once, not read: a restart must not let it run out.
            held = [
                n
                for n in self.instances
                if self.lease_views[n].status is LeaseStatus.MINE
                or (self.lease_views[n].status is LeaseStatus.PENDING and self._resumed_lease(n))
            ]
            others = [n for n in self.instances if n not in held and f"lease:{n}" not in self._busy]
            calls = {n: self._lease_calls.get(n, 0) for n in others}
            views = await self.store.renew_many([self.leases[n] for n in held])
            for name, view in zip(held, views, strict=True):
                self._set_lease(name, view)
            for name, view in zip(others, await asyncio.gather(*(self.leases[n].read() for n in others)), strict=True):
                if self._read_is_stale(name, calls[name]):
                    continue
                self._set_lease(name, view)
                if view.status is LeaseStatus.PEER and view.expires_at is not None:
                    self._spawn(f"expiry:{name}", self._reread_at(name, view.expires_at))
            self._wake_up("lease")

    def _resumed_lease(self, name: str) -> bool:
        resumed = self.resumed.get(name)
        return resumed is not None and resumed.lease_token is not None

    async def _reread_at(self, name: str, expires_at: float) -> None:
        """Read a peer's lease again the moment it should run out, not up to renew_ms later: a backup that must
        fence a silent master (rule B3) has until keepalived's master-down timer, and the lease TTL uses most
        of that."""
        await asyncio.sleep(max(0.0, expires_at - self.clock()) + EXPIRY_SLACK)
        if f"lease:{name}" not in self._busy:
            calls = self._lease_calls.get(name, 0)
            view = await self.leases[name].read()
            if not self._read_is_stale(name, calls):
                self._set_lease(name, view)
                self._wake_up("lease")

    async def _power_loop(self) -> None:
        """Re-read the BMC of every peer this node counts as fenced OFF: an operator may power it on."""
        # Fresh enough for H5's failsafe, which trusts an OFF read at most a deadtime old.
        async for _ in deadline_ticks(min(POWER_READ_INTERVAL, self.cfg.heartbeat.deadtime_ms / 2000)):
            fenced = {peer for state in self.state.values() for peer in state.fenced_off}
            for peer in fenced:
                self._spawn(f"power:{peer}", self._read_power(peer))

    def _read_suspects(self, now: float) -> None:
        """A peer silent for two heartbeat intervals may be dead: read its power now (a BMC status read is a few
        ms), so a dead master's lease does not hold up the failover (rule L4); every BMC is read at least every
        POWER_KEEP_WARM so that read never pays for a login. When and why: arbiter.agent.bmcreads. One read in
        flight per peer."""
        schedule = ReadSchedule(
            silence=2 * self.cfg.heartbeat.interval_ms / 1000,
            fresh=self.cfg.heartbeat.deadtime_ms / 1000,
            keep_warm=POWER_KEEP_WARM,
        )
        heard = {p: None if (n := self.heartbeats.newest(p)) is None else n.received_at for p in self.peers}
        for peer in reads_due(now, self.peers, heard, self.power, self._power_started, schedule):
            self._spawn(f"power:{peer}", self._read_power(peer))

    async def _read_power(self, peer: str) -> None:
        self._power_started[peer] = self.clock()
        with contextlib.suppress(Exception):  # a broken device reads UNKNOWN, never stops the agent
            power, _device = await self.orchestrator.status(peer)
            previous = self.power.get(peer, (Power.UNKNOWN, 0.0))[0]
            self.power[peer] = (power, self.clock())
            if power is not previous:
                self._emit({"event": "power", "node": self.node, "peer": peer, "power": power.value})
                if power is Power.ON:
                    self._powered_on_while_fenced(peer)
                self._wake_up("power")

    def _powered_on_while_fenced(self, peer: str) -> None:
        """A peer this node fenced OFF reads ON again while still silent: someone powered it on, or the fence did
        not hold. Said at once (event and alert); the policy no longer counts it OFF, and fences it again only
        on a sign that it holds the VIP (README, "When a fenced node comes back")."""
        result = self.fence_results.get(peer)
        if result is None or result.outcome is not FenceOutcome.OFF or self.heartbeats.alive(peer) is not False:
            return
        ago = self.clock() - result.at
        summary = (
            f"{self.node}: {peer}, fenced OFF {ago:.1f}s ago ({result.proof}), reads ON again while still silent; "
            "not counted OFF any more, fenced again if it shows it holds the VIP"
        )
        self._emit({"event": "fence-ineffective", "node": self.node, "peer": peer, "summary": summary})
        self.alerts.emit("fence_ineffective", peer=peer, summary=summary, details={"fenced_s_ago": round(ago, 3)})

    async def _arp_loop(self) -> None:
        """While a VIP is up here, ask who else answers ARP for it: another MAC is a split brain on the wire."""
        async for _ in deadline_ticks(ARP_PROBE_INTERVAL):
            for name, inst in self.instances.items():
                if not self.vips.present(name):
                    self.arp_claims.pop(name, None)
                    continue
                macs: set[str] = set()
                for vip in inst.vip:
                    with contextlib.suppress(OSError):
                        macs |= await self.arp.probe(inst.interface, str(vip.ip), ARP_PROBE_TIMEOUT)
                if macs and frozenset(macs) != self.arp_claims.get(name, (frozenset(), 0.0))[0]:
                    seen = {"instance": name, "via": "arp", "macs": sorted(macs)}
                    self._emit({"event": "split-brain", "node": self.node, **seen})
                    self._split_brain(name, "arp", f"ARP for the VIP also answered by {', '.join(sorted(macs))}")
                if macs:
                    self.arp_claims[name] = (frozenset(macs), self.clock())
                else:
                    self.arp_claims.pop(name, None)

    async def _medium_loop(self) -> None:
        while True:
            event = await self.heartbeats.events.get()
            self._emit(
                {"event": "medium", "node": self.node, "peer": event.peer, "medium": event.medium, "up": event.up}
            )
            key = (event.peer, event.medium)
            if not event.up or key in self._media_down:  # the first "up" after start is not news
                if event.up:
                    self._media_down.discard(key)
                else:
                    self._media_down.add(key)
                self.alerts.emit(
                    "medium_up" if event.up else "medium_down",
                    peer=event.peer,
                    summary=f"heartbeat {event.medium} from {event.peer} "
                    f"{'up again' if event.up else 'down'} on {self.node}",
                    details={"medium": event.medium},
                )
            if event.up:
                self.orchestrator.came_back(event.peer)
            self._wake_up("medium")

    async def _link_loop(self) -> None:
        """A medium this node cannot open (device or NIC missing, at boot or later) is a medium down, alerted with
        its reason; its transport keeps retrying with backoff, and it resolves when the medium opens."""
        while True:
            event = await self.heartbeats.link_events.get()
            link = event.link
            retry = None if link.next_retry_at is None else round(max(0.0, link.next_retry_at - event.at), 3)
            self._emit(
                {
                    "event": "medium-link",
                    "node": self.node,
                    "medium": event.medium,
                    "open": link.open,
                    "reason": link.reason or None,
                    "next_retry_in_s": retry,
                }
            )
            if link.open:
                summary = f"heartbeat {event.medium} open again on {self.node}"
            else:
                summary = f"heartbeat {event.medium} down on {self.node}: {link.reason}; retrying"
            self.alerts.emit(
                "medium_up" if link.open else "medium_down",
                summary=summary,
                details={"medium": event.medium, "local": True, **({} if link.open else {"reason": link.reason})},
            )
            self._wake_up("medium")

    async def drift_check(self) -> dict[str, Any]:
        """Lint this node's keepalived.conf against the arbiter config (arbiter.kconf), learn its per-instance
        fingerprints (sent in heartbeats), and compare them with the peers'. Alerts when the findings change
        and are not empty: a keepalived.conf edited under a running cluster is how VRIDs and VIPs drift apart."""
        path = self.cfg.keepalived.config
        findings: list[str] = []
        error = None
        try:
            summary = await asyncio.to_thread(kconf_load, path)
            findings = [str(f) for f in await asyncio.to_thread(lint, summary, None, self.cfg)]
            for name in self.instances:
                with contextlib.suppress(KeyError):
                    raw = json.dumps(vrrp_fingerprint(summary, name), sort_keys=True)
                    self.fingerprints[name] = hashlib.sha256(raw.encode()).hexdigest()[:16]
        except KconfError as exc:
            error = str(exc)
        except asyncio.CancelledError:
            # A stop cancels a check in flight. The scheduler logs any exception of a job as an ERROR with its
            # traceback, in the journal of every restart that came at that moment: a check cut short is no error.
            log.debug("drift check cancelled: the agent stops")
            return dict(self.drift or {})
        for peer in self.peers:
            newest = self.heartbeats.newest(peer)
            if newest is not None:
                findings += peer_drift(path, self.fingerprints, peer, newest.frame.instances)
                findings += timing_drift(self.config_path, self.cfg, peer, newest.frame)
        previous = self.drift
        self.drift = {"checked": round(self.wall(), 3), "path": str(path), "error": error, "findings": findings}
        if (
            (error or findings)
            and previous is not None
            and (previous["error"], previous["findings"]) == (error, findings)
        ):
            return self.drift  # unchanged: alerted already
        if error or findings:
            summary_text = error or f"{len(findings)} finding(s); first: {findings[0]}"
            self.alerts.emit(
                "config_drift",
                summary=f"{self.node}: keepalived.conf check: {summary_text}"[:500],
                details={"path": str(path), "error": error, "findings": findings[:20]},
            )
        self._emit({"event": "drift", "node": self.node, "error": error, "findings": len(findings)})
        return self.drift

    def _quorum_changed(self, done: Round, change: Change) -> None:
        replied = f"{done.replied} of {len(done.replies)} reference addresses answered"
        if change is Change.LOST:
            summary = f"{self.node} lost reference quorum: {replied} (quorum {self.cfg.reference.quorum})"
            self.alerts.emit("quorum_lost", summary=summary, details={"replies": dict(done.replies)})
        else:
            summary = f"{self.node} regained reference quorum: {replied}"
            self.alerts.emit("quorum_regained", summary=summary, details={"replies": dict(done.replies)})
        self._wake_up("reference")

    def _gate_changed(self, name: str, decision: Decision) -> None:
        closed = decision.gate is Gate.CLOSED
        if closed or name in self._gate_alerted:  # the first opening after start is not news
            if closed:
                self._gate_alerted.add(name)
            else:
                self._gate_alerted.discard(name)
            self.alerts.emit(
                "gate_closed" if closed else "gate_opened",
                instance=name,
                summary=f"{self.node} {'closed' if closed else 'opened'} the gate of {name} ({decision.rule}): "
                f"{decision.reason}",
                details={"rule": decision.rule, "reason": decision.reason},
            )

    def _gate_overwritten(self, name: str) -> None:
        """The watch saw a gate file change behind the agent's back: decide (and rewrite it) now."""
        self._wake_up("gate")

    def _gate_restored(self, name: str, decision: Decision) -> None:
        self.metrics.gates_restored.labels(name).inc()
        self._emit(
            {
                "event": "gate-restored",
                "node": self.node,
                "instance": name,
                "gate": decision.gate.value,
                "rule": decision.rule,
                "detail": "the gate file said otherwise (keepalived restarted with init_file, or a hand edit)",
            }
        )

    def _split_brain(self, name: str, via: str, detail: str) -> None:
        self.metrics.split_brains.labels(name, via).inc()
        self.alerts.emit(
            "split_brain",
            instance=name,
            summary=f"split brain on {name} seen by {self.node} ({via}): {detail}",
            details={"via": via, "detail": detail},
        )

    # --- keepalived's state as it arrives -----------------------------------------------------------------

    def _vip_changed(self, name: str, present: bool, at: float) -> None:
        # Only keepalived adds the VIP: its appearance means MASTER, before the notify hook can say so.
        self.keepalived.vip(name, present, at)
        if self._stopping.is_set():
            # Stopping: the gates are closed for good (or held, paused); no decision may reopen one now.
            return
        if self.cycle_at is None:  # before the loop's first cycle: start-up decides, not this event
            self._wake_up("vip", at)
        else:
            # Gate first: a VIP held against the lease is dual master until the gate is written; a hop to the
            # loop's task costs milliseconds on a busy host. The other instances follow in the loop's cycle.
            self.run_cycle(only=name, trigger=("vip", at))
            self._wake.set()
        self.heartbeats.send_now()

    def _notified(
        self, kind: str, name: str, state: VrrpState, priority: int | None, at: float, sent_at: float | None = None
    ) -> None:
        if kind != "INSTANCE" or name not in self.instances:
            return
        # A hook older than what is already known (it lost the race to a newer one, or to netlink) changes nothing.
        if self.keepalived.hook(name, state, priority, at if sent_at is None else sent_at):
            self._wake_up("notify", at)
            self.heartbeats.send_now()

    def _fifo_line(
        self, kind: str, name: str, state: VrrpState, priority: int | None, at: float, sent_at: float | None = None
    ) -> None:
        if kind != "INSTANCE" or name not in self.instances:
            return
        self.keepalived.fifo(name, state, priority, at)
        self._wake_up("notify", at)
        self.heartbeats.send_now()

    # --- plumbing -----------------------------------------------------------------------------------------

    def _wake_up(self, why: str, at: float | None = None) -> None:
        if self._trigger is None:
            self._trigger = (why, at if at is not None else self.clock())
        self._wake.set()

    def _spawn(self, key: str, job: Coroutine[Any, Any, Any]) -> None:
        """Start `job` unless a job with the same key is still running (one lease call, one fence at a time)."""
        if key in self._busy:
            job.close()
            return
        self._busy.add(key)
        task = asyncio.ensure_future(job)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._busy.discard(key)
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed: %r", key, t.exception())

        task.add_done_callback(done)

    def _emit(self, line: dict[str, Any]) -> None:
        line = {"ts": round(self.wall(), 3), "mono": round(self.clock(), 4), **line}
        self._out(line)


def resume_gates(
    gates: Mapping[str, GateFile], resumed: Mapping[str, Resumed], cfgs: Mapping[str, PolicyConfig], now: float
) -> list[str]:
    """Write closed every gate that the previous agent's record does not vouch for as found (S0); returns the
    instances whose gate is left as found, open. A gate that cannot be read counts as not found."""
    kept = []
    for name, gate in gates.items():
        record = resumed.get(name)
        try:
            found = gate.read()
        except OSError:
            found = None
        if record is not None and may_resume(record, found, cfgs[name], now):
            kept.append(name)
        else:
            gate.write(Gate.CLOSED)
    return kept


def peer_drift(path: Path, mine: dict[str, str], peer: str, reports: Sequence[InstanceReport]) -> list[str]:
    """Findings for each instance whose keepalived.conf fingerprint differs between this node and `peer` (as its
    heartbeat reports it); an instance either side has not fingerprinted yet is not compared."""
    return [
        f"{path}: error: [peer-drift] {report.name}: {peer}'s keepalived.conf differs from this node's in VRID, "
        "advert_int, version, authentication or VIPs (run check-keepalived on both)"
        for report in reports
        if report.fingerprint is not None and mine.get(report.name) not in (None, report.fingerprint)
    ]


def timing_drift(config_path: Path | None, cfg: Config, peer: str, frame: Frame) -> list[str]:
    """Findings for each timing `peer`'s heartbeat frame reports that differs from this node's config, naming the
    key and both values: nodes with other timings misjudge each other (a lease renewal, a silence)."""
    where = str(config_path) if config_path is not None else "arbiter config"
    found = []
    if frame.timings is not None:
        mine = (cfg.lease.ttl_ms, cfg.lease.renew_ms, cfg.lease.safety_ms, cfg.heartbeat.interval_ms)
        keys = ("lease.ttl_ms", "lease.renew_ms", "lease.safety_ms", "heartbeat.interval_ms", "heartbeat.deadtime_ms")
        for key, here, there in zip(keys, (*mine, cfg.heartbeat.deadtime_ms), frame.timings.as_list(), strict=True):
            if here != there:
                found.append(f"{where}: warning: [timing-drift] {key} is {there} on {peer}, {here} on this node")
    instances = {inst.name: inst for inst in cfg.instance}
    for report in frame.instances:
        inst = instances.get(report.name)
        if inst is not None and report.advert_int_ms is not None and report.advert_int_ms != inst.advert_int_ms:
            found.append(
                f"{where}: warning: [timing-drift] instance {report.name} advert_int_ms is {report.advert_int_ms} "
                f"on {peer}, {inst.advert_int_ms} on this node"
            )
    return found


class ReloadError(Exception):
    """Why a SIGHUP's config was not applied (the old one stays in force)."""


def _fencing_of(cfg: Config) -> tuple[Any, ...]:
    return (cfg.fencing, tuple(p.fence for p in cfg.peer))


def restart_needed(old: Config, new: Config) -> list[str]:
    """The top-level keys (peer[i] for a peer's non-fence settings) whose change a reload cannot apply."""
    changed = [
        key
        for key in type(old).model_fields
        if key not in RELOADABLE and key != "peer" and getattr(old, key) != getattr(new, key)
    ]
    if len(old.peer) != len(new.peer):
        changed.append("peer")
    else:
        for i, (a, b) in enumerate(zip(old.peer, new.peer, strict=True)):
            if a.model_copy(update={"fence": ()}) != b.model_copy(update={"fence": ()}):
                changed.append(f"peer[{i}]")
    return changed


def _print_json(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()
