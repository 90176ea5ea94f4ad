"""The agent's edges: everything `Agent` reads from or writes to outside its own memory, injected as one `Edges`
record so that its loop runs in unit tests with fakes (tests/unit/agentfakes.py) and in production with the real
ones (`Edges.from_config`).

Each edge is typed by what the agent calls on it (a small Protocol) where the real class is big and its fake is
small: the lease store and its leases, the reference quorum, the heartbeat service, the netlink VIP watch, the
VRRP advert listeners, the gate watch, ARP (gratuitous ARP and the split-brain probe). Where the real class is
itself the fake's best part, it is used as is: the gate files (files in a test's tmp_path), the notify socket and
FIFO (no IO until started), the alert sink (over an httpx MockTransport), the fencing orchestrator (over
fencers.testing.FakeFencer), the systemd notifier (silent without NOTIFY_SOCKET). The clocks are edges too:
`clock` (monotonic seconds: every decision time), `wall` (Unix time: what status and alerts show), `clocks` (the
record file's reading, which needs CLOCK_BOOTTIME and the boot id to be trusted across a restart;
arbiter.agent.record), and the random part of the fence delay.

The edges call back into the agent (a VIP appeared, a gate was overwritten, a hook or FIFO line, a fence attempt,
the next heartbeat's snapshot), and the agent holds the edges: so the agent is given a factory, calls it with its
`Callbacks` in its constructor, and no edge is ever half wired or rewired after it is built.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from arbiter.agent import arp
from arbiter.agent.gate import GateFile, GateWatch
from arbiter.agent.netlink import OnChange, VipWatch
from arbiter.agent.notify import NotifyFifo, NotifyServer, OnEvent
from arbiter.agent.record import Clocks
from arbiter.agent.sdnotify import SystemdNotifier
from arbiter.agent.stopmode import StopQuery, SystemdStopQuery
from arbiter.agent.vrrp import AdvertListener
from arbiter.alerts import AlertSink
from arbiter.config import Config
from arbiter.evidence.heartbeat import HeartbeatService
from arbiter.evidence.heartbeat.media import MediaTracker, MediumEvent, Received
from arbiter.evidence.heartbeat.service import LinkEvent, Snapshot
from arbiter.evidence.heartbeat.transport import Link
from arbiter.evidence.lease import LeaseStore
from arbiter.evidence.reference import Change, ReferenceQuorum, Round
from arbiter.model import LeaseView, PeerView
from fencers.orchestration import FenceAttempt, Orchestrator

# --- what the agent calls on each edge ------------------------------------------------------------------------


class Watch(Protocol):
    """The gate watch: wakes the agent when a gate file changes behind its back."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


class LeaseEdge(Protocol):
    """One instance's lease (arbiter.evidence.lease.Lease)."""

    @property
    def last_error(self) -> str | None: ...
    async def acquire(self, seed: int = 0) -> LeaseView: ...
    async def release(self) -> LeaseView: ...
    async def read(self) -> LeaseView: ...


class TokenBook(Protocol):
    def highest(self, instance: str) -> int: ...


class LeaseStoreEdge(Protocol):
    """The lease store (arbiter.evidence.lease.LeaseStore): its token book and the batched renewal."""

    @property
    def tokens(self) -> TokenBook: ...
    # Any: a store renews only the leases it made (the real one refuses others).
    async def renew_many(self, leases: Sequence[Any]) -> list[LeaseView]: ...
    async def close(self) -> None: ...


class ReferenceEdge(Protocol):
    """The reference quorum (arbiter.evidence.reference.ReferenceQuorum)."""

    @property
    def quorate(self) -> bool | None: ...
    @property
    def last(self) -> Round | None: ...
    @property
    def replies_total(self) -> Mapping[str, int]: ...
    def run(self, on_change: Callable[[Round, Change], None] | None = None) -> Coroutine[Any, Any, None]: ...


class MediumLink(Protocol):
    """This node's side of one heartbeat medium, as status shows it."""

    @property
    def medium(self) -> str: ...
    @property
    def link(self) -> Link: ...


class HeartbeatEdge(Protocol):
    """The heartbeat service (arbiter.evidence.heartbeat.HeartbeatService): what peers said, and sending."""

    on_news: Callable[[str], None] | None

    @property
    def events(self) -> asyncio.Queue[MediumEvent]: ...
    @property
    def link_events(self) -> asyncio.Queue[LinkEvent]: ...
    @property
    def tracker(self) -> MediaTracker: ...
    @property
    def transports(self) -> Sequence[MediumLink]: ...
    def alive(self, peer: str) -> bool | None: ...
    def newest(self, peer: str) -> Received | None: ...
    def peer_view(self, peer: str, instance: str) -> PeerView: ...
    def send_now(self) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class VipEdge(Protocol):
    """The netlink VIP watch (arbiter.agent.netlink.VipWatch)."""

    async def start(self, timeout: float = 5.0) -> None: ...
    def stop(self) -> None: ...
    def present(self, instance: str) -> bool: ...


