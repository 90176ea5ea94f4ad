"""The judge: figures and violations computed from a recorded history, for one VIP at a time. Pure: no IO.

Conventions (all times are the events' own clock, `time.monotonic()` seconds, absolute — not relative to t0):

- A node holds the VIP from its VIP_ADD to its next VIP_DEL (repeated ADDs or DELs change nothing). Hold
  intervals still open at `end_at` are closed there; events after `end_at` are ignored. Events may arrive in
  any order: they are sorted by time first (stably, so equal times keep their recorded order).
- The window starts at `judged_from` when given (the moment the scenario saw the cluster converged: what came
  before, e.g. a preemption while the nodes started, is on the timeline but not judged), else at the earliest
  event of any kind (or `end_at` when there are none). Dual periods are clipped to the window; ARP flaps count
  from the client's last answer before it.
- The client's answer for the VIP is the `node` of the latest ARP event for it ("" = no reply, "?" = a MAC the
  recorder could not name); ARP details read `"<vip> <first-mac or -> <all-macs comma-separated or ->"`.
- `arp_flaps` counts changes of the client's first-answer node between two *different non-empty* answers after
  the first observation: a -> b is one flap, a -> "" -> b is one flap (the answer moved through a gap), and
  a -> "" -> a is none (a gap is "time without master", not a flap). A clean failover therefore shows one
  flap; a split brain where both nodes answer shows one per swap of the first responder.
- `failover_ms` runs from `fault_at` to the first moment at which one node that did not hold the VIP at the
  fault (or is not `owner_at_fault`, when given) holds it *and* is the client's first ARP answer. When the
  history has no ARP event for the VIP at all (no client was watching), holding alone decides.
- `settled_ms` runs from `fault_at` to the start of the final hold of the node that alone holds the VIP at the
  end, when that is not the owner at the fault: the failover that stuck (equal to `failover_ms` unless the
  successor took the VIP, lost it and took it again).
- With the arbiter (GATE and FENCE events from the agents): `fence_at` is the first fence of the owner at the
  fault confirmed OFF after the fault; `stepdown_at` the first time the owner's own agent closed a gate after
  the fault; `released_by` says what ended the owner's last hold ("step-down" when its gate closed before the
  VIP left it, else "fence" when it was fenced, else "keepalived"; None while it still holds).
  `fence_before_keep` (None when nobody fenced the owner or no other node alone holds the VIP at the end) is
  True when the survivor keeps the VIP only from the fence on: the fence was confirmed OFF, the owner no longer
  holds, and no dual master since the fault outlasts the fence's confirmation.
- Transition figures (`figures`, `phase_figures`), for a window [start, end) of the run: `dual_master_ms` and
  `no_master_ms` are the parts of the window with two or more holders, with none; `vip_moves` counts changes of
  the VIP's holder inside the window: the holder is the node that most recently began holding among those
  holding now (its gratuitous ARP is the newest), a gap with no holder keeps the last one, and the first holder
  of the run is an acquisition, not a move (a -> none -> a is no move; a dual-master flash a -> a+b -> a is two);
  `arp_flaps` counts the flaps (as above) whose answer falls in the window; `fences` counts the fence requests
  (FENCE events "by X: requested") in the window, whoever they target. A phase runs from its mark to the next
  mark (the last to `end_at`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from arbiter.lab.events import ARP, FENCE, GATE, POWER, VIP_ADD, VIP_DEL, Event

Interval = tuple[float, float]
STEPDOWN_LOG_SLACK = 0.25  # seconds: a gate closed this long after the VIP left still explains its leaving


@dataclass(frozen=True)
class ArpAnswer:
    """One ARP observation of the client, parsed from an ARP event."""

    t: float
    vip: str
    node: str  # "" no reply, "?" unknown MAC
    mac: str  # "" when nobody answered
    macs: tuple[str, ...]  # every MAC that answered, first responder first


@dataclass(frozen=True)
class DualPeriod:
    """A stretch of time during which two or more nodes held the same VIP."""

    start: float
    end: float
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    vip: str
    dual_master_ms: float
    no_master_ms: float
    failover_ms: float | None
    arp_flaps: int
    holders_at_end: list[str]
    dual_until_heal: bool
    violations: list[str]
    intervals: dict[str, list[Interval]] = field(default_factory=dict)  # absolute monotonic seconds
    dual_periods: list[DualPeriod] = field(default_factory=list)
    settled_ms: float | None = None
    fence_at: float | None = None
    stepdown_at: float | None = None
    released_by: str | None = None
    fence_before_keep: bool | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        failover = "none" if self.failover_ms is None else f"{self.failover_ms:.0f} ms"
        holders = ", ".join(self.holders_at_end) or "nobody"
        return (
            f"{self.vip}: dual master {self.dual_master_ms:.0f} ms, failover {failover}, "
            f"ARP flaps {self.arp_flaps}, no master {self.no_master_ms:.0f} ms, held at end by {holders}"
        )


def parse_arp_detail(detail: str) -> tuple[str, str, tuple[str, ...]]:
    """`"<vip> <mac or -> <macs or ->"` -> (vip, mac or "", macs)."""
    parts = detail.split()
    vip = parts[0] if parts else ""
    mac = parts[1] if len(parts) > 1 and parts[1] != "-" else ""
    macs = tuple(m for m in parts[2].split(",") if m and m != "-") if len(parts) > 2 else ((mac,) if mac else ())
    return vip, mac, macs


def arp_answers(events: Iterable[Event], vip: str) -> list[ArpAnswer]:
    """The client's ARP observations for `vip`, in time order."""
    out: list[ArpAnswer] = []
    for e in sorted((e for e in events if e.kind == ARP), key=lambda e: e.t):
        ev_vip, mac, macs = parse_arp_detail(e.detail)
        if ev_vip == vip:
            out.append(ArpAnswer(e.t, vip, e.node, mac, macs))
    return out


