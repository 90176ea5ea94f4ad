"""Fakes of the agent's edges (arbiter.agent.edges) and the one temporary agent config the agent tests share.

`agent_config(tmp_path, ...)` writes an arbiter config (and its key and password files) into tmp_path.
`Rig(cfg)` holds one fake per edge, each answering what the test sets and recording what the agent did with it:

- `clock` (FakeClock): monotonic seconds, moved by the test; `wall` follows it; the record's `Clocks` too;
- `store` (FakeStore / FakeLease): lease answers you set; every acquire, release, read and renew recorded;
- `reference` (FakeReference): the quorum you set;
- `heartbeats` (FakeHeartbeats): each peer's view you set, or the real MediaTracker's view of the frames you let
  it hear; every frame the agent would send kept (`sent`);
- `vips` (FakeVips): VIP present or absent as you set it, firing the agent's netlink callback like VipWatch;
- `adverts` (FakeAdverts, per interface): last advert and listening start you set;
- `arp` (FakeArp): gratuitous ARPs recorded, other MACs answering for a VIP you set;
- `bmcs` (fencers.testing.FakeFencer per fenceable peer) behind the real Orchestrator;
- the real AlertSink posting to an httpx MockTransport that keeps every alert (`posted`);
- gates: real GateFiles in tmp_path; notify socket and FIFO: the real ones (nothing opened until started).

`rig.agent()` builds the real `Agent` on them; `begin`, `cycle`, `lease_round` and `settle` drive it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from arbiter import config as config_mod
from arbiter.agent.daemon import Agent
from arbiter.agent.edges import Callbacks, Edges, HeartbeatEdge
from arbiter.agent.gate import GateFile, GateWatch
from arbiter.agent.notify import NotifyFifo, NotifyServer
from arbiter.agent.record import Clocks
from arbiter.agent.sdnotify import SystemdNotifier
from arbiter.agent.stopmode import Fixed, StopMode
from arbiter.alerts import AlertSink
from arbiter.evidence.heartbeat.frame import Frame, InstanceReport, NodeTimings
from arbiter.evidence.heartbeat.media import MediaTracker, MediumEvent, Received
from arbiter.evidence.heartbeat.service import LinkEvent, Snapshot
from arbiter.evidence.heartbeat.transport import Link
from arbiter.evidence.reference import Change, Round
from arbiter.model import LeaseStatus, LeaseView, PeerView, VrrpState
from fencers.orchestration import Orchestrator
from fencers.testing import FakeFencer

WALL_AT_ZERO = 1_800_000_000.0  # the fake wall clock: this Unix time at monotonic 0
BOOT_AT_ZERO = 50.0  # the fake CLOCK_BOOTTIME at monotonic 0 (a boot that never suspended)
BOOT_ID = "agentfakes-boot"


# --- the config -----------------------------------------------------------------------------------------------


def agent_config(
    tmp_path: Path,
    *,
    node: str = "node-a",
    peer: str = "node-b",
    instances: Sequence[tuple[str, int]] = (("VI_1", 150),),
    advert_int_ms: int = 1000,
    vrrp_version: int = 2,
    fence: bool = True,
    webhook: bool = True,
    notify_fifo: bool = False,
    serial: str | None = None,
    udp: bool = True,
    heartbeat_ms: tuple[int, int] = (200, 1000),
) -> Path:
    """Write `arbiter.toml` (and the heartbeat key, the peer's IPMI password) into tmp_path; returns its path.
    Instances are (name, priority), on `lo`, VRIDs 51, 52, …, gates `tmp_path/NAME.gate`; `heartbeat_ms` is
    (interval, deadtime); the lease store, reference and BMC addresses are never reached (the rig fakes them)."""
    for name, text in (("hb.key", os.urandom(16).hex() + "\n"), ("ipmi.pass", "password\n")):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o600)
    d = tmp_path
    fence_line = (
        f'fence = [{{ driver = "ipmi", level = 1, host = "127.0.0.3", username = "admin", '
        f'password_file = "{d}/ipmi.pass" }}]\n'
        if fence
        else ""
    )
    blocks = [
        f'[node]\nname = "{node}"\ncluster = "web"\nstate_dir = "{d}/state"\n',
        f'[[peer]]\nname = "{peer}"\nheartbeat_addresses = ["127.0.0.2"]\n{fence_line}',
    ]
    for i, (name, priority) in enumerate(instances):
        blocks.append(
            f'[[instance]]\nname = "{name}"\nvip = ["10.0.0.{100 + i}/24"]\ninterface = "lo"\n'
            f'track_file = "{d}/{name}.gate"\npriority = {priority}\nvirtual_router_id = {51 + i}\n'
            f"advert_int_ms = {advert_int_ms}\nvrrp_version = {vrrp_version}\n"
        )
    blocks.append('[reference]\naddresses = ["127.0.0.1"]\nquorum = 1\n')
    blocks.append('[lease]\nredis_url = "redis://127.0.0.1:1/0"\n')
    media = '\nudp = [{ interface = "lo" }]' if udp else ""
    if serial is not None:
        media += f'\nserial = [{{ device = "{serial}" }}]'
    interval, deadtime = heartbeat_ms
    blocks.append(f'[heartbeat]\nkey_file = "{d}/hb.key"\ninterval_ms = {interval}\ndeadtime_ms = {deadtime}{media}\n')
    if webhook:
        blocks.append('[alerts]\nwebhooks = [{ url = "http://alerts.test/hook", format = "json" }]\n')
    fifo = f'\nnotify_fifo = "{d}/notify.fifo"' if notify_fifo else ""
    blocks.append(f'[api]\nsocket = "{d}/agent.sock"{fifo}\n')
    blocks.append(f'[keepalived]\nconfig = "{d}/keepalived.conf"\n')
    path = tmp_path / "arbiter.toml"
    path.write_text("\n".join(blocks))
    return path


def load_config(tmp_path: Path, **kwargs: Any) -> config_mod.Config:
    return config_mod.load(agent_config(tmp_path, **kwargs))


# --- the fakes ------------------------------------------------------------------------------------------------


class FakeClock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeLease:
    """One instance's lease: read and renew answer `view` (set it); acquire grants a new token unless
    `acquire_answer` is set; release frees it. `calls` records every call in order."""

    def __init__(self, instance: str, node: str, clock: Callable[[], float], ttl: float) -> None:
        self.instance, self.node, self.clock, self.ttl = instance, node, clock, ttl
        self.view = LeaseView(LeaseStatus.FREE)
        self.acquire_answer: LeaseView | None = None
        self.calls: list[str] = []
        self.last_error: str | None = None

    async def acquire(self, seed: int = 0) -> LeaseView:
        self.calls.append(f"acquire {seed}")
        if self.acquire_answer is not None:
            self.view = self.acquire_answer
        else:
            self.view = LeaseView(LeaseStatus.MINE, self.node, max(seed, self.view.token or 0) + 1, self.expiry())
        return self.view

    async def release(self) -> LeaseView:
        self.calls.append("release")
        if self.view.status is LeaseStatus.MINE:
            self.view = LeaseView(LeaseStatus.FREE, token=self.view.token)
        return self.view

    async def read(self) -> LeaseView:
        self.calls.append("read")
        return self.view

    def renew(self) -> LeaseView:
        self.calls.append("renew")
        if self.view.status is LeaseStatus.MINE:
            self.view = replace(self.view, expires_at=self.expiry())
        return self.view

    def expiry(self) -> float:
        return self.clock() + self.ttl

    def changes(self) -> list[str]:
        """The calls that change the lease (not reads, not renewals)."""
        return [c for c in self.calls if c.startswith(("acquire", "release"))]


@dataclass
class FakeTokens:
    highest_seen: dict[str, int] = field(default_factory=dict)

    def highest(self, instance: str) -> int:
        return self.highest_seen.get(instance, 0)


class FakeStore:
    def __init__(self, cfg: config_mod.Config, clock: Callable[[], float]) -> None:
        ttl = cfg.lease.ttl_ms / 1000
        self.leases = {i.name: FakeLease(i.name, cfg.node.name, clock, ttl) for i in cfg.instance}
        self.tokens = FakeTokens()
        self.renewed: list[list[str]] = []  # the instances of each batched renewal (none: no call, as Redis)
        self.rounds = 0  # renew_many calls, empty ones included (the lease loop makes one every round)
        self.closed = False

    async def renew_many(self, leases: Sequence[FakeLease]) -> list[LeaseView]:
        self.rounds += 1
        if leases:
            self.renewed.append([lease.instance for lease in leases])
        return [lease.renew() for lease in leases]

    async def close(self) -> None:
        self.closed = True


class FakeReference:
    def __init__(self) -> None:
        self.quorate: bool | None = None
        self.last: Round | None = None
        self.replies_total: dict[str, int] = {}

    async def run(self, on_change: Callable[[Round, Change], None] | None = None) -> None:
        await asyncio.Event().wait()  # rounds are the test's to set


@dataclass
class FakeMedium:
    medium: str
    link: Link


class FakeHeartbeats:
    """What the heartbeats say of each peer: a view you set (`view`) wins; otherwise the real MediaTracker's view
    of the frames you let it hear (`hear`). `sent` keeps the snapshot of every frame the agent sends."""

    def __init__(self, peers: Sequence[str], media: Sequence[str], deadtime: float, clock: Callable[[], float]):
        self.clock = clock
        self.on_news: Callable[[str], None] | None = None
        self.events: asyncio.Queue[MediumEvent] = asyncio.Queue()
        self.link_events: asyncio.Queue[LinkEvent] = asyncio.Queue()
        self.tracker = MediaTracker(peers, media, deadtime, clock)
        self.transports = [FakeMedium(m, Link(open=True, since=clock())) for m in media]
        self.views: dict[tuple[str, str], PeerView] = {}
        self.snapshot: Callable[[], Snapshot] | None = None
        self.sent: list[Snapshot] = []
        self._sequence = 0

    def view(self, peer: str, instance: str = "VI_1", **fields: Any) -> PeerView:
        """Set what the heartbeats say of `peer` for `instance` (PeerView's fields; `alive` defaults to True)."""
        fields.setdefault("alive", True)
        self.views[(peer, instance)] = PeerView(name=peer, **fields)
        return self.views[(peer, instance)]

    def hear(self, peer: str, *reports: InstanceReport, timings: NodeTimings | None = None, medium: str = "") -> None:
        """A frame from `peer`, sent now, arrives on `medium` (the first configured one by default)."""
        self._sequence += 1
        now = self.clock()
        frame = Frame(
            cluster="web",
            node=peer,
            incarnation=1,
            sequence=self._sequence,
            sent_wall_ns=int((WALL_AT_ZERO + now) * 1e9),
            sent_mono_ns=int(now * 1e9),
            instances=reports,
            quorate=True,
            highest_token=0,
            timings=timings,
        )
        self.tracker.accept(frame, medium or self.tracker.media[0])

    def alive(self, peer: str) -> bool | None:
        return next((v.alive for (p, _), v in self.views.items() if p == peer), self.tracker.alive(peer))

    def newest(self, peer: str) -> Received | None:
        return self.tracker.newest(peer)

    def peer_view(self, peer: str, instance: str) -> PeerView:
        return self.views.get((peer, instance)) or self.tracker.peer_view(peer, instance)

    def send_now(self) -> None:
        if self.snapshot is not None:
            self.sent.append(self.snapshot())

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class FakeVips:
    """Which instances hold a VIP here, as the test sets it; `set` fires the agent's netlink callback."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.held: set[str] = set()
        self.on_change: Callable[[str, bool, float], None] | None = None

    def set(self, instance: str, present: bool, at: float | None = None) -> None:
        (self.held.add if present else self.held.discard)(instance)
        if self.on_change is not None:
            self.on_change(instance, present, self.clock() if at is None else at)

    async def start(self, timeout: float = 5.0) -> None:
        pass

    def stop(self) -> None:
        pass

    def present(self, instance: str) -> bool:
        return instance in self.held


class FakeAdverts:
    """One interface's VRRP listener: `since` is the listening start (None: adverts not observed), `adverts`
    the newest advert time per (instance, peer)."""

    def __init__(self, interface: str, since: float | None) -> None:
        self.interface = interface
        self.since = since
        self.adverts: dict[tuple[str, str], float] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def last_advert(self, instance: str, peer: str) -> float | None:
        return self.adverts.get((instance, peer))

    def listening_since(self, instance: str, peer: str) -> float | None:
        return self.since

    def stats(self, now: float) -> dict[str, Any]:
        return {"listening": self.since is not None, "accepted": len(self.adverts)}


class FakeArp:
    """Gratuitous ARPs sent (recorded) and the MACs other than this node's answering ARP for a VIP (set)."""

    def __init__(self) -> None:
        self.garps: list[tuple[str, str, int]] = []
        self.answers: dict[str, set[str]] = {}  # VIP → MACs of other hosts

    def send_garp(self, interface: str, ip: str, count: int = 1, interval: float = 0.02) -> None:
        self.garps.append((interface, ip, count))

    async def probe(self, interface: str, ip: str, timeout: float) -> set[str]:
        return set(self.answers.get(ip, set()))


# --- the rig --------------------------------------------------------------------------------------------------


class Rig:
    """One fake per edge of one agent (see the module docstring). `heartbeats_factory`, when set, replaces the
    fake heartbeats (e.g. by the real HeartbeatService) and is given the agent's snapshot callback."""

    def __init__(self, cfg: config_mod.Config, clock: Callable[[], float] | None = None) -> None:
        self.cfg = cfg
        self.clock: Callable[[], float] = clock if clock is not None else FakeClock()
        self.store = FakeStore(cfg, self.clock)
        self.reference = FakeReference()
        peers = [p.name for p in cfg.peer]
        media = [f"udp:{u.interface}" for u in cfg.heartbeat.udp]
        self.heartbeats = FakeHeartbeats(peers, media, cfg.heartbeat.deadtime_ms / 1000, self.clock)
        self.heartbeats_factory: Callable[[Callable[[], Snapshot]], HeartbeatEdge] | None = None
        self.vips = FakeVips(self.clock)
        self.adverts = {i.interface: FakeAdverts(i.interface, self.clock()) for i in cfg.instance}
        self.arp = FakeArp()
        self.bmcs = {p.name: FakeFencer(device=f"bmc-{p.name}") for p in cfg.peer if p.fence}
        self.posted: list[dict[str, Any]] = []  # every alert posted, as JSON
        self.urls: list[str] = []  # where each went
        self.lines: list[dict[str, Any]] = []
        self.stop_query = Fixed(StopMode.STOP, "a test stops the agent for good")
        self.calls: Callbacks | None = None

    @property
    def lease(self) -> FakeLease:
        """The first instance's lease."""
        return self.store.leases[self.cfg.instance[0].name]

    def wall(self) -> float:
        return WALL_AT_ZERO + self.clock()

    def clocks(self) -> Clocks:
        now = self.clock()
        return Clocks(BOOT_ID, BOOT_AT_ZERO + now, now, self.wall())

    def _post(self, request: httpx.Request) -> httpx.Response:
        self.posted.append(json.loads(request.content))
        self.urls.append(str(request.url))
        return httpx.Response(200)

    def alert_sink(self, cfg: config_mod.Config) -> AlertSink:
        """The real sink of `cfg`'s webhooks, posting to the MockTransport."""
        hooks = [(hook, None) for hook in cfg.alerts.webhooks]
        return AlertSink(hooks, cluster=cfg.node.cluster, node=cfg.node.name, transport=httpx.MockTransport(self._post))

    def fencing(self, cfg: config_mod.Config) -> tuple[Orchestrator, int]:
        """The real orchestrator over the FakeFencers of `cfg`'s fenceable peers, with no random delay. It runs on
        its own (real) clock: FakeFencer answers at once, so nothing waits on it."""
        assert self.calls is not None
        levels = {
            p.name: [[self.bmcs.setdefault(p.name, FakeFencer(device=f"bmc-{p.name}"))]] for p in cfg.peer if p.fence
        }
        return Orchestrator(levels, power_timeout=1.0, confirm=0.0, on_event=self.calls.fence_event), 0

    def edges(self, calls: Callbacks) -> Edges:
        cfg = self.cfg
        self.calls = calls
        self.vips.on_change = calls.vip_changed
        self.heartbeats.snapshot = calls.snapshot
        heartbeats: HeartbeatEdge = self.heartbeats
        if self.heartbeats_factory is not None:
            heartbeats = self.heartbeats_factory(calls.snapshot)
        gates = {i.name: GateFile(i.track_file) for i in cfg.instance}
        orchestrator, drawn = self.fencing(cfg)
        api = cfg.api
        return Edges(
            gates=gates,
            gate_watch=GateWatch(gates, calls.gate_overwritten),
            store=self.store,
            leases=self.store.leases,
            reference=self.reference,
            heartbeats=heartbeats,
            vips=self.vips,
            adverts=self.adverts,
            arp=self.arp,
            notify=NotifyServer(api.socket, on_event=calls.notified, group=api.group),
            fifo=NotifyFifo(api.notify_fifo, calls.fifo_line) if api.notify_fifo is not None else None,
            alerts=self.alert_sink(cfg),
            orchestrator=orchestrator,
            systemd=SystemdNotifier.from_env({}),
            stop_query=self.stop_query,
            drawn_delay_ms=drawn,
            alerts_for=self.alert_sink,
            fencing_for=self.fencing,
            clock=self.clock,
            wall=self.wall,
            clocks=self.clocks,
        )

    def agent(self, config_path: Path | None = None) -> Agent:
        return Agent(self.cfg, self.edges, out=self.lines.append, config_path=config_path)

    def decisions(self, instance: str = "VI_1") -> list[dict[str, Any]]:
        return [line for line in self.lines if line["event"] == "decision" and line["instance"] == instance]

    async def alert_kinds(self, agent: Agent) -> list[str]:
        """Deliver what the agent queued (closing its sink: call last) and list the kinds posted."""
        await agent.alerts.close(2.0)
        return [p["kind"] for p in self.posted]


# --- driving the agent ----------------------------------------------------------------------------------------


async def settle(agent: Agent) -> None:
    """Let the jobs a cycle spawned (lease calls, fences, power reads, the record) run to their end; a re-read
    waiting for a lease's expiry (on the real clock) is left waiting."""
    for _ in range(300):
        if not [key for key in agent._busy if not key.startswith("expiry:")]:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"jobs still running: {sorted(agent._busy)}")


async def cycle(agent: Agent, clock: FakeClock | None = None, advance: float = 0.0) -> str:
    """Move the fake clock, run one decision cycle, and let what it spawned finish."""
    if clock is not None and advance:
        clock.advance(advance)
    reasons = agent.run_cycle()
    await settle(agent)
    return reasons


async def holding_with_the_lease(rig: Rig, agent: Agent, clock: FakeClock) -> None:
    """node-a (begun) MASTER with VI_1's VIP beside node-b (priority 100), a backup heard on the heartbeats: one
    lease round and two cycles later it holds with the lease (H1); the caller asserts what it relies on."""
    rig.vips.set("VI_1", True)
    rig.reference.quorate = True
    rig.heartbeats.view("node-b", heard_at=clock(), state=VrrpState.BACKUP, priority=100, quorate=True, rule="B2")
    await lease_round(agent)
    await cycle(agent)
    await cycle(agent, clock, 0.2)


async def lease_round(agent: Agent) -> None:
    """One round of the agent's own lease loop (renew what it holds, read the others), then stop it."""
    store = agent.store
    before = store.rounds if isinstance(store, FakeStore) else 0
    task = asyncio.ensure_future(agent._lease_loop())
    for _ in range(200):
        await asyncio.sleep(0.001)
        if isinstance(store, FakeStore) and store.rounds > before:
            break
    for _ in range(5):  # the reads after the renewal
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await settle(agent)


def gate_text(cfg: config_mod.Config, instance: str = "VI_1") -> str:
    """What keepalived reads in the instance's track file."""
    return next(i.track_file for i in cfg.instance if i.name == instance).read_text()


def stop_tasks(agent: Agent) -> None:
    for task in list(agent._tasks):
        task.cancel()
