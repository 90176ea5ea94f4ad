"""`python -m arbiter.evidence.heartbeat`: one heartbeat service on its own, without the agent.

For the lab and its benchmark: sends a fixed snapshot (N instances in BACKUP), receives, and on SIGTERM/SIGINT
writes its counters as JSON to `--stats` and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from arbiter.evidence.heartbeat.frame import InstanceReport, load_key
from arbiter.evidence.heartbeat.serial import SerialTransport
from arbiter.evidence.heartbeat.service import HeartbeatService, Snapshot
from arbiter.evidence.heartbeat.transport import HeartbeatTransport
from arbiter.evidence.heartbeat.udp import UdpTransport
from arbiter.model import VrrpState


def _address(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    return (host, int(port)) if sep and "." in host else (text, default_port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m arbiter.evidence.heartbeat", description=__doc__)
    p.add_argument("--node", required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--key", type=Path, required=True, help="heartbeat key file (mode 600)")
    p.add_argument("--peer", action="append", default=[], help="peer node name (repeat)")
    p.add_argument("--udp", action="append", default=[], metavar="IFACE", help="UDP medium on IFACE (repeat)")
    p.add_argument("--port", type=int, default=6941)
    p.add_argument("--peer-address", action="append", default=[], metavar="ADDR[:PORT]")
    p.add_argument("--serial", action="append", default=[], metavar="DEVICE")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--interval-ms", type=int, default=100)
    p.add_argument("--deadtime-ms", type=int, default=500)
    p.add_argument("--instances", type=int, default=2, help="instances reported in each frame")
    p.add_argument("--stats", type=Path, help="write counters here as JSON on exit")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> dict[str, object]:
    peers = [_address(a, args.port) for a in args.peer_address]
    transports: list[HeartbeatTransport] = [UdpTransport(i, args.port, peers) for i in args.udp]
    transports += [SerialTransport(d, args.baud) for d in args.serial]
    reports = tuple(
        InstanceReport(f"VI_{n}", VrrpState.BACKUP, False, 100, args.peer[0] if args.peer else None, 40 + n)
        for n in range(args.instances)
    )
    snapshot = Snapshot(reports, quorate=True, highest_token=40 + args.instances)
    service = HeartbeatService(
        cluster=args.cluster,
        node=args.node,
        key=load_key(args.key),
        peers=args.peer,
        transports=transports,
        interval=args.interval_ms / 1000,
        deadtime=args.deadtime_ms / 1000,
        snapshot=lambda: snapshot,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with service:
        await stop.wait()
        return service.stats()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stats = asyncio.run(serve(args))
    if args.stats is not None:
        tmp = args.stats.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(args.stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
