"""`lab bench fence`: "fence → confirmed OFF" through our IPMI driver beside `fence_ipmilan`, on one ipmi_sim.

Owns `reachable_bmc`, the one-BMC setup the fencer integration tests share: the lab's ipmi_sim (arbiter.lab.bmc)
in a namespace of its own, reached from the calling process's namespace over a veth pair, so that pyghmi (in
this process) and fence_ipmilan (a child of it) talk to the BMC from the same network position.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from arbiter.lab.bmc import Bmc, BmcSpec

BMC_USER = "admin"
BMC_PASSWORD = "password"
BMC_PORT = 623
_SUBNET_PREFIX = "10.213"  # /30s in 10.213.N.0 for the veth between this process and the BMC namespace


@dataclass(frozen=True)
class BmcLink:
    """Where a BMC started by `reachable_bmc` lives and how to reach it."""

    bmc: Bmc
    netns: str  # the BMC's namespace (removed on exit)
    host_if: str  # veth end in the caller's namespace (removed with the namespace)
    host_address: str  # the caller's address on that veth
    address: str  # the BMC's address, reachable from the caller
    port: int
    username: str
    password: str
    workdir: Path

    @property
    def power_off_marker(self) -> Path:
        return self.workdir / "powered-off"

    @property
    def power_on_marker(self) -> Path:
        return self.workdir / "powered-on"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def _free_subnet(start: int) -> int:
    """A third octet N whose 10.213.N.0/24 no interface here uses (parallel tests and benches pick by PID)."""
    for step in range(254):
        n = (start + step) % 254 + 1
        if not _ip("-o", "-4", "addr", "show", "to", f"{_SUBNET_PREFIX}.{n}.0/24").stdout.strip():
            return n
    raise RuntimeError(f"no free /24 in {_SUBNET_PREFIX}.0.0/16 for the BMC veth")


@contextlib.contextmanager
def reachable_bmc(workdir: Path, tag: str, port: int = BMC_PORT) -> Iterator[BmcLink]:
    """Start ipmi_sim in namespace `kf<tag>`, reachable from here over veth `kf<tag>h`; yield its link.

    `tag` (letters/digits, at most 10 characters) names the namespace and the veth pair so that cleanup works by
    name. The BMC's power commands only touch marker files in `workdir`. Everything is stopped by PID and
    removed by name on exit, whatever happened.
    """
    if not tag.isalnum() or len(tag) > 10:
        raise ValueError(f"BMC tag {tag!r}: use at most 10 letters or digits")
    netns, host_if, bmc_if = f"kf{tag}", f"kf{tag}h", f"kf{tag}b"
    n = _free_subnet(os.getpid())
    host_address, address = f"{_SUBNET_PREFIX}.{n}.1", f"{_SUBNET_PREFIX}.{n}.2"
    workdir = workdir.absolute()
    link: BmcLink | None = None
    try:
        _ip("netns", "add", netns)
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("link", "add", host_if, "type", "veth", "peer", "name", bmc_if, "netns", netns)
        _ip("addr", "add", f"{host_address}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", netns, "addr", "add", f"{address}/30", "dev", bmc_if)
        _ip("-n", netns, "link", "set", bmc_if, "up")
        spec = BmcSpec(
            node=tag,
            netns=netns,
            address=address,
            port=port,
            username=BMC_USER,
            password=BMC_PASSWORD,
            workdir=workdir,
            power_off_cmd=["touch", str(workdir / "powered-off")],
            power_on_cmd=["touch", str(workdir / "powered-on")],
        )
        bmc = Bmc(spec)
        link = BmcLink(bmc, netns, host_if, host_address, address, port, BMC_USER, BMC_PASSWORD, workdir)
        bmc.start(timeout=10)
        yield link
    finally:
        if link is not None:
            link.bmc.stop()
        _ip("netns", "del", netns, check=False)  # takes the veth pair with it
        _ip("link", "del", host_if, check=False)
