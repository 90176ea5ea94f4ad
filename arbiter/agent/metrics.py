"""Prometheus metrics on `api.metrics` (loopback by default), served by prometheus-client's own HTTP server.

Two kinds of series:
- counted as things happen, in the agent's loop: decisions by instance and rule, fences by result, split
  brains detected, and the decision latency histogram (`AgentMetrics`);
- read at scrape time from the same snapshot `status --json` shows (`StatusCollector`): gate, role, lease,
  heartbeat media, reference replies, refused frames, alert endpoints, maintenance mode (paused). One source
  for both views, so a dashboard and `status` can never disagree.

prometheus-client serves from a thread; the snapshot must be built in the agent's event loop (its dicts change
there), so the collector asks the loop for it (`run_coroutine_threadsafe`) and waits at most `SCRAPE_TIMEOUT`.
A loop too busy to answer is exported as `keepalived_arbiter_status_ok 0`, not as stale figures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
PREFIX = "keepalived_arbiter"
SCRAPE_TIMEOUT = 2.0
STATES = ("INIT", "BACKUP", "MASTER", "FAULT", "STOP", "UNKNOWN")
# Decision latency (event → gate written) is milliseconds when healthy; the upper buckets catch a stalled loop.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AgentMetrics:
    """The event counters; `registry` also carries a `StatusCollector` once `attach_status` is called."""

    def __init__(self) -> None:
        # `*_created` series (one per label set) double the output and no dashboard here uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            f"{PREFIX}_decisions",
            "Decisions that changed the gate or rule, or carried actions, by instance and policy rule",
            ["instance", "rule"],
            registry=self.registry,
        )
        self.fences = Counter(
            f"{PREFIX}_fences",
            "Fencing runs against a peer by result (off, failed)",
            ["peer", "result"],
            registry=self.registry,
        )
        self.split_brains = Counter(
            f"{PREFIX}_split_brains",
            "Split brains detected: both nodes holding a VIP (via heartbeat or an ARP answer from another MAC)",
            ["instance", "via"],
            registry=self.registry,
        )
        self.gates_restored = Counter(
            f"{PREFIX}_gates_restored",
            "Gate files found saying otherwise than the agent decided (keepalived's init_file at its start, a hand "
            "edit) and rewritten",
            ["instance"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_decision_latency_seconds",
            "From the event that woke the decision loop (VIP change, notify, lease, ...) to the gate written",
            ["trigger"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._server: WSGIServer | None = None

    def attach_status(self, status: Callable[[], Mapping[str, Any] | None]) -> None:
        self.registry.register(StatusCollector(status))

    def serve(self, address: str) -> None:
        """Listen on "HOST:PORT" (IPv6 as "[::1]:9687"); OSError when the port is taken."""
        host, _, port = address.rpartition(":")
        self._server, _thread = start_http_server(int(port), host.strip("[]"), self.registry)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_port)


def loop_status(
    loop: asyncio.AbstractEventLoop, build: Callable[[], dict[str, Any]]
) -> Callable[[], dict[str, Any] | None]:
    """A thread-safe reader of `build()`: runs it in `loop` and waits up to SCRAPE_TIMEOUT; None if it can't."""

    async def in_loop() -> dict[str, Any]:
        return build()

    def read() -> dict[str, Any] | None:
        coro = in_loop()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError as exc:  # the loop is closed (the agent is stopping)
            coro.close()
            log.warning("metrics: no status from the agent's loop: %r", exc)
            return None
        try:
            return future.result(SCRAPE_TIMEOUT)
        except Exception as exc:
            future.cancel()
            log.warning("metrics: no status from the agent's loop: %r", exc)
            return None

    return read


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