def hold_intervals(events: Iterable[Event], nodes: Sequence[str], vip: str, end_at: float) -> dict[str, list[Interval]]:
    """VIP hold intervals per node (every node of `nodes`, plus any other node seen adding or removing `vip`)."""
    ordered = sorted((e for e in events if e.kind in (VIP_ADD, VIP_DEL) and e.detail == vip), key=lambda e: e.t)
    intervals: dict[str, list[Interval]] = {n: [] for n in nodes}
    since: dict[str, float] = {}
    for e in ordered:
        if e.t > end_at:
            break
        intervals.setdefault(e.node, [])
        if e.kind == VIP_ADD and e.node not in since:
            since[e.node] = e.t
        elif e.kind == VIP_DEL and e.node in since:
            start = since.pop(e.node)
            if e.t > start:
                intervals[e.node].append((start, e.t))
    for node, start in since.items():
        if end_at > start:
            intervals[node].append((start, end_at))
    return intervals


def dual_periods(intervals: dict[str, list[Interval]]) -> list[DualPeriod]:
    """Maximal stretches during which at least two nodes hold at once, with every node that held during it."""
    edges: list[tuple[float, int, str]] = []
    for node, spans in intervals.items():
        for start, end in spans:
            edges.append((start, 1, node))
            edges.append((end, -1, node))
    # At equal times, releases before acquisitions: a handover at one instant is not an overlap.
    edges.sort(key=lambda x: (x[0], x[1]))
    holding: set[str] = set()
    periods: list[DualPeriod] = []
    began: float | None = None
    involved: set[str] = set()
    for t, delta, node in edges:
        if delta > 0:
            holding.add(node)
        else:
            holding.discard(node)
        if len(holding) >= 2:
            if began is None:
                began = t
                involved = set()
            involved |= holding
        elif began is not None:
            if t > began:
                periods.append(DualPeriod(began, t, tuple(n for n in intervals if n in involved)))
            began = None
    return periods


