"""The named scenarios: each builds a lab, injects one fault at a seeded moment, heals it, and is judged.

`run_scenario(name, ...)` returns the JSON-ready result printed by `keepalived-arbiter lab run`. Windows are
scaled to keepalived's master-down interval so the same scenario works at advert_int 1 and at VRRPv3 0.1.

With `arbiter=True` every node runs the agent (see agentconf's `on-boot`): the scenario starts once every
agent has opened its gates, watches a lease TTL longer (fencing takes that), and the result carries the
agents' decisions and fences on its timeline and the checker's verdict on how the old master let go.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from arbiter.lab import agentconf, checker, fenceclaims, topology
from arbiter.lab.agentlog import AgentRecord
from arbiter.lab.checker import Verdict, judge, phase_figures
from arbiter.lab.events import DECISION, FENCE, GATE, NOTE, VIP_DEL, Event
from arbiter.lab.faults import Heal
from arbiter.lab.lab import AGENT_START_TIMEOUT, Lab
from arbiter.lab.netns import LabError
from arbiter.lab.report import write_report
from arbiter.lab.topology import LabSpec


@dataclass
class Phase:
    """What a scenario did, for the checker: when the fault began and ended, who held each VIP before."""

    fault_at: float | None = None
    heal_at: float | None = None
    owners: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # scenario-specific figures for the result
    converged_at: float | None = None  # the natural masters hold, the agents are ready (a note, not the judge's)
    marks: list[tuple[str, float]] = field(default_factory=list)  # (phase, start): after "start-up", in order


# The lab's lease TTL (agentconf writes ttl_ms = 3000): an isolated master lets go, or is fenced, within it.
ARBITER_SETTLE = 3.0


@dataclass(frozen=True)
class Timing:
    advert_int: float
    master_down: float
    arbiter: bool = False
    hold: float | None = None  # s a held fault lasts, for scenarios that take it (vrrp-loss); None: theirs

    @classmethod
    def of(cls, spec: LabSpec) -> Timing:
        prio = topology.PRIORITIES[1]  # the backup's timer decides the failover
        skew = (256 - prio) / 256 if spec.vrrp_version == 2 else (256 - prio) * spec.advert_int / 256
        return cls(spec.advert_int, 3 * spec.advert_int + skew, spec.arbiter)

    @property
    def observe(self) -> float:
        """Long enough for keepalived alone to finish its own reaction to a fault, twice over (and, with the
        arbiter, for a lease to expire and a fence to be confirmed)."""
        return max(2 * self.master_down, 2.0) + 1.0 + (ARBITER_SETTLE if self.arbiter else 0.0)


Body = Callable[[Lab, random.Random, Timing, Phase], None]
START_UP = "start-up"  # the first phase of every run: from the first keepalived start


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    body: Body
    spec_changes: dict[str, Any] = field(default_factory=dict)
    # The VIP moves the operator asked for (one per failover, one per failback), with the arbiter; None: not
    # a transition scenario. The bench judges `vip_moves` against it where keepalived alone splits.
    asked_moves: int | None = None
    handovers: tuple[str, ...] = ()  # phases in which the preferred node takes the VIP back
    staggered: bool = False  # only the lowest-priority node boots with the lab; the others are powered on later
    three_nodes: bool = False  # the bench also runs it on three nodes


def _mark(lab: Lab, phase: Phase, name: str, t: float | None = None) -> float:
    """Start phase `name` now (or at t): the checker reports each phase's figures apart."""
    at = time.monotonic() if t is None else t
    phase.marks.append((name, at))
    lab.timeline.add(NOTE, "", f"phase {name}", t=at)
    return at


def _converge(lab: Lab, timing: Timing, phase: Phase) -> None:
    """Wait for the agents (if any) to open their gates, for the natural masters (VI_1 on a; VI_2, if any, on b),
    then for a quiet moment."""
    if lab.plan.spec.arbiter:
        took = lab.wait_agents_ready(AGENT_START_TIMEOUT)
        lab.timeline.add(NOTE, "", f"every agent has opened its gates ({took:.1f} s)")
    for i, vip in enumerate(lab.plan.vips):
        owner = lab.plan.nodes[i].name
        if lab.plan.spec.nopreempt:
            # nopreempt: whoever became master first keeps the VIP (with the arbiter: whose gate opened first).
            owner = _wait_single_holder(lab, vip, timing.master_down + 8)
        else:
            lab.wait_holders(vip, [owner], timing.master_down + 8)
        phase.owners[vip] = owner
    phase.converged_at = _stable_since(lab, phase.owners, min(timing.master_down, 1.0), timing.master_down + 8)
    lab.timeline.add(NOTE, "", "converged", t=phase.converged_at)
    _mark(lab, phase, "steady", phase.converged_at)
    time.sleep(max(timing.advert_int, 0.3))


