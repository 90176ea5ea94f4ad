"""The chaos checker: every verdict over the whole history of one chaos run, from the first keepalived start to
the end. Pure: the runner gathers the history (timeline, the client's writes, the store's, the witness's
leases) and this module judges it.

Clocks: timeline events are `time.monotonic()` seconds; the workload's files are wall-clock seconds (the
store's and the witness's Redis TIME, the client's `time.time()`), moved onto the monotonic clock with the
lab's `wall_minus_mono`.

The checks, each a line in `violations` naming its bound (`Bounds`, stated in the README's chaos section):
- **dual master**: each stretch with two or more holders of the VIP longer than `dual_master_s` (one advert
  interval: the start-up bound, and the overlap the design allows where no evidence is shared);
- **no master**: a stretch with no holder during which some node was `able` (powered, booted, no fault touching
  it or the witness) for longer than `no_master_s` (failover with fencing, plus a lease TTL);
- with the arbiter, against the witness's leases: a **token going backwards**; a node holding the VIP while
  another node holds the lease, longer than `lease_overlap_s` (the VIP held past its lease without the peer's
  word); a **fence of the lease holder** (judged at each attempt at a fencing device); a **mutual fence** (each
  of two nodes asked to fence the other within `mutual_fence_s`);
- the data: an **acknowledged write missing** from the store; a **stale write**: a write the store accepted from
  a node not entitled to write at that moment. With the arbiter, entitled = holding the witness's lease with the
  write's token, or a lease the witness forgot (restarted empty: `_entitles`), judged `LEASE_SLACK` before and
  after the write (the watcher polls, so a change within that of the write cannot be told apart). A write after
  a newer token was issued, by another node's lease, or on its own lease run out is stale. Keepalived alone has
  no lease, and entitled = the node that most recently
  took the VIP (the older master of a split writing on). `split_writes` counts that for both;
- the end: exactly one node holds the VIP;
- the run: an agent's traceback or exit, and anything left behind after teardown (the runner lists them).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from arbiter.lab.chaos.workload import LeaseSeen, Stored, Write
from arbiter.lab.checker import DualPeriod, Interval, dual_periods, hold_intervals, holders_at_end, no_master_gaps
from arbiter.lab.events import FENCE, Event

LEASE_SLACK = 0.025  # s: the lease watcher polls every 10 ms; a write this close to a lease change is not judged
SHOWN = 5  # examples listed per kind of violation


@dataclass(frozen=True)
class Bounds:
    dual_master_s: float
    no_master_s: float
    lease_overlap_s: float
    mutual_fence_s: float = 10.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class History:
    events: Sequence[Event]
    nodes: Sequence[str]
    vip: str
    instance: str
    start: float  # monotonic: the first keepalived start
    end: float
    wall_minus_mono: float
    arbiter: bool
    writes: Sequence[Write] = ()
    stored: Sequence[Stored] = ()
    leases: Sequence[LeaseSeen] = ()
    able: dict[str, list[Interval]] = field(default_factory=dict)  # monotonic
    agent_problems: Sequence[str] = ()
    left_behind: Sequence[str] = ()


def check(h: History, bounds: Bounds) -> dict[str, Any]:
    """Every verdict (see the module docstring): `violations` (a list of sentences) and the figures behind them."""
    intervals = hold_intervals(h.events, h.nodes, h.vip, h.end)
    violations: list[str] = []
    periods = [p for p in dual_periods(intervals) if p.end > h.start]
    violations += _dual_master(periods, bounds, h)
    gaps = no_master_gaps(intervals, h.start, h.end)
    violations += _no_master_beyond(gaps, h, bounds)
    holders_end = holders_at_end(intervals, h.end)
    if len(holders_end) != 1:
        violations.append(f"the end: {len(holders_end)} nodes hold {h.vip} ({', '.join(holders_end) or 'none'})")
    lease = _LeaseHistory(h.leases, h.instance, h.wall_minus_mono)
    if h.arbiter:
        violations += _tokens_backwards(lease, h)
        violations += _vip_against_lease(intervals, lease, bounds, h)
        violations += _fences(h, lease, bounds)
    acked = {w.value for w in h.writes if w.outcome == "ok"}
    stored_values = {s.value for s in h.stored}
    missing = sorted(acked - stored_values)
    if missing:
        violations.append(f"writes: {len(missing)} acknowledged writes missing from the store (values {_few(missing)})")
    split = [s for s in h.stored if not _latest_acquirer(intervals, s.t - h.wall_minus_mono, s.node)]
    stale = [s for s in h.stored if not lease.entitled(s)] if h.arbiter else split
    if stale:
        rule = "without the witness's lease with its token" if h.arbiter else "while another node took the VIP after it"
        violations.append(
            f"writes: {len(stale)} stale writes accepted ({rule}; first: value {stale[0].value} from {stale[0].node} "
            f"token {stale[0].token} at +{stale[0].t - h.wall_minus_mono - h.start:.3f} s)"
        )
    tokens = [s.token for s in h.stored]
    if any(b < a for a, b in itertools.pairwise(tokens)):
        violations.append("writes: the store accepted a token lower than one before it")
    violations += [f"agent: {p}" for p in h.agent_problems]
    violations += [f"left behind: {p}" for p in h.left_behind]
    return {
        "violations": violations,
        "stale_writes": len(stale),
        "split_writes": len(split),
        "writes": {
            "sent": len(h.writes),
            "acknowledged": len(acked),
            "refused": sum(1 for w in h.writes if w.outcome == "no"),
            "unanswered": sum(1 for w in h.writes if w.outcome == "err"),
            "stored": len(h.stored),
            "missing": len(missing),
            "writers": sorted({s.node for s in h.stored}),
        },
        "dual_master": {
            "events": len(periods),
            "ms": round(sum(min(p.end, h.end) - max(p.start, h.start) for p in periods) * 1000, 1),
            "longest_ms": round(max((p.end - max(p.start, h.start) for p in periods), default=0.0) * 1000, 1),
        },
        "no_master_longest_ms": round(max((e - s for s, e in gaps), default=0.0) * 1000, 1),
        "lease_changes": sum(1 for x in h.leases if x.instance == h.instance and x.up),
        "holders_at_end": holders_end,
        "bounds": bounds.as_dict(),
    }


def _few(values: Sequence[Any]) -> str:
    shown = ", ".join(str(v) for v in values[:SHOWN])
    return shown + (f" and {len(values) - SHOWN} more" if len(values) > SHOWN else "")


def _rel(h: History, t: float) -> str:
    return f"+{t - h.start:.3f} s"


def _dual_master(periods: Sequence[DualPeriod], bounds: Bounds, h: History) -> list[str]:
    found = []
    for p in periods:
        length = p.end - max(p.start, h.start)
        if length > bounds.dual_master_s:
            found.append(
                f"dual master: {length * 1000:.0f} ms on {h.vip} ({', '.join(p.nodes)}) from {_rel(h, p.start)}, "
                f"beyond the bound of {bounds.dual_master_s * 1000:.0f} ms (one advert interval)"
            )
    return found


def _no_master_beyond(gaps: Sequence[Interval], h: History, bounds: Bounds) -> list[str]:
    found = []
    for s, e in gaps:
        for node, spans in h.able.items():
            longest = max((min(e, b) - max(s, a) for a, b in spans), default=0.0)
            if longest > bounds.no_master_s:
                found.append(
                    f"no master: {h.vip} held by nobody for {(e - s):.1f} s from {_rel(h, s)} while node {node} "
                    f"was able for {longest:.1f} s of it, beyond the bound of {bounds.no_master_s:.1f} s"
                )
                break
    return found


class _LeaseHistory:
    """The witness's lease of one instance over time (monotonic), as the watcher saw it."""

    def __init__(self, seen: Sequence[LeaseSeen], instance: str, wall_minus_mono: float) -> None:
        self.wall_minus_mono = wall_minus_mono
        self.seen = sorted((x for x in seen if x.instance == instance), key=lambda x: x.t)
        self.times = [x.t - wall_minus_mono for x in self.seen]

    def at(self, t: float) -> LeaseSeen | None:
        """The last observation at or before `t` (monotonic); None before the first."""
        i = bisect.bisect_right(self.times, t)
        return self.seen[i - 1] if i else None

    def spans(self) -> list[tuple[float, float, LeaseSeen]]:
        ends = [*self.times[1:], float("inf")]
        return list(zip(self.times, ends, self.seen, strict=True))

    def entitled(self, write: Stored) -> bool:
        """False only when, just before and just after the write, the witness answered and its lease did not
        entitle the writer (see `_entitles`)."""
        t = write.t - self.wall_minus_mono
        return any(_entitles(self.at(when), write) for when in (t - LEASE_SLACK, t + LEASE_SLACK))


