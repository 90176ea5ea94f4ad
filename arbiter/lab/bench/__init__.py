"""`keepalived-arbiter lab bench [TARGET]`: benchmarks that print figures (JSON with --json).

Without a TARGET: `scenarios`, issue 6's goals with keepalived alone beside the arbiter in one run.

One module per target, each with `run(args) -> dict` (the figures, JSON-serialisable) and `render(dict) -> str`
(the same figures for a terminal). Targets are looked up by name so `--help` stays light.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Protocol, cast

TARGETS = {
    "lease": "lease renewals for many instances on one Redis, beside raw SET throughput",
    "heartbeat": "CPU and RSS of one agent sending/receiving heartbeats at 10 Hz on three media",
    "fence": "fence → confirmed OFF on one ipmi_sim: our IPMI driver (pyghmi) beside fence_ipmilan",
    "decision": "agent decision latency on a lab node: VIP appears → gate written (p50, p99)",
    "hook": "notify hook wall time beside `-c pass` of its interpreter, against a live agent socket",
    "scenarios": "lab scenarios, keepalived alone beside the arbiter: dual master, ARP flaps, failover, goals",
    "transitions": "start-up, restarts, returns, preemption: alone beside the arbiter, per phase, issue 12's goals",
    "loss": "VRRPv3 0.05 s with 10 % VRRP loss: dual master alone beside the arbiter, power-off failover, issue 14",
}
DEFAULT = "scenarios"


class Bench(Protocol):
    def run(self, args: argparse.Namespace) -> dict[str, Any]: ...

    def render(self, result: dict[str, Any]) -> str: ...


def load(target: str) -> Bench:
    if target not in TARGETS:
        raise ValueError(f"unknown benchmark {target!r}; known: {', '.join(sorted(TARGETS))}")
    return cast(Bench, importlib.import_module(f"arbiter.lab.bench.{target}"))