class ArpEdge(Protocol):
    """Gratuitous ARP for a VIP, and who else answers ARP for it (arbiter.agent.arp, the module itself)."""

    def send_garp(self, interface: str, ip: str, count: int = 1, interval: float = 0.02) -> None: ...
    async def probe(self, interface: str, ip: str, timeout: float) -> set[str]: ...


class AdvertEdge(Protocol):
    """The VRRP advert listener of one interface (arbiter.agent.vrrp.AdvertListener)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def last_advert(self, instance: str, peer: str) -> float | None: ...
    def listening_since(self, instance: str, peer: str) -> float | None: ...
    def stats(self, now: float) -> dict[str, Any]: ...


# --- the wiring ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Callbacks:
    """The agent's entry points the edges call, bound to one agent."""

    vip_changed: OnChange
    gate_overwritten: Callable[[str], None]
    notified: OnEvent
    fifo_line: OnEvent
    fence_event: Callable[[FenceAttempt], None]
    snapshot: Callable[[], Snapshot]


@dataclass(frozen=True)
class Edges:
    gates: Mapping[str, GateFile]
    gate_watch: Watch
    store: LeaseStoreEdge
    leases: Mapping[str, LeaseEdge]
    reference: ReferenceEdge
    heartbeats: HeartbeatEdge
    vips: VipEdge
    adverts: Mapping[str, AdvertEdge]  # by interface
    arp: ArpEdge
    notify: NotifyServer
    fifo: NotifyFifo | None
    alerts: AlertSink
    orchestrator: Orchestrator
    systemd: SystemdNotifier
    stop_query: StopQuery
    drawn_delay_ms: int  # the random part of the fence delay, drawn once (the policy and the orchestrator share it)
    # What a reload (SIGHUP) builds from the new config: the webhooks, and the fencers with a new random delay.
    alerts_for: Callable[[Config], AlertSink]
    fencing_for: Callable[[Config], tuple[Orchestrator, int]]
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    clocks: Callable[[], Clocks] = field(default=Clocks.read)

    @classmethod
    def from_config(cls, cfg: Config, calls: Callbacks) -> Edges:
        """The real edges, as `keepalived-arbiter run` uses them. Raises what their constructors raise (a secret
        or key file that cannot be used, a corrupt token file)."""
        systemd = SystemdNotifier.from_env()
        alerts = _alert_sink(cfg)
        instances = {i.name: i for i in cfg.instance}
        gates = {name: GateFile(i.track_file) for name, i in instances.items()}
        fencing_for = functools.partial(_fencing, on_event=calls.fence_event)
        orchestrator, drawn = fencing_for(cfg)
        store = LeaseStore.from_config(cfg)
        peer_ips = {str(a): p.name for p in cfg.peer for a in p.heartbeat_addresses}
        by_interface: dict[str, dict[int | None, str]] = {}
        for name, inst in instances.items():
            by_interface.setdefault(inst.interface, {})[inst.virtual_router_id] = name
        api = cfg.api
        return cls(
            gates=gates,
            # keepalived rewrites the gates when it starts (init_file ... overwrite): wake up and put them back.
            gate_watch=GateWatch(gates, calls.gate_overwritten),
            store=store,
            leases={name: store.lease(name) for name in instances},
            reference=ReferenceQuorum.from_config(cfg.reference),
            heartbeats=HeartbeatService.from_config(cfg, calls.snapshot),
            vips=VipWatch(
                {name: (i.interface, [str(v.ip) for v in i.vip]) for name, i in instances.items()},
                on_change=calls.vip_changed,
            ),
            adverts={iface: AdvertListener(iface, vrids, peer_ips) for iface, vrids in by_interface.items()},
            arp=arp,
            notify=NotifyServer(api.socket, on_event=calls.notified, group=api.group),
            fifo=NotifyFifo(api.notify_fifo, calls.fifo_line) if api.notify_fifo is not None else None,
            alerts=alerts,
            orchestrator=orchestrator,
            systemd=systemd,
            # SIGTERM: a stop for good, or the stop half of `systemctl restart` (then nothing is handed over).
            stop_query=SystemdStopQuery.from_env(),
            drawn_delay_ms=drawn,
            alerts_for=_alert_sink,
            fencing_for=fencing_for,
        )


def _alert_sink(cfg: Config) -> AlertSink:
    """Raises SecretFileError naming the file when a webhook's secret file cannot be used."""
    # Webhooks: emit() only queues; delivery runs in its own task and never delays a decision.
    return AlertSink.from_config(cfg.alerts, cluster=cfg.node.cluster, node=cfg.node.name)


def _fencing(cfg: Config, *, on_event: Callable[[FenceAttempt], None]) -> tuple[Orchestrator, int]:
    """The fencers of `cfg` and the random part of the fence delay, drawn here (the policy uses it too)."""
    drawn = random.randint(0, cfg.fencing.random_delay_ms)
    orchestrator = Orchestrator.from_config(cfg, drawn_delay_ms=drawn, on_event=on_event)
    # The policy already waited the race delay before asking for a token-less fence (rule D3).
    orchestrator.race_delay = 0.0
    return orchestrator, drawn


EdgeFactory = Callable[[Callbacks], Edges]