def _entitles(x: LeaseSeen | None, write: Stored) -> bool:
    """Whether the witness's lease `x` allows `write`: the writer holds it with the write's token; or nobody holds
    it and the witness has issued no token above the write's and does not remember issuing the write's own (it
    forgot: restarted empty; the next token will be higher and the store will then refuse this one). A lease that
    ran out (the witness still remembers the write's token) entitles nobody. Not judged (True): no answer."""
    if x is None or not x.up:
        return True
    if x.holder:
        return _lab_node(x.holder) == write.node and x.token == write.token
    return x.issued is None or x.issued < write.token


def _lab_node(holder: str) -> str:
    return holder.removeprefix("node-")


def _tokens_backwards(lease: _LeaseHistory, h: History) -> list[str]:
    found = []
    top: int | None = None
    for when, x in zip(lease.times, lease.seen, strict=True):
        if x.token is None:
            continue
        if top is not None and x.token < top:
            found.append(
                f"token: the witness's token for {h.instance} went from {top} back to {x.token} at {_rel(h, when)}"
            )
        top = x.token if top is None else max(top, x.token)
    return found


def _vip_against_lease(
    intervals: dict[str, list[Interval]], lease: _LeaseHistory, bounds: Bounds, h: History
) -> list[str]:
    found = []
    for node, spans in intervals.items():
        for a, b in spans:
            for s, e, x in lease.spans():
                other = x.up and x.holder and _lab_node(x.holder) != node
                overlap = min(b, e) - max(a, s)
                if other and overlap > bounds.lease_overlap_s:
                    found.append(
                        f"lease: node {node} held {h.vip} for {overlap:.2f} s from {_rel(h, max(a, s))} while "
                        f"{x.holder} held the lease (token {x.token}), beyond the bound of {bounds.lease_overlap_s:g} s"
                    )
    return found


