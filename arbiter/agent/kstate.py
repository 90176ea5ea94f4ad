"""keepalived's state per instance, merged from its three channels: the VIP on the interface (netlink), the notify
FIFO, and the notify hook.

keepalived spawns one hook process per transition and never waits for it: the two hooks of a quick MASTER → FAULT
start ~20 ms apart and reach the agent in either order, after Python's start-up. A late MASTER hook that
overrode a newer FAULT would make the heartbeats claim the VIP, and the lease holder fence a healthy backup. So
the sources are not equal, and one place decides what each may change:

- netlink: the VIP appearing means MASTER (keepalived adds it before it runs any notification); going means
  not MASTER (BACKUP, until a notification says which). Always applied: it is the truth about holding.
- FIFO (`vrrp_notify_fifo`): keepalived writes its lines in order, with no process in between. Always applied;
  once it has spoken for an instance, hooks for that instance are dropped (the same events, out of order).
- hook: carries the time keepalived spawned it (`sent_at`; an older hook without one is timed by its arrival).
  Dropped when older than a hook already applied, or when it contradicts a VIP change newer than itself (MASTER
  with the VIP gone since, BACKUP/FAULT/STOP with the VIP added since). A hook that agrees with netlink refines
  it (FAULT instead of the BACKUP a VIP removal implies), whatever the order of the two.

Pure: every event comes with its time; no IO, no clock. Dropped hooks are counted by reason and logged at debug.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from arbiter.model import VrrpState

log = logging.getLogger(__name__)

# Why a hook was dropped: the FIFO speaks for the instance; a newer hook was applied; the VIP changed since.
DROP_REASONS = ("fifo", "older_hook", "vip_changed")


@dataclass
class _Seen:
    vip: bool | None = None  # None until netlink has said (start-up check or an event)
    vip_at: float | None = None
    hook_at: float | None = None  # spawn time of the newest hook applied
    fifo_at: float | None = None  # read time of the newest FIFO line


class KeepalivedStates:
    """keepalived's state and priority per instance, as `state` and `priority` (dicts, read by the agent)."""

    def __init__(self, priorities: Mapping[str, int]) -> None:
        """`priorities`: instance name → configured priority (until keepalived reports one)."""
        self.state: dict[str, VrrpState] = dict.fromkeys(priorities, VrrpState.UNKNOWN)
        self.priority: dict[str, int] = dict(priorities)
        self.applied: collections.Counter[str] = collections.Counter()  # source → events applied
        self.dropped: collections.Counter[str] = collections.Counter()  # reason → hooks dropped
        self._seen = {name: _Seen() for name in priorities}

    def vip(self, name: str, present: bool, at: float) -> bool:
        """netlink: the instance's VIP is (or is not) on its interface since `at`; also the start-up check."""
        seen = self._seen[name]
        seen.vip, seen.vip_at = present, at
        if present:
            self.state[name] = VrrpState.MASTER
        elif self.state[name] is VrrpState.MASTER:
            self.state[name] = VrrpState.BACKUP
        self.applied["netlink"] += 1
        return True

    def fifo(self, name: str, state: VrrpState, priority: int | None, at: float) -> bool:
        """A `vrrp_notify_fifo` line read at `at`: in keepalived's order, so always applied."""
        self._seen[name].fifo_at = at
        self._apply(name, state, priority)
        self.applied["fifo"] += 1
        return True

    def hook(self, name: str, state: VrrpState, priority: int | None, sent_at: float) -> bool:
        """A notify hook spawned at `sent_at`; False when dropped (see the module docstring)."""
        seen = self._seen[name]
        reason = None
        if seen.fifo_at is not None:
            reason = "fifo"
        elif seen.hook_at is not None and sent_at < seen.hook_at:
            reason = "older_hook"
        elif seen.vip_at is not None and sent_at < seen.vip_at and (state is VrrpState.MASTER) != seen.vip:
            reason = "vip_changed"
        if reason is not None:
            self.dropped[reason] += 1
            log.debug("keepalived state: hook %s %s spawned at %.3f dropped (%s)", name, state.value, sent_at, reason)
            return False
        seen.hook_at = sent_at
        self._apply(name, state, priority)
        self.applied["hook"] += 1
        return True

    def _apply(self, name: str, state: VrrpState, priority: int | None) -> None:
        self.state[name] = state
        if priority is not None:
            self.priority[name] = priority
