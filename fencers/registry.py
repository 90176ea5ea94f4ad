"""Drivers by name: each `[[peer]] fence` entry names one with `driver = "..."`.

A driver module provides `from_config(device, timeout) -> Fencer`, where `timeout` (seconds) bounds each of the
driver's calls. Modules are imported on first use so a node without paramiko's or pyghmi's devices never loads
them.
"""

from __future__ import annotations

import importlib
from typing import Any

from fencers.base import FenceError, Fencer

DRIVERS = {
    "ipmi": "fencers.ipmi",  # IPMI 2.0 lanplus through pyghmi
    "ssh": "fencers.ssh",  # power-off command over SSH (paramiko); cannot read power
    "agent": "fencers.agent",  # any installed ClusterLabs fence_* agent (PDUs, iLO, Redfish, clouds)
}


def build(device: Any, timeout: float) -> Fencer:
    """The driver for one config device (`arbiter.config.SshFence | IpmiFence | AgentFence`)."""
    name = getattr(device, "driver", None)
    if name not in DRIVERS:
        raise FenceError(f"unknown fence driver {name!r}; known: {', '.join(sorted(DRIVERS))}")
    module = importlib.import_module(DRIVERS[name])
    fencer: Fencer = module.from_config(device, timeout)
    return fencer