def _holders_at(intervals: dict[str, list[Interval]], t: float) -> list[str]:
    return [n for n, spans in intervals.items() if any(s <= t < e for s, e in spans)]


def holders_at_end(intervals: dict[str, list[Interval]], end_at: float) -> list[str]:
    return [n for n, spans in intervals.items() if any(e >= end_at > s for s, e in spans)]


def no_master_gaps(intervals: dict[str, list[Interval]], start: float, end: float) -> list[Interval]:
    """The stretches of [start, end) in which nobody holds the VIP."""
    spans = sorted((s, e) for ss in intervals.values() for s, e in ss if e > start and s < end)
    gaps: list[Interval] = []
    at = start
    for s, e in spans:
        if s > at:
            gaps.append((at, s))
        at = max(at, e)
    if at < end:
        gaps.append((at, end))
    return gaps


def _no_master_seconds(intervals: dict[str, list[Interval]], start: float, end: float) -> float:
    return sum(e - s for s, e in no_master_gaps(intervals, start, end))


def _answer_at(answers: Sequence[ArpAnswer], t: float) -> ArpAnswer | None:
    last: ArpAnswer | None = None
    for a in answers:
        if a.t > t:
            break
        last = a
    return last


def _failover_at(
    intervals: dict[str, list[Interval]],
    answers: Sequence[ArpAnswer],
    fault_at: float,
    owners: set[str],
    end_at: float,
) -> float | None:
    # Both conditions are step functions: checking at every breakpoint from the fault on finds the first moment.
    moments = {fault_at}
    moments.update(s for spans in intervals.values() for s, _ in spans if fault_at <= s <= end_at)
    moments.update(a.t for a in answers if fault_at <= a.t <= end_at)
    for t in sorted(moments):
        successors = [n for n in _holders_at(intervals, t) if n not in owners]
        if not successors:
            continue
        if not answers:
            return t
        answer = _answer_at(answers, t)
        if answer is not None and answer.node in successors:
            return t
    return None


def _flaps(answers: Sequence[ArpAnswer]) -> int:
    flaps = 0
    last = ""
    for a in answers:
        if not a.node:
            continue
        if last and a.node != last:
            flaps += 1
        last = a.node
    return flaps


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True)
class Release:
    """How the owner at the fault lost the VIP, from the agents' events (see the module docstring)."""

    fence_at: float | None
    stepdown_at: float | None
    released_by: str | None
    fence_before_keep: bool | None


def release(
    events: Sequence[Event],
    intervals: dict[str, list[Interval]],
    periods: Sequence[DualPeriod],
    owner: str | None,
    fault_at: float | None,
    end_at: float,
) -> Release:
    if owner is None or fault_at is None:
        return Release(None, None, None, None)
    ordered = sorted((e for e in events if e.t >= fault_at and e.node == owner), key=lambda e: e.t)
    fences = [e for e in ordered if e.kind == FENCE]
    fence_at = next((e.t for e in fences if ": confirmed" in e.detail), None)
    stepdown_at = next((e.t for e in ordered if e.kind == GATE and " closed" in e.detail), None)
    holders_end = holders_at_end(intervals, end_at)
    released_by: str | None = None
    ended = max((e for _, e in intervals.get(owner, [])), default=None)
    if owner not in holders_end and ended is not None:
        # The power log is written once the node's addresses are gone: its line follows the VIP's removal.
        powered_off = any(e.kind == POWER and e.detail == "off" and abs(e.t - ended) < 1.0 for e in ordered)
        # The agent logs a decision after writing its gate; keepalived may drop the VIP before that line's stamp.
        if stepdown_at is not None and stepdown_at <= ended + STEPDOWN_LOG_SLACK:
            released_by = "step-down"
        elif any(e.t <= ended for e in fences):
            released_by = "fence"
        elif powered_off:
            released_by = "power-off"
        else:
            released_by = "keepalived"
    survivors = [n for n in holders_end if n != owner]
    keep: bool | None = None
    if fences and len(survivors) == 1:
        keep = False
        if fence_at is not None and owner not in holders_end:
            keep = all(p.end <= fence_at for p in periods if p.end >= fault_at)
    return Release(fence_at, stepdown_at, released_by, keep)


