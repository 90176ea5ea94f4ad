"""A chaos schedule: which faults start when, for how long, on what; drawn from a seed, saved, replayed.

Pure data: nothing here touches a lab. A `Schedule` is a tuple of `Event`s (start offset and duration in
seconds, relative to the moment the runner starts the chaos, and a `Fault`: a kind from `CATALOGUE` with its
arguments). Fault kinds are named as the lab names them (`lab` fault verbs and scenarios).

Rules every schedule obeys (`Schedule.problems()` checks them; `draw` only makes schedules that pass, and
`from_json` refuses a file that does not):
- events are in order of start; every start is >= 0;
- an instant fault (a restart, Redis restarted empty, a Sentinel failover) has duration 0 and is counted as
  busy for `RESTART_HOLD` s after its start; every other fault lasts at least `MIN_FAULT` s and is healed;
- every fault is healed (and every instant fault done) `quiet` seconds before the end: the checker then sees
  the cluster settle with no fault at all;
- two faults that use the same thing never overlap (the same process paused twice, a NIC downed twice, Redis
  stopped while restarted empty, a serial cable cut twice or cut while its node is isolated...);
- a node powered off is powered on by the heal of that same event (the schedule cannot power on a powered
  node), and no other fault touches that node from its power-off until `BOOT_HOLD` s after its power-on (the
  node boots; a fault aimed at its processes then would find none); a fault aimed at every node (node None)
  touches every node;
- at least one node is powered at all times (at most nodes - 1 power-offs, with their boot hold, overlap);
- `bridge` (two nodes cut from each other, each still reaching the third) needs 3 nodes.

`draw(seed, duration, nodes)` uses `random.Random(seed)` alone: the same arguments give the same schedule,
byte for byte in `to_json()`. It draws only kinds the lab can inject today (`injectable`); the kinds in
`NOT_YET` are in the model, so a schedule file can name them, but are drawn only when asked for by `kinds=`.
The same schedule serves keepalived alone and the arbiter: with keepalived alone a fault on the agent has
nothing to act on, and the runner says so (as `lab run` does).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, fields
from typing import Any

SCHEMA = 1
NODE_NAMES = ("a", "b", "c")  # arbiter.lab.topology.NODE_NAMES: this module stays importable without the lab
WITNESS = "witness"  # clock-step's other target: the witness Redis
MIN_FAULT = 0.5  # s: the shortest fault with a heal
RESTART_HOLD = 3.0  # s: an instant fault (restart) is busy this long after its start
BOOT_HOLD = 5.0  # s: after a power-on, the node is left alone this long (it boots, its agent starts)
QUIET = 10.0  # s: default fault-free end of a drawn schedule
MEAN_GAP = 4.0  # s: a drawn schedule starts a fault about this often
MAX_FAULT = 20.0  # s: the longest drawn fault


class ScheduleError(ValueError):
    """A schedule (usually a file given to `lab replay`) that is malformed or breaks a rule; names the field."""


@dataclass(frozen=True)
class Kind:
    """One kind of fault: the arguments it takes and whether it is instant (done, not healed)."""

    name: str
    summary: str
    args: tuple[str, ...] = ()
    instant: bool = False
    min_nodes: int = 2


DIRECTIONS = ("in", "out", "both")
WITNESSES = ("redis", "sentinel")
MEDIA = ("ethernet", "lan", "hb")  # hb-cut: every Ethernet heartbeat and VRRP (the lab's today), or one NIC's
LINKS = ("lan", "hb", "mgmt")  # arbiter.lab.faults.LINKS
PROCESSES = ("agent", "keepalived")

CATALOGUE: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("vrrp-cut", "drop VRRP at a node (or every node: node null), in, out or both", ("node?", "direction")),
        Kind("hb-cut", "drop the heartbeat on a medium at a node (or every node)", ("node?", "medium")),
        Kind("link-down", "set a node's NIC down", ("node", "link")),
        Kind("serial-cut", "cut the serial cable between two nodes", ("node", "peer")),
        Kind("isolate", "cut a node off from everything (every NIC, its serial cables)", ("node",)),
        Kind("redis-stop", "stop the witness Redis (started again, empty, at the heal)"),
        Kind("redis-restart-empty", "kill the witness Redis and start it with no data", instant=True),
        Kind("redis-partition", "cut a node off from the witness Redis", ("node",)),
        Kind("reference-lost", "cut a node off from the reference IP", ("node",)),
        Kind("pause", "SIGSTOP a node's process (SIGCONT at the heal)", ("node", "process")),
        Kind("kill", "SIGKILL a node's process (started again at the heal)", ("node", "process")),
        Kind("keepalived-restart", "restart a node's keepalived (SIGTERM, start)", ("node",), instant=True),
        Kind("agent-restart", "restart a node's agent (as systemctl restart)", ("node",), instant=True),
        Kind("power-off", "power a node off through its BMC (powered on at the heal)", ("node",)),
        Kind(
            "vrrp-loss", "drop a percentage of VRRP packets at random at a node (or every node)", ("node?", "percent")
        ),
        Kind("bridge", "cut two nodes from each other, each still reaching the third", ("node", "peer"), min_nodes=3),
        Kind("clock-step", "step the wall clock of a node's agent or of the witness (faketime)", ("node", "seconds")),
        Kind("sentinel-failover", "a Sentinel failover of the witness Redis", instant=True),
    )
}

# What the lab (arbiter/lab/faults.py, lab.py) cannot inject yet, and what it lacks: never drawn by default.
NOT_YET: dict[str, str] = {
    "clock-step": (
        "Debian's libfaketime 0.9.10 cannot step one process's wall clock here: Python's time.sleep fails (EINVAL "
        "from clock_nanosleep) when FAKETIME_DONT_FAKE_MONOTONIC=1, and without it the monotonic clock steps too, "
        "which no real clock step does; redis-server aborts at start under it (recursive clock_gettime)"
    ),
}


@dataclass(frozen=True)
class Fault:
    """A fault kind and its arguments (the ones the kind does not take stay None)."""

    kind: str
    node: str | None = None  # None with "node?": every node
    peer: str | None = None
    direction: str | None = None
    medium: str | None = None
    link: str | None = None
    process: str | None = None
    percent: int | None = None
    seconds: float | None = None

    def describe(self) -> str:
        args = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)[1:] if getattr(self, f.name) is not None]
        kind = CATALOGUE.get(self.kind)
        if kind is not None and "node?" in kind.args and self.node is None:
            args.insert(0, "node=every")
        return " ".join([self.kind, *args])

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def injectable(fault: Fault) -> str | None:
    """None if the lab can inject this fault today, else what it lacks."""
    return NOT_YET.get(fault.kind) or NOT_YET.get(f"{fault.kind} medium={fault.medium}")


@dataclass(frozen=True)
class Event:
    start: float  # s after the chaos begins
    duration: float  # s until the heal; 0 for an instant fault
    fault: Fault

    @property
    def busy_until(self) -> float:
        """Until when the fault holds what it uses (an instant fault: its restart's hold)."""
        return self.start + (RESTART_HOLD if CATALOGUE[self.fault.kind].instant else self.duration)


@dataclass(frozen=True)
class Schedule:
    seed: int
    duration: float  # s: the whole chaos run, the quiet end included
    nodes: int
    quiet: float = QUIET
    events: tuple[Event, ...] = field(default=())
    # The lab's keepalived settings, so that `lab replay FILE` runs the schedule as it was drawn for.
    vrrp_version: int = 2
    advert_int: float = 1.0
    witness: str = "redis"  # "sentinel": a master, a replica and three sentinels (sentinel-failover needs it)

    def problems(self) -> list[str]:
        """Every rule of the module docstring this schedule breaks, each naming its field; [] if none."""
        found: list[str] = []
        if self.nodes not in (2, 3):
            found.append(f"nodes: 2 or 3 (got {self.nodes})")
            return found
        if self.vrrp_version not in (2, 3):
            found.append(f"vrrp_version: 2 or 3 (got {self.vrrp_version})")
        if not self.advert_int > 0:
            found.append(f"advert_int: must be > 0 (got {self.advert_int})")
        if self.witness not in WITNESSES:
            found.append(f"witness: one of {', '.join(WITNESSES)} (got {self.witness!r})")
        if self.duration <= 0:
            found.append(f"duration: must be > 0 (got {self.duration})")
        if not 0 <= self.quiet < self.duration:
            found.append(f"quiet: from 0 to below duration {self.duration} (got {self.quiet})")
        end = self.duration - self.quiet
        for i, event in enumerate(self.events):
            where = f"events[{i}]"
            found += [f"{where}.fault.{p}" for p in _fault_problems(event.fault, self.nodes)]
            if event.fault.kind not in CATALOGUE:
                continue
            if event.start < 0:
                found.append(f"{where}.start: must be >= 0 (got {event.start})")
            if i and event.start < self.events[i - 1].start:
                found.append(f"{where}.start: {event.start} is before events[{i - 1}].start")
            if event.fault.kind == "sentinel-failover" and self.witness != "sentinel":
                found.append(f"{where}.fault.kind: sentinel-failover needs witness sentinel (got {self.witness!r})")
            instant = CATALOGUE[event.fault.kind].instant
            if instant and event.duration != 0:
                found.append(f"{where}.duration: {event.fault.kind} is instant: 0 (got {event.duration})")
            if not instant and event.duration < MIN_FAULT:
                found.append(f"{where}.duration: at least {MIN_FAULT} s (got {event.duration})")
            if event.busy_until > end + 1e-9:
                found.append(
                    f"{where}: busy until {event.busy_until:g} s, after the quiet end begins ({end:g} s = "
                    f"duration {self.duration:g} - quiet {self.quiet:g})"
                )
        if not found:
            found += _overlap_problems(self.events, self.nodes)
        return found

    def check(self) -> Schedule:
        """This schedule, or ScheduleError with its first problem."""
        found = self.problems()
        if found:
            raise ScheduleError(f"schedule: {found[0]}" + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""))
        return self

    def to_json(self) -> str:
        doc = {
            "schema": SCHEMA,
            "seed": self.seed,
            "duration": float(self.duration),
            "nodes": self.nodes,
            "quiet": float(self.quiet),
            "vrrp_version": self.vrrp_version,
            "advert_int": float(self.advert_int),
            "witness": self.witness,
            "events": [
                {"start": float(e.start), "duration": float(e.duration), "fault": e.fault.as_dict()}
                for e in self.events
            ],
        }
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        """The schedule in `text` (what `to_json` wrote), checked; ScheduleError naming the bad field."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScheduleError(f"schedule: not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ScheduleError("schedule: a JSON object expected")
        if doc.get("schema") != SCHEMA:
            raise ScheduleError(f"schedule: schema: {SCHEMA} expected (got {doc.get('schema')!r})")
        known = {"schema", "seed", "duration", "nodes", "quiet", "events", "vrrp_version", "advert_int", "witness"}
        _no_unknown(doc, known, "")
        raw_events = _get(doc, "events", list, "")
        events = tuple(_event(item, f"events[{i}]") for i, item in enumerate(raw_events))
        schedule = cls(
            seed=_get(doc, "seed", int, ""),
            duration=_number(doc, "duration", ""),
            nodes=_get(doc, "nodes", int, ""),
            quiet=_number(doc, "quiet", ""),
            vrrp_version=_get(doc, "vrrp_version", int, ""),
            advert_int=_number(doc, "advert_int", ""),
            witness=_get(doc, "witness", str, "") if "witness" in doc else "redis",
            events=events,
        )
        return schedule.check()

    def describe(self) -> str:
        """One header line, then one line per event: `+start s  for duration s  fault`."""
        lines = [
            f"seed {self.seed}: {self.duration:g} s on {self.nodes} nodes (VRRPv{self.vrrp_version}, advert_int "
            f"{self.advert_int:g} s, witness {self.witness}), {len(self.events)} faults, "
            f"the last {self.quiet:g} s quiet"
        ]
        for e in self.events:
            lasts = "instant" if CATALOGUE[e.fault.kind].instant else f"for {e.duration:g} s"
            lines.append(f"  at {e.start:7.1f} s  {lasts:12}  {e.fault.describe()}")
        return "\n".join(lines)


def _fault_problems(fault: Fault, nodes: int) -> list[str]:
    kind = CATALOGUE.get(fault.kind)
    if kind is None:
        return [f"kind: one of {', '.join(CATALOGUE)} (got {fault.kind!r})"]
    if nodes < kind.min_nodes:
        return [f"kind: {fault.kind} needs {kind.min_nodes} nodes (the schedule has {nodes})"]
    names = NODE_NAMES[:nodes]
    takes = {a.rstrip("?") for a in kind.args}
    found: list[str] = []
    for f in fields(fault)[1:]:
        value = getattr(fault, f.name)
        if f.name not in takes:
            if value is not None:
                found.append(f"{f.name}: {fault.kind} takes no {f.name} (got {value!r})")
            continue
        if value is None:
            if f"{f.name}?" not in kind.args:
                found.append(f"{f.name}: required by {fault.kind}")
            continue
        choices: tuple[str, ...] = {
            "node": (*names, WITNESS) if fault.kind == "clock-step" else names,
            "peer": names,
            "direction": DIRECTIONS,
            "medium": MEDIA,
            "link": LINKS,
            "process": PROCESSES,
        }.get(f.name, ())
        if choices and value not in choices:
            found.append(f"{f.name}: one of {', '.join(choices)} (got {value!r})")
    if fault.peer is not None and fault.peer == fault.node:
        found.append(f"peer: another node than {fault.node!r}")
    if fault.percent is not None and (isinstance(fault.percent, bool) or not 1 <= fault.percent <= 100):
        found.append(f"percent: from 1 to 100 (got {fault.percent!r})")
    if fault.seconds is not None and fault.seconds == 0:
        found.append("seconds: a clock step of 0 s is no fault")
    return found


def touches(fault: Fault, nodes: int) -> set[str]:
    """The nodes a fault acts on (must be powered): a fault on every node touches them all."""
    takes = CATALOGUE[fault.kind].args
    if fault.node is None:
        return set(NODE_NAMES[:nodes]) if "node?" in takes else set()
    if fault.kind == "serial-cut" or fault.node == WITNESS:
        return set()  # the cable lives in the switch namespace; the witness is no node
    return {fault.node} | ({fault.peer} if fault.peer is not None and fault.kind == "bridge" else set())


def _holds(fault: Fault, nodes: int) -> set[str]:
    """What a fault holds alone while it lasts: two faults holding one thing never overlap."""
    k = fault.kind
    if k in ("redis-stop", "redis-restart-empty", "sentinel-failover"):
        return {"witness-redis"}
    if k == "clock-step":
        return {f"clock:{fault.node}"}
    if k in ("pause", "kill"):
        return {f"{fault.node}:{fault.process}"}
    if k == "keepalived-restart":
        return {f"{fault.node}:keepalived"}
    if k == "agent-restart":
        return {f"{fault.node}:agent"}
    if k == "link-down":
        return {f"{fault.node}:link:{fault.link}"}
    if k == "power-off":
        return {f"{fault.node}:power"}
    if k in ("serial-cut", "bridge"):
        pair = "".join(sorted((str(fault.node), str(fault.peer))))
        # a bridge cuts the pair's serial cable too: a serial cut of that cable may not overlap it.
        return {f"{k}:{pair}", f"serial-cut:{pair}"}
    if k == "isolate":
        # isolate cuts the node's serial cables too: a serial cut of one of them may not overlap it.
        return {f"{fault.node}:isolate"} | {
            "serial-cut:" + "".join(sorted((str(fault.node), other)))
            for other in NODE_NAMES[:nodes]
            if other != fault.node
        }
    if k == "vrrp-loss":
        return {f"{n}:vrrp-loss" for n in touches(fault, nodes)}
    return set()  # nftables faults each get their own table: they overlap freely


def _overlap_problems(events: tuple[Event, ...], nodes: int) -> list[str]:
    found: list[str] = []
    for i, a in enumerate(events):
        for j in range(i + 1, len(events)):
            b = events[j]
            if b.start >= down_until(a):
                continue
            if b.start < a.busy_until and _holds(a.fault, nodes) & _holds(b.fault, nodes):
                found.append(f"events[{j}]: overlaps events[{i}] ({a.fault.describe()}) on the same thing")
            for off, other, k in ((a, b, j), (b, a, i)):
                if (
                    off.fault.kind == "power-off"
                    and off.fault.node in touches(other.fault, nodes)
                    and other.start < down_until(off)
                    and off.start < down_until(other)
                ):
                    found.append(
                        f"events[{k}]: touches node {off.fault.node} while it is powered off or booting"
                        f" ({off.fault.describe()} at {off.start:g} s)"
                    )
    offs = [e for e in events if e.fault.kind == "power-off"]
    for e in offs:
        down = sum(1 for o in offs if o.start <= e.start < down_until(o))
        if down >= nodes:
            found.append(f"events[{events.index(e)}]: every node powered off at {e.start:g} s")
    return found


def down_until(event: Event) -> float:
    """Until when an event keeps its node from other faults (a power-off: until its boot is done)."""
    return event.busy_until + (BOOT_HOLD if event.fault.kind == "power-off" else 0.0)


# --- drawing -----------------------------------------------------------------------------------------------


def default_kinds() -> tuple[str, ...]:
    """The kinds `draw` uses unless told otherwise: the ones the lab can inject."""
    return tuple(k for k in CATALOGUE if k not in NOT_YET)


def draw(
    seed: int,
    duration: float,
    nodes: int,
    *,
    quiet: float = QUIET,
    kinds: tuple[str, ...] | None = None,
    mean_gap: float = MEAN_GAP,
    max_fault: float = MAX_FAULT,
    vrrp_version: int = 2,
    advert_int: float = 1.0,
    witness: str = "redis",
) -> Schedule:
    """A schedule of overlapping faults drawn with `random.Random(seed)` alone, obeying the module's rules.

    About one fault every `mean_gap` s in the first `duration - quiet` s; each lasts from MIN_FAULT to
    `max_fault` s. `vrrp_version` and `advert_int` are only recorded (the faults drawn do not depend on them). A
    draw that would break a rule is drawn again (20 tries, then that fault is skipped)."""
    if nodes not in (2, 3):
        raise ScheduleError(f"nodes: 2 or 3 (got {nodes})")
    active = duration - quiet
    if quiet < 0 or active < RESTART_HOLD + MIN_FAULT:
        raise ScheduleError(
            f"duration: {duration:g} s leaves {active:g} s for faults after a {quiet:g} s quiet end; "
            f"need at least {RESTART_HOLD + MIN_FAULT:g}"
        )
    chosen = default_kinds() if kinds is None else kinds
    for name in chosen:
        if name not in CATALOGUE:
            raise ScheduleError(f"kinds: one of {', '.join(CATALOGUE)} (got {name!r})")
    usable = [
        k for k in chosen if CATALOGUE[k].min_nodes <= nodes and (k != "sentinel-failover" or witness == "sentinel")
    ]
    if not usable:
        raise ScheduleError(f"kinds: none of {', '.join(chosen)} can run on {nodes} nodes")
    rng = random.Random(seed)
    media = tuple(m for m in MEDIA if injectable(Fault("hb-cut", medium=m)) is None) if kinds is None else MEDIA
    events: list[Event] = []
    for _ in range(max(1, round(active / mean_gap))):
        for _try in range(20):
            fault = _draw_fault(rng, rng.choice(usable), nodes, media)
            instant = CATALOGUE[fault.kind].instant
            longest = 0.0 if instant else min(max_fault, active - MIN_FAULT)
            length = 0.0 if instant else round(rng.uniform(MIN_FAULT, max(MIN_FAULT, longest)), 1)
            latest = active - (RESTART_HOLD if instant else length)
            event = Event(round(rng.uniform(0, latest), 1), length, fault)
            trial = sorted([*events, event], key=_order)
            if not Schedule(seed, duration, nodes, quiet, tuple(trial), witness=witness).problems():
                events = trial
                break
    return Schedule(seed, duration, nodes, quiet, tuple(events), vrrp_version, advert_int, witness).check()


def _order(event: Event) -> tuple[float, str]:
    return event.start, event.fault.describe()


def _draw_fault(rng: random.Random, kind: str, nodes: int, media: tuple[str, ...]) -> Fault:
    names = list(NODE_NAMES[:nodes])
    node = rng.choice(names)
    if kind in ("vrrp-cut", "hb-cut", "vrrp-loss"):
        every: str | None = None if rng.random() < 0.25 else node
        if kind == "vrrp-cut":
            return Fault(kind, node=every, direction=rng.choice(DIRECTIONS))
        if kind == "hb-cut":
            return Fault(kind, node=every, medium=rng.choice(media))
        return Fault(kind, node=every, percent=rng.choice((5, 10, 20, 30, 50)))
    if kind in ("serial-cut", "bridge"):
        peer = rng.choice([n for n in names if n != node])
        node, peer = sorted((node, peer))
        return Fault(kind, node=node, peer=peer)
    if kind == "link-down":
        return Fault(kind, node=node, link=rng.choice(LINKS))
    if kind in ("pause", "kill"):
        return Fault(kind, node=node, process=rng.choice(PROCESSES))
    if kind == "clock-step":
        target = rng.choice([*names, WITNESS])
        return Fault(kind, node=target, seconds=rng.choice((-30.0, -5.0, -1.0, 1.0, 5.0, 30.0)))
    if "node" in CATALOGUE[kind].args:
        return Fault(kind, node=node)
    return Fault(kind)


# --- reading a file ------------------------------------------------------------------------------------------


def _event(item: object, where: str) -> Event:
    if not isinstance(item, dict):
        raise ScheduleError(f"schedule: {where}: an object expected (got {type(item).__name__})")
    _no_unknown(item, {"start", "duration", "fault"}, where)
    raw = _get(item, "fault", dict, where)
    _no_unknown(raw, {f.name for f in fields(Fault)}, f"{where}.fault")
    fault_where = f"{where}.fault"
    fault = Fault(
        kind=_get(raw, "kind", str, fault_where),
        **{
            name: _optional(raw, name, fault_where)
            for name in ("node", "peer", "direction", "medium", "link", "process")
        },
        percent=_optional_int(raw, "percent", fault_where),
        seconds=_optional_number(raw, "seconds", fault_where),
    )
    return Event(_number(item, "start", where), _number(item, "duration", where), fault)


def _path(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _no_unknown(doc: dict[str, Any], known: set[str], where: str) -> None:
    for name in sorted(set(doc) - known):
        raise ScheduleError(f"schedule: {_path(where, name)}: unknown field (known: {', '.join(sorted(known))})")


def _get(doc: dict[str, Any], name: str, kind: type[Any], where: str) -> Any:
    if name not in doc:
        raise ScheduleError(f"schedule: {_path(where, name)}: missing")
    value = doc[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ScheduleError(f"schedule: {_path(where, name)}: {kind.__name__} expected (got {value!r})")
    return value


def _number(doc: dict[str, Any], name: str, where: str) -> float:
    value = doc.get(name)
    if name not in doc:
        raise ScheduleError(f"schedule: {_path(where, name)}: missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScheduleError(f"schedule: {_path(where, name)}: a number expected (got {value!r})")
    return float(value)


def _optional(doc: dict[str, Any], name: str, where: str) -> str | None:
    return None if doc.get(name) is None else str(_get(doc, name, str, where))


def _optional_int(doc: dict[str, Any], name: str, where: str) -> int | None:
    return None if doc.get(name) is None else int(_get(doc, name, int, where))


def _optional_number(doc: dict[str, Any], name: str, where: str) -> float | None:
    return None if doc.get(name) is None else _number(doc, name, where)