def _stable_since(lab: Lab, owners: dict[str, str | None], hold: float, timeout: float) -> float:
    """When the owners last began holding their VIPs, once they have held them alone for `hold` seconds (a start-up
    handover still in flight when the owners first hold is start-up, not steady state); after `timeout`, now."""
    deadline = time.monotonic() + timeout
    since = time.monotonic()
    while time.monotonic() < deadline:
        if any(lab.holders(vip) != [owner] for vip, owner in owners.items()):
            since = time.monotonic()
        elif time.monotonic() - since >= hold:
            return since
        time.sleep(0.05)
    return time.monotonic()


def _after_advert(lab: Lab, rng: random.Random, timing: Timing, backup: str | None = None) -> None:
    """Right after an advert reached the backup, plus a seeded delay of up to a tenth of an interval: the
    backup's master-down timer then runs (nearly) its whole length, the failover DESIGN.md quotes."""
    backup = backup or lab.plan.nodes[1].name
    lab.timeline.add(NOTE, backup, "VRRP advert received", t=lab.wait_advert(backup))
    time.sleep(rng.uniform(0, timing.advert_int / 10))


def _fault_window(
    lab: Lab, rng: random.Random, timing: Timing, phase: Phase, inject: Callable[[], Heal | None]
) -> None:
    _after_advert(lab, rng, timing)
    phase.fault_at = _mark(lab, phase, "fault")
    heal = inject()
    time.sleep(timing.observe)
    if heal is not None:
        phase.heal_at = _mark(lab, phase, "heal")
        heal()
        time.sleep(max(timing.master_down, 2.0) + 0.5)


def _vrrp_cut(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)
    _fault_window(lab, rng, timing, phase, lambda: lab.faults.vrrp_cut(None, "both"))


def _hb_cut(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)
    _fault_window(lab, rng, timing, phase, lambda: lab.faults.heartbeat_cut(None))


def _isolate(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)
    _fault_window(lab, rng, timing, phase, lambda: lab.faults.isolate("a"))


def _power_off(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)

    def inject() -> None:
        lab.power("a", "off")

    _fault_window(lab, rng, timing, phase, inject)
    _fault_at_death(lab, phase, "a")


def _fault_at_death(lab: Lab, phase: Phase, node: str) -> None:
    """Failover counts from the moment the node died (its VIP vanished with its power), not from the ipmitool
    command that asked its BMC to do it (a BMC round trip plus the chassis script, 0.1-0.3 s here)."""
    start = phase.fault_at
    if start is None:
        return
    for event in lab.timeline.sorted():
        if event.kind == VIP_DEL and event.node == node and event.t >= start:
            phase.fault_at = event.t
            phase.marks = [(name, event.t if at == start else at) for name, at in phase.marks]
            lab.timeline.add(NOTE, node, "powered off (VIP gone with the power)", t=event.t)
            return


def _keepalived_crash(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)

    def inject() -> Heal:
        lab.faults.kill("a", "keepalived")
        node = lab.plan.node("a")

        def heal() -> None:
            lab.timeline.add("heal", "a", "keepalived restarted")
            lab.reaper.add(topology.start_keepalived(lab.plan, node))

        return heal

    _fault_window(lab, rng, timing, phase, inject)


def _pause_keepalived(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)
    _fault_window(lab, rng, timing, phase, lambda: lab.faults.pause("a", "keepalived"))


def _serial_cut(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)
    _fault_window(lab, rng, timing, phase, lab.faults.serial_cut)


def lease_token(lab: Lab, instance: str = "VI_1") -> int | None:
    """The fencing token of the instance's current lease in the witness Redis (None: no lease)."""
    key = f"keepalived-arbiter:{{{lab.plan.prefix}:{instance}}}:lease-token"
    try:
        text = lab.redis_cli("GET", key)
    except LabError:
        return None
    return int(text) if text.isdigit() else None