def judge(
    events: list[Event],
    nodes: list[str],
    vip: str,
    fault_at: float | None,
    heal_at: float | None,
    end_at: float,
    owner_at_fault: str | None = None,
    judged_from: float | None = None,
) -> Verdict:
    """Judge one VIP over the recorded window ending at `end_at` (see the module docstring for definitions)."""
    intervals = hold_intervals(events, nodes, vip, end_at)
    window_start = min((e.t for e in events), default=end_at) if judged_from is None else judged_from
    periods = [
        DualPeriod(max(p.start, window_start), p.end, p.nodes) for p in dual_periods(intervals) if p.end > window_start
    ]
    dual_s = sum(p.end - p.start for p in periods)
    no_master_s = _no_master_seconds(intervals, fault_at if fault_at is not None else window_start, end_at)
    answers = [a for a in arp_answers(events, vip) if a.t <= end_at]
    before = [a for a in answers if a.t < window_start]
    answers = before[-1:] + [a for a in answers if a.t >= window_start]

    failover_s: float | None = None
    if fault_at is not None:
        owners = {owner_at_fault} if owner_at_fault is not None else set(_holders_at(intervals, fault_at))
        at = _failover_at(intervals, answers, fault_at, owners, end_at)
        failover_s = None if at is None else at - fault_at

    holders_end = holders_at_end(intervals, end_at)
    owner = owner_at_fault
    if owner is None and fault_at is not None:
        at_fault = _holders_at(intervals, fault_at)
        owner = at_fault[0] if len(at_fault) == 1 else None
    released = release(events, intervals, periods, owner, fault_at, end_at)
    settled_s: float | None = None
    if fault_at is not None and len(holders_end) == 1 and holders_end[0] != owner:
        last_start = max(s for s, e in intervals[holders_end[0]] if e >= end_at)
        settled_s = max(last_start, fault_at) - fault_at
    until = heal_at if heal_at is not None else end_at
    dual_until_heal = fault_at is not None and any(p.start >= fault_at and p.end >= until for p in periods)

    violations: list[str] = []
    if periods:
        involved = [n for n in intervals if any(n in p.nodes for p in periods)]
        violations.append(f"dual master for {dual_s * 1000:.0f} ms ({vip} on {_and(involved)})")
        if dual_until_heal:
            violations.append(
                f"dual master on {vip} lasted until the heal"
                if heal_at is not None
                else f"dual master on {vip} never ended"
            )
    if not holders_end:
        violations.append(f"no node holds {vip} at the end")
    elif len(holders_end) > 1:
        violations.append(f"{vip} held by {_and(holders_end)} at the end")
    final = answers[-1] if answers else None
    if final is not None:
        if len(final.macs) > 1:
            violations.append(f"{len(final.macs)} MACs answer the client's ARP for {vip} at the end")
        if final.node and final.node not in holders_end:
            violations.append(f"the client's ARP for {vip} is answered by {final.node}, which does not hold it")
        if not final.node and holders_end:
            violations.append(f"nobody answers the client's ARP for {vip} at the end")

    return Verdict(
        vip=vip,
        dual_master_ms=dual_s * 1000.0,
        no_master_ms=no_master_s * 1000.0,
        failover_ms=None if failover_s is None else failover_s * 1000.0,
        arp_flaps=_flaps(answers),
        holders_at_end=holders_end,
        dual_until_heal=dual_until_heal,
        violations=violations,
        intervals=intervals,
        dual_periods=periods,
        settled_ms=None if settled_s is None else settled_s * 1000.0,
        fence_at=released.fence_at,
        stepdown_at=released.stepdown_at,
        released_by=released.released_by,
        fence_before_keep=released.fence_before_keep,
    )