class StatusCollector(Collector):
    def __init__(self, status: Callable[[], Mapping[str, Any] | None]) -> None:
        self._status = status

    def collect(self) -> Iterator[Any]:
        status = self._status()
        ok = _gauge("status_ok", "1 when the agent's loop answered this scrape with its status", [])
        ok.add_metric([], 0 if status is None else 1)
        yield ok
        if status is None:
            return
        yield from self._agent(status)
        yield from self._instances(status["instances"])
        yield from self._peers(status["peers"])
        yield from self._reference(status["reference"])
        yield from self._heartbeat(status["heartbeat"])
        yield from self._alerts(status["alerts"])

    def _agent(self, s: Mapping[str, Any]) -> Iterator[Any]:
        info = InfoMetricFamily(f"{PREFIX}_agent", "The agent: cluster and node name")
        info.add_metric([], {"cluster": s["cluster"], "node": s["node"]})
        yield info
        healthy = _gauge("healthy", "1 while the decision loop runs on time (what the systemd watchdog sees)", [])
        healthy.add_metric([], 1 if s["healthy"] else 0)
        yield healthy
        uptime = _gauge("uptime_seconds", "Seconds since the agent started", [])
        uptime.add_metric([], s["uptime_s"])
        yield uptime
        paused = _gauge("paused", "1 while the agent is paused (maintenance mode): gates held, no fencing", [])
        paused.add_metric([], 1 if (s.get("maintenance") or {}).get("paused") else 0)
        yield paused
        withheld = _gauge(
            "withheld_actions", "Actions the paused agent did not carry out in its last cycle", ["instance"]
        )
        for inst in s["instances"]:
            withheld.add_metric([inst["name"]], len(inst.get("withheld", ())))
        yield withheld
        drift = s.get("drift")
        findings = _gauge("config_findings", "Findings of the last keepalived.conf check (-1: unreadable)", [])
        if drift is not None:
            findings.add_metric([], -1 if drift.get("error") else len(drift.get("findings", [])))
        yield findings

    def _instances(self, instances: list[Mapping[str, Any]]) -> Iterator[Any]:
        gate = _gauge("gate_open", "1 open (keepalived decides), 0 closed (instance held in FAULT)", ["instance"])
        role = _gauge(
            "role", "keepalived's state of the instance on this node: 1 for the current state", ["instance", "state"]
        )
        vip = _gauge("vip_present", "1 while the instance's VIP is configured on this node", ["instance"])
        held = _gauge("lease_held", "1 while this node holds the instance's lease", ["instance"])
        token = _gauge("lease_token", "Fencing token of the lease as last read (any holder)", ["instance"])
        ttl = _gauge("lease_ttl_seconds", "Time left on the lease as last read", ["instance"])
        for inst in instances:
            name = inst["name"]
            if inst["gate"] is not None:
                gate.add_metric([name], 1 if inst["gate"] == "open" else 0)
            for state in STATES:
                role.add_metric([name, state], 1 if inst["state"] == state else 0)
            vip.add_metric([name], 1 if inst["vip_present"] else 0)
            lease = inst["lease"]
            held.add_metric([name], 1 if lease["status"] == "mine" else 0)
            if lease["token"] is not None:
                token.add_metric([name], lease["token"])
            if lease["ttl_ms"] is not None:
                ttl.add_metric([name], lease["ttl_ms"] / 1000)
        yield from (gate, role, vip, held, token, ttl)

    def _peers(self, peers: list[Mapping[str, Any]]) -> Iterator[Any]:
        alive = _gauge("peer_alive", "1 while any heartbeat medium to the peer is up, 0 when all are down", ["peer"])
        up = _gauge(
            "heartbeat_up", "1 while frames from the peer arrive on this medium within deadtime", ["peer", "medium"]
        )
        age = _gauge(
            "heartbeat_last_seen_seconds", "Age of the newest frame from the peer on this medium", ["peer", "medium"]
        )
        for peer in peers:
            if peer["alive"] is not None:
                alive.add_metric([peer["name"]], 1 if peer["alive"] else 0)
            for medium in peer["media"]:
                if medium["up"] is not None:
                    up.add_metric([peer["name"], medium["medium"]], 1 if medium["up"] else 0)
                if medium["last_seen_age_s"] is not None:
                    age.add_metric([peer["name"], medium["medium"]], medium["last_seen_age_s"])
        yield from (alive, up, age)

    def _reference(self, ref: Mapping[str, Any]) -> Iterator[Any]:
        quorate = _gauge("reference_quorate", "1 when enough reference addresses answer (after rise/fall)", [])
        if ref["quorate"] is not None:
            quorate.add_metric([], 1 if ref["quorate"] else 0)
        reply = _gauge("reference_reply", "1 when the address answered the last reference round", ["address"])
        for address, ok in (ref["replies"] or {}).items():
            reply.add_metric([address], 1 if ok else 0)
        total = CounterMetricFamily(
            f"{PREFIX}_reference_replies", "Echo replies received from each reference address", labels=["address"]
        )
        for address, n in ref.get("replies_total", {}).items():
            total.add_metric([address], n)
        yield from (quorate, reply, total)

    def _heartbeat(self, hb: Mapping[str, Any]) -> Iterator[Any]:
        refused = CounterMetricFamily(
            f"{PREFIX}_heartbeat_frames_refused",
            "Heartbeat frames refused, by medium and reason",
            labels=["medium", "reason"],
        )
        for medium, reasons in hb["refused"].items():
            for reason, n in reasons.items():
                refused.add_metric([medium, reason], n)
        accepted = CounterMetricFamily(
            f"{PREFIX}_heartbeat_frames_accepted", "Heartbeat frames accepted, by medium", labels=["medium"]
        )
        for medium, n in hb["accepted"].items():
            accepted.add_metric([medium], n)
        opened = _gauge("heartbeat_medium_open", "1 while this node has the medium open, 0 while retrying", ["medium"])
        for medium, link in hb.get("media", {}).items():
            opened.add_metric([medium], 1 if link["open"] else 0)
        yield from (refused, accepted, opened)

    def _alerts(self, endpoints: list[Mapping[str, Any]]) -> Iterator[Any]:
        up = _gauge("alert_endpoint_up", "0 while the webhook endpoint is considered dead", ["url"])
        queued = _gauge("alert_queued", "Alerts waiting for delivery to the endpoint", ["url"])
        delivered = CounterMetricFamily(f"{PREFIX}_alerts_delivered", "Alerts delivered", labels=["url"])
        failed = CounterMetricFamily(f"{PREFIX}_alert_attempts_failed", "Failed delivery attempts", labels=["url"])
        dropped = CounterMetricFamily(
            f"{PREFIX}_alerts_dropped", "Alerts dropped (queue full or too old)", labels=["url"]
        )
        for ep in endpoints:
            url = ep["url"]
            up.add_metric([url], 0 if ep["dead"] else 1)
            queued.add_metric([url], ep["queued"])
            delivered.add_metric([url], ep["delivered"])
            failed.add_metric([url], ep["failed_attempts"])
            dropped.add_metric([url], ep["dropped"])
        yield from (up, queued, delivered, failed, dropped)