def _redis_restart_empty(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)
    before = lease_token(lab) if lab.plan.spec.arbiter else None
    _fault_window(lab, rng, timing, phase, lab.faults.redis_restart_empty)
    if lab.plan.spec.arbiter:
        after = lease_token(lab)
        phase.figures["tokens"] = {"before": before, "after": after}
        lab.timeline.add(NOTE, "", f"VI_1 lease token {before} before the restart, {after} at the end")


def _reference_lost(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)
    _fault_window(lab, rng, timing, phase, lambda: lab.faults.reference_lost("a"))


def _pause_agent_isolate(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    """The master's agent is frozen, then the master is cut off: it cannot step down by itself, so the other
    node must fence it before it keeps the VIP. Keepalived alone (no agent to freeze) is plain `isolate`."""
    _converge(lab, timing, phase)

    def inject() -> Heal:
        heals: list[Heal] = []
        if lab.plan.spec.arbiter:
            heals.append(lab.faults.pause("a", "agent"))
        else:
            lab.timeline.add(NOTE, "a", "keepalived alone: no agent to pause")
        heals.append(lab.faults.isolate("a"))

        def heal() -> None:
            # Also after a fence: the rules stay in a's namespace, and SIGCONT to a dead agent changes nothing.
            for undo in reversed(heals):
                undo()

        return heal

    _fault_window(lab, rng, timing, phase, inject)


def _nopreempt_return(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)
    _power_off_and_return(lab, rng, timing, phase)


def _wait_single_holder(lab: Lab, vip: str, timeout: float, not_: str | None = None) -> str:
    """The one node (other than `not_`) that alone holds `vip`, once one does; LabError with what was seen."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = lab.holders(vip)
        if len(seen) == 1 and seen[0] != not_:
            return seen[0]
        time.sleep(0.05)
    raise LabError(f"{vip}: expected one holder{f' other than {not_}' if not_ else ''} within {timeout:g}s, saw {seen}")


def _power_off_and_return(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    """The master is powered off; once another node holds, it is powered on again (phases fault, return)."""
    vip = lab.plan.vips[0]
    master = phase.owners.get(vip) or lab.plan.nodes[0].name
    _after_advert(lab, rng, timing, next(n.name for n in lab.plan.nodes if n.name != master))
    phase.fault_at = _mark(lab, phase, "fault")
    lab.power(master, "off")
    try:
        _wait_single_holder(lab, vip, timing.master_down + 5 + _agent_settle(lab), not_=master)
    except LabError as exc:
        lab.timeline.add(NOTE, "", f"no failover before the return: {exc}")
    time.sleep(1.0)
    _fault_at_death(lab, phase, master)
    phase.heal_at = _mark(lab, phase, "return")
    _boot(lab, timing, phase, master)


def _agent_settle(lab: Lab) -> float:
    return ARBITER_SETTLE if lab.plan.spec.arbiter else 0.0


def _boot(lab: Lab, timing: Timing, phase: Phase, node: str) -> None:
    """Power `node` on through its BMC, see its agent start (with the arbiter), and watch what follows."""
    old = lab.agent_pid(node) if lab.plan.spec.arbiter else None
    lab.power(node, "on")
    if lab.plan.spec.arbiter:
        new = lab.wait_agent_started(node, old)
        phase.figures.setdefault("booted", []).append({"node": node, "agent_pid_before": old, "agent_pid": new})
    time.sleep(timing.observe)


# --- transitions (issue 12): start-up, restarts, returns -------------------------------------------------


def _cold_start(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    """Every keepalived and agent started at once (the lab's build); then a quiet stretch, still judged."""
    _converge(lab, timing, phase)
    time.sleep(timing.observe)


def _staggered_start(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    """The lowest-priority node boots alone and takes the VIP; the others are powered on one at a time, the
    preferred node last (each preempts the one before)."""
    nodes = [n.name for n in lab.plan.nodes]
    first = nodes[-1]
    if lab.plan.spec.arbiter:
        took = lab.wait_agents_ready(AGENT_START_TIMEOUT)
        lab.timeline.add(NOTE, "", f"the agent of {first} has opened its gates ({took:.1f} s)")
    lab.wait_holders(lab.plan.vips[0], [first], timing.master_down + 8)
    time.sleep(1.0)
    for node in reversed(nodes[:-1]):
        _mark(lab, phase, f"boot-{node}")
        _boot(lab, timing, phase, node)
    phase.owners[lab.plan.vips[0]] = nodes[0]


def _restart_agents(lab: Lab, timing: Timing, phase: Phase, nodes: list[str]) -> None:
    for node in nodes:
        _mark(lab, phase, f"agent-restart-{node}")
        if not lab.plan.spec.arbiter:
            lab.timeline.add(NOTE, node, "keepalived alone: no agent to restart")
        else:
            old, new = lab.restart_agent(node)
            phase.figures.setdefault("agent_restarts", []).append({"node": node, "old_pid": old, "new_pid": new})
            try:
                took = lab.wait_agents_ready(AGENT_START_TIMEOUT)
                lab.timeline.add(NOTE, node, f"every agent has opened its gates again ({took:.1f} s)")
            except LabError as exc:
                lab.timeline.add(NOTE, node, f"gates not all open again: {exc}")
        time.sleep(timing.observe)


def _agent_restart_master(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)
    _restart_agents(lab, timing, phase, ["a"])


def _agent_restart_backup(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)
    _restart_agents(lab, timing, phase, ["b"])


def _rolling_upgrade(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    """Both agents restarted in turn, the backup's first, as an upgrade would."""
    _converge(lab, timing, phase)
    _restart_agents(lab, timing, phase, ["b", "a"])


def _keepalived_restart(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    """The backup goes deaf to VRRP (its gate closes: it cannot hear the master it must defer to), then its
    keepalived is restarted (keepalived rewrites the gate with init_file), then the cut heals."""
    _converge(lab, timing, phase)
    _after_advert(lab, rng, timing)
    phase.fault_at = _mark(lab, phase, "fault")
    heal = lab.faults.vrrp_cut("b", "in")
    time.sleep(timing.observe)
    _mark(lab, phase, "keepalived-restart")
    old, new = lab.restart_keepalived("b")
    phase.figures["keepalived_restart"] = {"node": "b", "old_pid": old, "new_pid": new}
    time.sleep(timing.observe)
    phase.heal_at = _mark(lab, phase, "heal")
    heal()
    time.sleep(max(timing.master_down, 2.0) + 0.5)


def _return_preempt(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    _converge(lab, timing, phase)
    _power_off_and_return(lab, rng, timing, phase)


def _heal_preempt(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    """The master loses the reference IP (with the arbiter it must let go), then it comes back: preemption."""
    _converge(lab, timing, phase)
    _after_advert(lab, rng, timing)
    phase.fault_at = _mark(lab, phase, "fault")
    heal = lab.faults.reference_lost("a")
    time.sleep(timing.observe)
    phase.heal_at = _mark(lab, phase, "heal")
    heal()
    time.sleep(timing.observe)


# --- fast adverts made safe (issue 14) -----------------------------------------------------------------------

VRRP_LOSS_PERCENT = 10
VRRP_LOSS_S = 60.0


def _vrrp_loss(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    """VRRP_LOSS_PERCENT % of VRRP packets dropped at random at every node for `timing.hold` s (default
    VRRP_LOSS_S), then healed: lost adverts make a backup take over while the master still holds (keepalived
    alone); the arbiter's heartbeats on the other media must veto those takeovers.

    `phase.figures["loss"]`, over the loss and the settling after its heal: `dual_events` (dual-master periods),
    `dual_master_ms` and the same per minute of loss, `vip_moves`."""
    hold = VRRP_LOSS_S if timing.hold is None else timing.hold
    _converge(lab, timing, phase)
    _after_advert(lab, rng, timing)
    phase.fault_at = _mark(lab, phase, "fault")
    heal = lab.faults.vrrp_loss(None, VRRP_LOSS_PERCENT)
    time.sleep(hold)
    phase.heal_at = _mark(lab, phase, "heal")
    heal()
    time.sleep(max(timing.master_down, 2.0) + 0.5)
    end = time.monotonic()
    events = lab.timeline.sorted()
    names = [n.name for n in lab.plan.nodes]
    vip = lab.plan.vips[0]
    seen = checker.figures(events, names, vip, phase.fault_at, end)
    dual = [p for p in checker.dual_periods(checker.hold_intervals(events, names, vip, end)) if p.end > phase.fault_at]
    phase.figures["loss"] = {
        "percent": VRRP_LOSS_PERCENT,
        "seconds": hold,
        "dual_events": len(dual),
        "dual_master_ms": round(seen.dual_master_ms, 1),
        "dual_ms_per_min": round(seen.dual_master_ms * 60 / hold, 1),
        "vip_moves": seen.vip_moves,
    }


# --- fencing that never claims more than it saw (issue 13) -------------------------------------------------


def _cut_every_medium(lab: Lab) -> Heal:
    """Every heartbeat medium between the nodes cut: VRRP and the Ethernet heartbeats dropped at every node (the
    rules stay in each namespace across a power cycle), every serial cable cut. Redis, the reference and the BMCs
    stay reachable."""
    heals = [lab.faults.heartbeat_cut(None), lab.faults.serial_cut()]

    def heal() -> None:
        for undo in reversed(heals):
            undo()

    return heal


def _wait_power(lab: Lab, node: str, powered: bool, timeout: float) -> float | None:
    """Monotonic time at which `node` was seen powered `powered` (None: not within timeout)."""
    deadline = time.monotonic() + timeout
    plan_node = lab.plan.node(node)
    while time.monotonic() < deadline:
        if topology.node_powered(plan_node) is powered:
            return time.monotonic()
        time.sleep(0.05)
    return None


def _refence_after_power_on(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    """A fenced node powered on again while still cut off must be fenced again (or the fencer escalates), and
    never be taken for off on an old proof.

    Phases: steady (a holds the VIP and the lease); fault: every heartbeat medium between a and b cut (VRRP and
    Ethernet heartbeats dropped at both nodes, every serial cable cut; Redis, the reference and the BMCs stay
    reachable), so a, the holder, fences b; power-on: once b is off, b is powered on again through its BMC, still
    cut off (its nftables rules stay in its namespace, the cable stays cut), and watched for the observation
    window (two master-down intervals, a lease TTL, margin) and one more master-down interval; heal: the cut
    undone. Keepalived alone has nobody to fence b: the scenario notes it and powers b on anyway (a no-op on a
    node that is on)."""
    _converge(lab, timing, phase)
    _after_advert(lab, rng, timing)
    phase.fault_at = _mark(lab, phase, "fault")
    heal = _cut_every_medium(lab)
    off_at = _wait_power(lab, "b", False, timing.observe + 10)
    if off_at is None:
        lab.timeline.add(NOTE, "b", "not powered off (nobody fenced it) before the power-on")
    else:
        lab.timeline.add(NOTE, "b", f"off {off_at - phase.fault_at:.1f} s after the cut")
        time.sleep(1.0)  # the fencer has recorded its fence
    on_at = _mark(lab, phase, "power-on")
    old = lab.agent_pid("b") if lab.plan.spec.arbiter else None
    lab.power("b", "on")
    if lab.plan.spec.arbiter:
        try:
            lab.wait_agent_started("b", old)
        except LabError as exc:
            lab.timeline.add(NOTE, "b", f"no agent after the power-on: {exc}")
    phase.figures["refence"] = {
        "fenced_off_s": None if off_at is None else round(off_at - lab.timeline.t0, 4),
        "power_on_s": round(on_at - lab.timeline.t0, 4),
    }
    time.sleep(timing.observe + timing.master_down)
    phase.heal_at = _mark(lab, phase, "heal")
    heal()
    time.sleep(timing.observe)
    phase.figures["refence"].update(_fence_claims(lab, "a", "b", on_at))


def _witness_down_isolate(lab: Lab, rng: random.Random, timing: Timing, phase: Phase) -> None:
    """With the witness down, a master cut off from everything must be fenced by the node that can still reach
    the reference and the master's BMC, which then holds the VIP (the failsafe), without a VIP flash loop.

    Phases: steady (a holds); witness-down: Redis (the lease witness) stopped, for a lease TTL and a second; fault:
    a isolated (every NIC drops all IP and ARP, every serial cable cut: no VRRP, heartbeat, reference, Redis or
    client), its BMC still reachable from b over the management network; watched for the deadtime, a lease TTL (a
    fence without a token waits for any lease of the silent node to run out), b's race delay, a fence and a
    master-down interval, with margin; heal: a's cut undone, Redis started again (empty)."""
    _converge(lab, timing, phase)
    _mark(lab, phase, "witness-down")
    heal_redis = lab.faults.redis_stop()
    time.sleep(ARBITER_SETTLE + 1.0)
    _after_advert(lab, rng, timing)
    phase.fault_at = _mark(lab, phase, "fault")
    heal_isolate = lab.faults.isolate("a")
    time.sleep(
        timing.observe + agentconf.LEASE_TTL_MS / 1000 + agentconf.RACE_DELAY_MS["b"] / 1000 + timing.master_down
    )
    phase.heal_at = _mark(lab, phase, "heal")
    heal_isolate()
    heal_redis()
    time.sleep(timing.observe)
    phase.figures["witness_down"] = _fence_claims(lab, "b", "a", phase.fault_at)


def _fence_claims(lab: Lab, fencer: str, target: str, since: float) -> dict[str, Any]:
    """What `fencer`'s agent said about fencing `target` after `since`, beside the status reads the target's BMC
    answered (arbiter.lab.fenceclaims), and how many of its OFF claims no read made since backs."""
    agent_log = _read_text(Path(lab.plan.node(fencer).dir, agentconf.AGENT_LOG))
    chassis = fenceclaims.chassis_log(_read_text(lab.bmcs[target].chassis_log_path), lab.wall_minus_mono)
    found: dict[str, Any] = fenceclaims.claims(agent_log, chassis, target, since, lab.timeline.t0)
    found["unproven_offs"] = len(fenceclaims.unproven_offs(found, round(since - lab.timeline.t0, 4)))
    return found


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("vrrp-cut", "nftables drops VRRP (IP protocol 112) at both nodes", _vrrp_cut),
        Scenario("hb-cut", "VRRP and every Ethernet heartbeat dropped; serial cables up", _hb_cut),
        Scenario(
            "isolate",
            "the master is cut off from everything (all NICs, serial)",
            _isolate,
            asked_moves=2,
            three_nodes=True,
        ),
        Scenario(
            "pause-agent-isolate",
            "the master's agent is SIGSTOPped, then the master is cut off from everything",
            _pause_agent_isolate,
        ),
        Scenario("power-off", "the master's BMC powers it off (ipmitool chassis power off)", _power_off),
        Scenario("keepalived-crash", "keepalived on the master is SIGKILLed", _keepalived_crash),
        Scenario("pause-keepalived", "keepalived on the master is SIGSTOPped, then continued", _pause_keepalived),
        Scenario("serial-cut", "every serial cable is cut", _serial_cut),
        Scenario("redis-restart-empty", "the witness Redis restarts with no data", _redis_restart_empty),
        Scenario("reference-lost", "the master loses the reference IP", _reference_lost),
        Scenario(
            "nopreempt-return",
            "nopreempt: the master is powered off, then returns",
            _nopreempt_return,
            {"nopreempt": True},
            asked_moves=1,
        ),
        Scenario(
            "cold-start", "every keepalived and agent started at once", _cold_start, asked_moves=0, three_nodes=True
        ),
        Scenario(
            "staggered-start",
            "the lowest-priority node boots first, the others one at a time, the preferred last",
            _staggered_start,
            handovers=("boot-a", "boot-b"),
            staggered=True,
            three_nodes=True,
        ),
        Scenario(
            "agent-restart-master",
            "the master's agent is restarted (SIGTERM, start)",
            _agent_restart_master,
            asked_moves=0,
        ),
        Scenario(
            "agent-restart-backup",
            "the backup's agent is restarted (SIGTERM, start)",
            _agent_restart_backup,
            asked_moves=0,
        ),
        Scenario(
            "rolling-upgrade", "both agents restarted in turn, the backup's first", _rolling_upgrade, asked_moves=0
        ),
        Scenario(
            "keepalived-restart",
            "the backup is deaf to VRRP (its gate closed), then its keepalived is restarted, then the cut heals",
            _keepalived_restart,
            asked_moves=0,
        ),
        Scenario(
            "return-preempt",
            "the master is powered off, then on again: it preempts",
            _return_preempt,
            asked_moves=2,
            handovers=("return",),
            three_nodes=True,
        ),
        Scenario(
            "heal-preempt",
            "the master loses the reference IP, then gets it back: it preempts",
            _heal_preempt,
            asked_moves=2,
            handovers=("heal",),
            three_nodes=True,
        ),
        Scenario(
            "refence-after-power-on",
            "every heartbeat medium cut, a fences b; b powered on again still cut off; then heal",
            _refence_after_power_on,
        ),
        Scenario(
            "witness-down-isolate",
            "Redis stopped, then the master cut off from everything (its BMC reachable); then heal",
            _witness_down_isolate,
        ),
        Scenario(
            "vrrp-loss",
            f"{VRRP_LOSS_PERCENT} % of VRRP packets dropped at random at every node for {VRRP_LOSS_S:g} s",
            _vrrp_loss,
            asked_moves=0,
        ),
        Scenario(
            "dual-instance",
            "two VRRP instances (VI_1 on a, VI_2 on b), VRRP cut at both nodes",
            _vrrp_cut,
            {"instances": 2},
        ),
    )
}


def run_scenario(
    name: str,
    *,
    seed: int = 0,
    advert_int: float = 1.0,
    vrrp_version: int = 2,
    arbiter: bool = False,
    report_dir: Path | None = None,
    nodes: int = 2,
    hold: float | None = None,
) -> dict[str, Any]:
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise LabError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
    base = LabSpec(nodes=nodes, advert_int=advert_int, vrrp_version=vrrp_version, arbiter=arbiter)
    spec = replace(base, **scenario.spec_changes)
    spec.check()
    timing = replace(Timing.of(spec), hold=hold)
    rng = random.Random(seed)
    phase = Phase()
    boot = [topology.NODE_NAMES[spec.nodes - 1]] if scenario.staggered else None
    with Lab(spec, boot=boot) as lab:
        lab.timeline.add(NOTE, "", f"scenario {name} (seed {seed})")
        started_at = lab.started_at if lab.started_at is not None else lab.timeline.t0
        lab.timeline.add(NOTE, "", "first keepalived start: judged from here", t=started_at)
        scenario.body(lab, rng, timing, phase)
        end_at = time.monotonic()
        agents_up = {n.name: lab.agent_running(n.name) for n in lab.plan.nodes if topology.node_powered(n)}
        processes = lab.processes()
        lab.recorder.stop()
        records = lab.record_agents_and_power()
        events = lab.timeline.sorted()
        names = [n.name for n in lab.plan.nodes]
        verdicts: dict[str, Verdict] = {
            vip: judge(events, names, vip, phase.fault_at, phase.heal_at, end_at, phase.owners.get(vip), started_at)
            for vip in lab.plan.vips
        }
        result = _result(name, seed, spec, lab, verdicts, end_at)
        marks = [(START_UP, started_at), *phase.marks]
        _add_transitions(result, events, names, list(lab.plan.vips), marks, end_at, lab.timeline.t0)
        asked = spec.nodes - 1 if scenario.staggered else scenario.asked_moves
        result.update(
            {
                "asked_moves": asked,
                "handovers": list(scenario.handovers),
                "processes_at_end": processes,
                "owners": dict(phase.owners),
                "converged_s": None if phase.converged_at is None else round(phase.converged_at - lab.timeline.t0, 4),
            }
        )
        result.update(phase.figures)
        if spec.arbiter:
            result["agents"] = _agents(records, agents_up, lab.timeline.t0)
            result["violations"] += _agent_violations(result["agents"])
        first = verdicts[lab.plan.vips[0]]
        result["fence_before_keep"] = first.fence_before_keep
        result["released_by"] = first.released_by
        result["fence_ms"] = _since(first.fence_at, phase.fault_at)
        result["stepdown_ms"] = _since(first.stepdown_at, phase.fault_at)
        if report_dir is not None:
            paths = write_report(
                report_dir, events, lab.timeline.t0, names, list(lab.plan.vips), verdicts, _title(name, spec)
            )
            result["report"] = [str(p) for p in paths] + [str(p) for p in copy_logs(lab, report_dir)]
    return result


def _add_transitions(
    result: dict[str, Any],
    events: list[Event],
    nodes: list[str],
    vips: list[str],
    marks: list[tuple[str, float]],
    end_at: float,
    t0: float,
) -> None:
    """Per VIP, the transition figures of the whole run (`run`) and of each phase (`phases`); the first VIP's
    also at the top level (`run`, `phases`, `vip_moves`, `fences`)."""
    for vip in vips:
        whole, phases = phase_figures(events, nodes, vip, marks, end_at)
        result["per_vip"][vip]["run"] = whole.as_dict()
        result["per_vip"][vip]["phases"] = [
            {"phase": name, "from_s": round(start - t0, 4), "to_s": round(end - t0, 4), **figures.as_dict()}
            for name, start, end, figures in phases
        ]
    first = result["per_vip"][vips[0]]
    result["run"] = first["run"]
    result["phases"] = first["phases"]
    result["vip_moves"] = first["run"]["vip_moves"]
    result["fences"] = first["run"]["fences"]


def copy_logs(lab: Lab, report_dir: Path, names: tuple[str, ...] = ("agent.log", "keepalived.log")) -> list[Path]:
    """Each node's logs (`names`, as `NAME-NODE.log`) beside the picture: the lab directory goes with the lab."""
    copied = []
    for node in lab.plan.nodes:
        for name in names:
            source = Path(node.dir, name)
            if source.exists():
                target = report_dir / f"{name.removesuffix('.log')}-{node.name}.log"
                shutil.copyfile(source, target)
                copied.append(target)
    return copied


def _since(t: float | None, fault_at: float | None) -> float | None:
    return None if t is None or fault_at is None else round((t - fault_at) * 1000, 1)


def _agents(records: dict[str, list[AgentRecord]], up: dict[str, bool], t0: float) -> dict[str, Any]:
    """Per node: whether its agent still ran at the end (None: the node was off), how many decisions it logged,
    and its gate changes and fences (times in seconds since t0, as on the timeline)."""
    from arbiter.lab.agentlog import timeline_events  # noqa: PLC0415 - only arbiter runs need it

    out: dict[str, Any] = {}
    for node, mine in records.items():
        events = timeline_events(mine, list(records))
        out[node] = {
            "running_at_end": up.get(node),
            "decisions": sum(1 for r in mine if r.gate),
            "gate_changes": [
                {"t": round(e.t - t0, 4), "detail": e.detail} for e in events if e.kind in (GATE, DECISION)
            ],
            "fences": [
                {"t": round(e.t - t0, 4), "node": e.node, "detail": e.detail} for e in events if e.kind == FENCE
            ],
        }
    return out


def _agent_violations(agents: dict[str, Any]) -> list[str]:
    found = []
    for node, figures in agents.items():
        if figures["running_at_end"] is False:
            found.append(f"the agent of node {node} is not running at the end (see its agent.log)")
        if not figures["decisions"]:
            found.append(f"the agent of node {node} logged no decision")
    return found


def _title(name: str, spec: LabSpec) -> str:
    who = "keepalived + arbiter" if spec.arbiter else "keepalived alone"
    return f"{name}: {who}, VRRPv{spec.vrrp_version}, advert_int {spec.advert_int:g}s"


def _result(
    name: str, seed: int, spec: LabSpec, lab: Lab, verdicts: dict[str, Verdict], end_at: float
) -> dict[str, Any]:
    first = verdicts[lab.plan.vips[0]]
    t0 = lab.timeline.t0
    return {
        "scenario": name,
        "arbiter": spec.arbiter,
        "seed": seed,
        "advert_int": spec.advert_int,
        "vrrp_version": spec.vrrp_version,
        "nodes": [n.name for n in lab.plan.nodes],
        "vip": lab.plan.vips[0],
        "dual_master_ms": round(first.dual_master_ms, 1),
        "no_master_ms": round(first.no_master_ms, 1),
        "failover_ms": None if first.failover_ms is None else round(first.failover_ms, 1),
        "settled_ms": None if first.settled_ms is None else round(first.settled_ms, 1),
        "arp_flaps": first.arp_flaps,
        "violations": [v for verdict in verdicts.values() for v in verdict.violations],
        "holders_at_end": first.holders_at_end,
        "dual_until_heal": first.dual_until_heal,
        "per_vip": {
            vip: {
                "dual_master_ms": round(v.dual_master_ms, 1),
                "no_master_ms": round(v.no_master_ms, 1),
                "failover_ms": None if v.failover_ms is None else round(v.failover_ms, 1),
                "arp_flaps": v.arp_flaps,
                "holders_at_end": v.holders_at_end,
                "dual_until_heal": v.dual_until_heal,
            }
            for vip, v in verdicts.items()
        },
        "duration_s": round(end_at - t0, 2),
        "timeline": lab.timeline.as_dicts(),
    }
