"""`lab bench heartbeat`: CPU and memory of one heartbeat process on three media at 10 Hz, against a peer.

Builds its own set-up and tears it down by name and PID whatever happens: two network namespaces (unique
prefix) joined by two veth pairs, `eth0` (10.77.0.0/24) and `eth1` (10.77.1.0/24), and a socat pty pair as the
serial cable. In each namespace runs `python -m arbiter.evidence.heartbeat` with UDP on eth0 and eth1 plus the
serial line, sending to the other node's two addresses every 100 ms. The process under test is node-a; its
CPU is read from /proc/PID/stat (utime + stime) over the window, its RSS from /proc/PID/status each second.
Both processes write their frame counters on SIGTERM, which show the traffic really flowed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from arbiter.lab import netns

DEFAULT_SECONDS = 60.0
WARM_UP = 3.0  # imports done, serial opened, every medium up before the window starts
INTERVAL_MS = 100
DEADTIME_MS = 500
GOAL_CPU_PERCENT = 2.0
GOAL_RSS_MB = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of stat(5))


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


def _agent(ns: str, node: str, peer: str, peer_net: str, serial: Path, key: Path, stats: Path, log: Path) -> int:
    argv = [
        sys.executable, "-m", "arbiter.evidence.heartbeat",
        "--cluster", "bench", "--node", node, "--peer", peer, "--key", str(key),
        "--udp", "eth0", "--udp", "eth1",
        "--peer-address", f"10.77.0.{peer_net}", "--peer-address", f"10.77.1.{peer_net}",
        "--serial", str(serial),
        "--interval-ms", str(INTERVAL_MS), "--deadtime-ms", str(DEADTIME_MS),
        "--instances", "2", "--stats", str(stats),
    ]  # fmt: skip
    with open(log, "ab") as out:
        # `ip netns exec` execs the command itself: the Popen PID is the Python process measured.
        proc = subprocess.Popen(netns.in_ns(ns, argv), stdout=out, stderr=subprocess.STDOUT)
    return proc.pid


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not netns.gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def run(args: argparse.Namespace) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise SystemExit("lab bench heartbeat: needs root (network namespaces, veth pairs)")
    for tool in ("ip", "socat"):
        if shutil.which(tool) is None:
            raise SystemExit(f"lab bench heartbeat: needs {tool}")
    seconds = float(args.seconds) if args.seconds else DEFAULT_SECONDS
    prefix = f"khb{os.getpid()}"
    ns_a, ns_b = f"{prefix}a", f"{prefix}b"
    work = Path(tempfile.mkdtemp(prefix="arbiter-bench-heartbeat-"))
    pids: list[int] = []
    socat: subprocess.Popen[bytes] | None = None
    try:
        for ns in (ns_a, ns_b):
            netns.delete_namespace(ns)
            netns.add_namespace(ns)
        for i in (0, 1):
            veth = ["type", "veth", "peer", "name", f"eth{i}", "netns", ns_b]
            netns.run(["ip", "link", "add", f"eth{i}", "netns", ns_a, *veth])
            for ns, host in ((ns_a, 1), (ns_b, 2)):
                netns.run(["ip", "addr", "add", f"10.77.{i}.{host}/24", "dev", f"eth{i}"], ns=ns)
                netns.run(["ip", "link", "set", f"eth{i}", "up"], ns=ns)
        key = work / "heartbeat.key"
        key.write_bytes(os.urandom(32).hex().encode())
        key.chmod(0o600)
        tty_a, tty_b = work / "ttyA", work / "ttyB"
        with open(work / "socat.log", "ab") as log:
            argv = ["socat", "-d", "-d", f"pty,raw,echo=0,link={tty_a}", f"pty,raw,echo=0,link={tty_b}"]
            socat = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while not (tty_a.exists() and tty_b.exists()):
            if time.monotonic() > deadline:
                raise netns.LabError(f"socat made no pty pair; see {work / 'socat.log'}")
            time.sleep(0.01)
        stats_a, stats_b = work / "node-a.json", work / "node-b.json"
        pids.append(_agent(ns_b, "node-b", "node-a", "1", tty_b, key, stats_b, work / "node-b.log"))
        pid = _agent(ns_a, "node-a", "node-b", "2", tty_a, key, stats_a, work / "node-a.log")
        pids.append(pid)
        time.sleep(WARM_UP)
        for p in pids:
            if netns.gone(p):
                raise netns.LabError(f"heartbeat process {p} exited; see {work}/node-*.log")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"arbiter.evidence.heartbeat" not in cmdline:
            raise netns.LabError(f"PID {pid} is not the heartbeat process: {cmdline!r}")

        rss_kb: list[int] = []
        cpu_start, wall_start = _cpu_seconds(pid), time.monotonic()
        end = wall_start + seconds
        while (now := time.monotonic()) < end:
            rss_kb.append(_status_kb(pid, "VmRSS"))
            time.sleep(min(1.0, end - now))
        cpu_used, wall = _cpu_seconds(pid) - cpu_start, time.monotonic() - wall_start
        rss_kb.append(_status_kb(pid, "VmRSS"))
        hwm_kb = _status_kb(pid, "VmHWM")

        for p in pids:
            netns.kill_pids([p], signal.SIGTERM)
        for p in pids:
            _wait_gone(p, 5)
        node_a = json.loads(stats_a.read_text())
        node_b = json.loads(stats_b.read_text())
    finally:
        netns.kill_pids(pids)
        if socat is not None:
            netns.kill_pids([socat.pid])
            with contextlib.suppress(subprocess.TimeoutExpired):
                socat.wait(timeout=5)
        for ns in (ns_a, ns_b):
            with contextlib.suppress(netns.LabError):
                netns.delete_namespace(ns)
        shutil.rmtree(work, ignore_errors=True)

    cpu_percent = 100 * cpu_used / wall
    peak_mb, final_mb = max(rss_kb) / 1024, rss_kb[-1] / 1024

    def media(stats: dict[str, Any]) -> dict[str, Any]:
        return {
            ("serial" if name.startswith("serial:") else name): {
                "sent": m["sent"],
                "received": m["received"],
                "accepted": m["accepted"],
                "duplicates": m["duplicates"],
                "refused": sum(m["refused"].values()),
                "send_errors": m["send_errors"],
            }
            for name, m in stats["media"].items()
        }

    return {
        "target": "heartbeat",
        "seconds": round(wall, 2),
        "rate_hz": 1000 / INTERVAL_MS,
        "media": ["udp:eth0", "udp:eth1", "serial (socat pty pair)"],
        "pid": pid,
        "cpu_percent": round(cpu_percent, 3),
        "cpu_seconds": round(cpu_used, 3),
        "rss_peak_mb": round(peak_mb, 1),
        "rss_final_mb": round(final_mb, 1),
        "rss_hwm_mb": round(hwm_kb / 1024, 1),
        "goal_cpu_percent": GOAL_CPU_PERCENT,
        "goal_rss_mb": GOAL_RSS_MB,
        "cpu_met": cpu_percent < GOAL_CPU_PERCENT,
        "rss_met": max(peak_mb, hwm_kb / 1024) < GOAL_RSS_MB,
        "frames_sent": node_a["sequence"],
        "under_test": media(node_a),
        "peer": media(node_b),
    }


def render(result: dict[str, Any]) -> str:
    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines = [
        f"heartbeat: one process, {result['rate_hz']:g} Hz on {', '.join(result['media'])}, "
        f"{result['seconds']:g} s measured",
        f"  CPU  {result['cpu_percent']:.2f} % of one core ({result['cpu_seconds']:.2f} s)   "
        f"goal < {result['goal_cpu_percent']:g} %: {met(result['cpu_met'])}",
        f"  RSS  peak {result['rss_peak_mb']:.1f} MB, final {result['rss_final_mb']:.1f} MB, "
        f"lifetime high-water {result['rss_hwm_mb']:.1f} MB   goal < {result['goal_rss_mb']:g} MB: "
        f"{met(result['rss_met'])}",
        f"  frames built and sent: {result['frames_sent']}",
        "  medium        node      sent  received  accepted  duplicate  refused  send errors",
    ]
    for who in ("under_test", "peer"):
        for medium, m in result[who].items():
            errors = ", ".join(f"{k} {v}" for k, v in sorted(m["send_errors"].items())) or "-"
            node = "a (test)" if who == "under_test" else "b (peer)"
            lines.append(
                f"  {medium:<12}  {node:<8} {m['sent']:>5} {m['received']:>9} {m['accepted']:>9} "
                f"{m['duplicates']:>10} {m['refused']:>8}  {errors}"
            )
    return "\n".join(lines)
