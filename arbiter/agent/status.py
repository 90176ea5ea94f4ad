"""What `keepalived-arbiter status` shows and `/metrics` exports: one snapshot of the agent, built in its loop.

`build_status(agent)` reads the agent's current evidence and decisions into a plain, JSON-ready dict whose
shape is the documented, stable `--json` schema (`SCHEMA`; README "Reading status"). Keys are only ever added
within one schema version. Times are either ages in seconds (`*_age_s`, from the monotonic clock) or wall-clock
Unix times (`time`, `started`, `since`, `at`), never both mixed in one key.

The peer's half of the cluster view comes from its newest heartbeat frame: its keepalived state, VIP, gate and
last rule per instance, its lease view and its reference quorum — so `status` on either node shows both, and
shows how stale the peer's half is.

Maintenance mode (`keepalived-arbiter pause`): `maintenance` says whether this agent is paused, by whom, since
when (`at`) and why, and the gates it holds; each instance's `decision` is then what the policy would do and
`withheld` the actions it asked for in the last cycle that the paused agent did not carry out.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from arbiter.alerts import redact_url

if TYPE_CHECKING:
    from arbiter.agent.daemon import Agent

SCHEMA = "keepalived-arbiter.status/1"


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else round(max(0.0, now - at), 3)


def _lease_store(agent: Agent) -> dict[str, Any]:
    lease = agent.cfg.lease
    if lease.sentinel is not None:
        return {"sentinel": list(lease.sentinel.addresses), "service": lease.sentinel.service}
    return {"url": redact_url(lease.redis_url or "", "json")}


def build_status(agent: Agent) -> dict[str, Any]:
    now = agent.clock()  # the agent's clocks: its times (cycle_at, power reads, leases) are on them
    wall = agent.wall()
    cfg = agent.cfg
    instances = []
    for name, inst in agent.instances.items():
        view = agent.lease_views[name]
        decision = agent.last.get(name)
        claim = agent.arp_claims.get(name)
        gate = agent.gates[name].cached
        instances.append(
            {
                "name": name,
                "interface": inst.interface,
                "vips": [str(v) for v in inst.vip],
                "state": agent.kstate[name].value,
                "vip_present": agent.vips.present(name),
                "priority": agent.kprio[name],
                "gate": None if gate is None else gate.value,
                "gate_restored": agent.gates[name].restored,
                "lease": {
                    "status": view.status.value,
                    "holder": view.holder,
                    "token": view.token,
                    "ttl_ms": None if view.expires_at is None else max(0, round((view.expires_at - now) * 1000)),
                    # Why the store could not be asked (unreachable at boot or later); retried every renew_ms.
                    "error": agent.leases[name].last_error,
                },
                "decision": None
                if decision is None
                else {
                    "rule": decision.rule,
                    "gate": decision.gate.value,
                    "reason": decision.reason,
                    "since": agent.decided_at.get(name),
                },
                "split_brain": None
                if claim is None
                else {"via": "arp", "macs": sorted(claim[0]), "age_s": _age(now, claim[1])},
                "withheld": list(agent.withheld.get(name, ())),
            }
        )
    peers = []
    tracker = agent.heartbeats.tracker
    for peer in agent.peers:
        newest = agent.heartbeats.newest(peer)
        frame = newest.frame if newest is not None else None
        power, power_at = agent.power.get(peer, (None, None))
        fence = agent.last_fence.get(peer)
        adverts = []
        for name, inst in agent.instances.items():
            listener = agent.adverts.get(inst.interface)
            seen = None if listener is None else listener.last_advert(name, peer)
            since = None if listener is None else listener.listening_since(name, peer)
            adverts.append({"instance": name, "last_age_s": _age(now, seen), "observed": since is not None})
        peers.append(
            {
                "name": peer,
                "alive": agent.heartbeats.alive(peer),
                "leaving": bool(frame is not None and frame.leaving),
                "last_heard_age_s": None if newest is None else _age(now, newest.received_at),
                "media": [
                    {
                        "medium": medium,
                        "up": tracker.up(peer, medium),
                        "last_seen_age_s": _age(now, tracker.last_seen(peer, medium)),
                    }
                    for medium in tracker.media_of(peer)
                ],
                "quorate": None if frame is None else frame.quorate,
                "power": None if power is None else {"state": power.value, "age_s": _age(now, power_at)},
                "fence": fence,
                "adverts": adverts,
                "instances": []
                if frame is None
                else [
                    {
                        "name": report.name,
                        "state": report.state.value,
                        "vip_present": report.vip_present,
                        "priority": report.priority,
                        "gate": None if report.gate_open is None else ("open" if report.gate_open else "closed"),
                        "rule": report.rule,
                        "lease_holder": report.lease_holder,
                        "lease_token": report.lease_token,
                    }
                    for report in frame.instances
                ],
            }
        )
    refused: dict[str, dict[str, int]] = {}
    for (medium, reason), count in sorted(tracker.refused.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
        refused.setdefault(medium, {})[reason.value] = count
    last_round = agent.reference.last
    return {
        "schema": SCHEMA,
        "cluster": cfg.node.cluster,
        "node": agent.node,
        "pid": os.getpid(),
        "time": round(wall, 3),
        "started": round(agent.started_wall, 3),
        "uptime_s": round(now - agent.started_mono, 3),
        "healthy": agent.healthy(now),
        "maintenance": {
            "paused": agent.pause is not None,
            **(agent.pause.as_dict() if agent.pause is not None else {"by": None, "at": None, "reason": None}),
            "gates": {name: gate.value for name, gate in agent.held.items()},
        },
        "last_cycle_age_s": _age(now, agent.cycle_at),
        "config": {
            "path": None if agent.config_path is None else str(agent.config_path),
            "loaded": round(agent.loaded_wall, 3),
            "reload": agent.reload_result,
        },
        "reference": {
            "quorate": agent.reference.quorate,
            "quorum": cfg.reference.quorum,
            "replies": None if last_round is None else dict(last_round.replies),
            "last_round_age_s": None if last_round is None else _age(now, last_round.at),
            "replies_total": dict(agent.reference.replies_total),
        },
        "lease_store": _lease_store(agent),
        "instances": instances,
        "peers": peers,
        "last_fence": agent.last_fence_any,
        "heartbeat": {
            "refused": refused,
            "accepted": dict(tracker.accepted),
            # This node's side of each medium: open, or down with the reason and the next retry.
            "media": {t.medium: t.link.as_dict(now) for t in agent.heartbeats.transports},
        },
        "vrrp": {iface: listener.stats(now) for iface, listener in sorted(agent.adverts.items())},
        "alerts": agent.alerts.status(),
        "drift": agent.drift,
        "keepalived_events": {
            "applied": dict(agent.keepalived.applied),
            "hooks_dropped": dict(agent.keepalived.dropped),
        },
    }