def _fences(h: History, lease: _LeaseHistory, bounds: Bounds) -> list[str]:
    """A fence carried out (its first attempt at a fencing device) on the node the witness names lease holder,
    just before and just after the attempt; two nodes asking to fence each other within `mutual_fence_s`. A
    request is judged at its attempt: B3 asks to fence and to take the lease in one decision, and fences only once
    the lease is its own."""
    found = []
    fences = [(e.t, e.detail.split()[1].rstrip(":"), e.node, e.detail) for e in h.events if e.kind == FENCE]
    requests = [(t, fencer, target) for t, fencer, target, detail in fences if ": requested" in detail]
    attempts = [(t, fencer, target) for t, fencer, target, detail in fences if ": attempt" in detail]
    for t, fencer, target in attempts:
        seen = [lease.at(when) for when in (t - LEASE_SLACK, t + LEASE_SLACK)]
        if all(x is not None and x.up and _lab_node(x.holder) == target for x in seen):
            token = seen[0].token if seen[0] is not None else None
            found.append(f"fence: {fencer} fenced {target}, the lease holder (token {token}), at {_rel(h, t)}")
    for t, fencer, target in requests:
        back = [u for u, f, g in requests if f == target and g == fencer and 0 <= u - t <= bounds.mutual_fence_s]
        if back:
            found.append(
                f"fence: mutual: {fencer} asked to fence {target} at {_rel(h, t)}, "
                f"and {target} {fencer} at {_rel(h, back[0])}"
            )
    return found


def _latest_acquirer(intervals: dict[str, list[Interval]], t: float, node: str) -> bool:
    """Whether `node` was, at `t` (or within LEASE_SLACK of it), the holder that most recently took the VIP."""
    for when in (t - LEASE_SLACK, t, t + LEASE_SLACK):
        holding = {
            n: max(s for s, e in spans if s <= when < e)
            for n, spans in intervals.items()
            if any(s <= when < e for s, e in spans)
        }
        if holding and max(holding, key=lambda n: holding[n]) == node:
            return True
    return False