# --- transition figures: the whole run and each phase -----------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """One VIP over one window of the run (see the module docstring)."""

    dual_master_ms: float
    vip_moves: int
    no_master_ms: float
    arp_flaps: int
    fences: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "dual_master_ms": round(self.dual_master_ms, 1),
            "vip_moves": self.vip_moves,
            "no_master_ms": round(self.no_master_ms, 1),
            "arp_flaps": self.arp_flaps,
            "fences": self.fences,
        }


def vip_moves(intervals: dict[str, list[Interval]]) -> list[tuple[float, str, str]]:
    """Every change of the VIP's holder as (time, from, to), in time order (see the module docstring)."""
    edges: list[tuple[float, int, str]] = []
    for node, spans in intervals.items():
        for start, end in spans:
            edges.append((start, 1, node))
            edges.append((end, -1, node))
    edges.sort(key=lambda x: (x[0], x[1]))  # releases first at equal times, as in dual_periods
    since: dict[str, float] = {}
    last: str | None = None
    moves: list[tuple[float, str, str]] = []
    for t, delta, node in edges:
        if delta > 0:
            since[node] = t
        else:
            since.pop(node, None)
        if not since:
            continue
        holder = max(since, key=lambda n: since[n])
        if last is not None and holder != last:
            moves.append((t, last, holder))
        last = holder
    return moves


def _flap_times(answers: Sequence[ArpAnswer]) -> list[float]:
    times = []
    last = ""
    for a in answers:
        if not a.node:
            continue
        if last and a.node != last:
            times.append(a.t)
        last = a.node
    return times


def _overlap(periods: Sequence[DualPeriod], start: float, end: float) -> float:
    return sum(max(0.0, min(p.end, end) - max(p.start, start)) for p in periods)


def figures(events: Sequence[Event], nodes: Sequence[str], vip: str, start: float, end: float) -> Figures:
    """The transition figures of `vip` over [start, end); the history before `start` only says who held."""
    intervals = hold_intervals(events, nodes, vip, end)
    answers = arp_answers(events, vip)
    fence_requests = [e.t for e in events if e.kind == FENCE and ": requested" in e.detail]
    return Figures(
        dual_master_ms=_overlap(dual_periods(intervals), start, end) * 1000.0,
        vip_moves=sum(1 for t, _, _ in vip_moves(intervals) if start <= t < end),
        no_master_ms=_no_master_seconds(intervals, start, end) * 1000.0,
        arp_flaps=sum(1 for t in _flap_times([a for a in answers if a.t < end]) if t >= start),
        fences=sum(1 for t in fence_requests if start <= t < end),
    )


def phase_windows(marks: Sequence[tuple[str, float]], end_at: float) -> list[tuple[str, float, float]]:
    """(name, start, end) per phase: each mark runs to the next one (in time order), the last to `end_at`."""
    ordered = sorted(marks, key=lambda m: m[1])
    return [
        (name, start, ordered[i + 1][1] if i + 1 < len(ordered) else end_at) for i, (name, start) in enumerate(ordered)
    ]


def phase_figures(
    events: Sequence[Event], nodes: Sequence[str], vip: str, marks: Sequence[tuple[str, float]], end_at: float
) -> tuple[Figures, list[tuple[str, float, float, Figures]]]:
    """The whole run (from the first mark to `end_at`) and each phase, for one VIP."""
    windows = phase_windows(marks, end_at)
    start = windows[0][1] if windows else end_at
    run = figures(events, nodes, vip, start, end_at)
    return run, [(name, s, e, figures(events, nodes, vip, s, e)) for name, s, e in windows]
