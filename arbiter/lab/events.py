"""The lab's history: timestamped events from every namespace, in one monotonic time base.

Every recorder, fault and scenario step appends here; the checker and the report read it. Times are
`time.monotonic()` seconds of the host (namespaces share the host's clock).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

# Event kinds
VIP_ADD = "vip-add"  # node: the namespace where the VIP appeared; detail: the address
VIP_DEL = "vip-del"
ARP = "arp"  # node: the node whose MAC answered the client's ARP for the VIP ("" = no answer); detail: MAC
VRRP_STATE = "vrrp-state"  # node: keepalived's new state in detail (MASTER, BACKUP, FAULT, STOP)
FAULT = "fault"  # node: where ("" = cluster-wide); detail: what, e.g. "vrrp-cut both"
HEAL = "heal"  # the matching fault undone; detail names it
NOTE = "note"  # anything else worth showing on the timeline (scenario phases)
# The arbiter's agents (from each node's agent.log) and the BMCs (from the lab's power log):
GATE = "gate"  # node: whose gate changed; detail: "VI_1 closed RULE: reason" (or "open")
DECISION = "decision"  # node: whose agent decided; the rule changed, the gate did not: "VI_1 open RULE: reason"
FENCE = "fence"  # node: the node fenced; detail: "by b: requested ..." / "by b: OFF confirmed ..." / "by b: failed"
POWER = "power"  # node: the node whose BMC switched it; detail: "off" or "on" (whoever asked)


@dataclass(frozen=True)
class Event:
    t: float
    kind: str
    node: str
    detail: str = ""

    def as_dict(self, t0: float) -> dict[str, Any]:
        d = asdict(self)
        d["t"] = round(self.t - t0, 4)
        return d


@dataclass
class Timeline:
    """Thread-safe append-only list of events."""

    t0: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, node: str, detail: str = "", t: float | None = None) -> Event:
        event = Event(time.monotonic() if t is None else t, kind, node, detail)
        with self._lock:
            self.events.append(event)
        return event

    def sorted(self) -> list[Event]:
        with self._lock:
            return sorted(self.events, key=lambda e: e.t)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [e.as_dict(self.t0) for e in self.sorted()]
