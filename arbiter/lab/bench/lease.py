"""`lab bench lease`: lease renewals for many instances on one Redis, beside that Redis's raw SET throughput.

Starts its own redis-server on an ephemeral loopback port (stopped by PID whatever happens) and measures, in
one run and with the same client (redis-py asyncio, the same connections and concurrency):
  (a) SET at full speed, (b) lease renewals (`Lease.renew`, the Lua compare-owner script) at full speed, and
  (c) the goal: N instances each renewed once per second, spread evenly over the second, for `seconds`.
Latency in (c) is counted from each renewal's due time to its reply, so time spent queued in the client counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from arbiter.evidence.lease import TOKEN_FILE_NAME, Lease, LeaseStore, TokenFile, connect_url
from arbiter.model import LeaseStatus

GOAL_INSTANCES = 10_000
GOAL_P99_MS = 5.0
DEFAULT_SECONDS = 10.0
FULL_SPEED_SECONDS = 3.0
# Requests in flight at once, one connection each (redis-py asyncio sends one command per connection at a time).
CONNECTIONS = 8
# Most renewals one batched call carries (about 10 fall due per millisecond at 10,000 instances).
BATCH = 100
# The dispatcher wakes once a millisecond and sends everything due by then.
TICK = 0.001
TTL_MS = 3000
TIMEOUT_MS = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_redis(directory: Path, port: int) -> subprocess.Popen[bytes]:
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server not found on PATH (Debian package redis-server)")
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with open(directory / "redis.log", "ab") as log:
        proc = subprocess.Popen([*argv, "--dir", str(directory)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}; see {directory / 'redis.log'}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return proc
        time.sleep(0.02)
    proc.kill()
    proc.wait(5)
    raise RuntimeError("redis-server did not answer PING within 10 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _redis_cpu(client: Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _full_speed(client: Redis, calls: Callable[[int], Awaitable[object]], seconds: float) -> dict[str, float]:
    """`CONNECTIONS` workers calling back to back for `seconds`: operations per second, and the share of a core
    the client process and redis-server each used."""
    done = 0
    end = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = w
        while time.monotonic() < end:
            await calls(i)
            done += 1
            i += CONNECTIONS

    server_cpu = await _redis_cpu(client)
    cpu, started = _cpu_seconds(), time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(CONNECTIONS)))
    took = time.monotonic() - started
    return {
        "ops_per_s": round(done / took),
        "client_cpu": round((_cpu_seconds() - cpu) / took, 2),
        "redis_cpu": round((await _redis_cpu(client) - server_cpu) / took, 2),
    }


async def _paced(
    client: Redis, store: LeaseStore, leases: list[Lease], seconds: float, batched: bool
) -> dict[str, Any]:
    """Instance i is due at t0 + i/N + k for k = 0, 1, …; a renewal is late if it does not come back MINE
    before the instance's next due time. The dispatcher wakes every TICK; batched, the instances due by then go
    out in one `renew_many` call (at most BATCH per call); otherwise one `renew` call each."""
    n = len(leases)
    queue: asyncio.Queue[list[tuple[int, float]] | None] = asyncio.Queue()
    due_to_reply: list[float] = []
    call: list[float] = []
    calls = 0
    late = 0
    lost = 0
    dispatched = 0
    t0 = time.monotonic() + 0.1
    end = t0 + seconds

    async def dispatch() -> None:
        nonlocal dispatched
        k = 0
        while t0 + k / n < end:
            now = time.monotonic()
            due: list[tuple[int, float]] = []
            while k / n + t0 <= now and t0 + k / n < end:
                due.append((k % n, t0 + k / n))
                k += 1
            size = BATCH if batched else 1
            for start in range(0, len(due), size):
                queue.put_nowait(due[start : start + size])
            # A fixed tick, as the agent's renewal loop has: the wait for it counts in due→reply.
            await asyncio.sleep(TICK)
        dispatched = k

    async def worker() -> None:
        nonlocal late, lost, calls
        while (batch := await queue.get()) is not None:
            sent = time.monotonic()
            if batched:
                views = await store.renew_many([leases[i] for i, _ in batch])
            else:
                views = [await leases[batch[0][0]].renew()]
            replied = time.monotonic()
            calls += 1
            call.append(replied - sent)
            for (_, due), view in zip(batch, views, strict=True):
                due_to_reply.append(replied - due)
                if view.status is not LeaseStatus.MINE:
                    lost += 1
                elif replied > due + 1.0:
                    late += 1

    cpu, server_cpu = _cpu_seconds(), await _redis_cpu(client)
    workers = [asyncio.create_task(worker()) for _ in range(CONNECTIONS)]
    await dispatch()
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    took = max(time.monotonic(), end) - t0
    redis_cpu = (await _redis_cpu(client) - server_cpu) / took
    lat = sorted(due_to_reply)
    per_call = sorted(call)
    return {
        "renewals": len(lat),
        "calls": calls,
        "renewals_per_s": round(len(lat) / seconds),
        "p50_ms": round(_percentile(lat, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(lat, 0.99) * 1000, 2),
        "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        "call_p50_ms": round(_percentile(per_call, 0.50) * 1000, 2),
        "call_p99_ms": round(_percentile(per_call, 0.99) * 1000, 2),
        "late": late,
        "not_mine": lost,
        "every_instance_every_second": late == 0 and lost == 0 and len(lat) == dispatched,
        "client_cpu": round((_cpu_seconds() - cpu) / took, 2),
        "redis_cpu": round(redis_cpu, 2),
    }


async def _hold_all(leases: list[Lease]) -> None:
    held = 0
    for start in range(0, len(leases), 500):
        views = await asyncio.gather(*(lease.acquire() for lease in leases[start : start + 500]))
        held += sum(v.status is LeaseStatus.MINE for v in views)
    if held != len(leases):
        raise RuntimeError(f"only {held} of {len(leases)} leases held")


async def _measure(port: int, instances: int, seconds: float, state_dir: Path) -> dict[str, Any]:
    client = connect_url(f"redis://127.0.0.1:{port}/0", timeout_ms=TIMEOUT_MS, connections=CONNECTIONS)
    store = LeaseStore(
        client,
        node="bench",
        cluster="bench",
        ttl_ms=TTL_MS,
        timeout_ms=TIMEOUT_MS,
        tokens=TokenFile(state_dir / TOKEN_FILE_NAME),
    )
    try:
        leases = [store.lease(f"VI_{i}") for i in range(instances)]
        sets = await _full_speed(client, lambda i: client.set(f"bench:set:{i % instances}", "x"), FULL_SPEED_SECONDS)
        await _hold_all(leases)
        renews = await _full_speed(client, lambda i: leases[i % instances].renew(), FULL_SPEED_SECONDS)
        await _hold_all(leases)  # acquire of a lease already held is a renewal: every TTL starts afresh
        per_call = await _paced(client, store, leases, seconds, batched=False)
        await _hold_all(leases)
        batched = await _paced(client, store, leases, seconds, batched=True)
    finally:
        await store.close()
    return {"set": sets, "renew": renews, "paced_per_call": per_call, "paced_batched": batched}


def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = float(args.seconds) if args.seconds else DEFAULT_SECONDS
    instances = int(args.instances)
    if instances < 1 or seconds <= 0:
        raise ValueError(f"--instances and --seconds must be positive (got {instances}, {seconds})")
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-lease-") as tmp:
        port = _free_port()
        proc = _start_redis(Path(tmp), port)
        try:
            figures = asyncio.run(_measure(port, instances, seconds, Path(tmp)))
        finally:
            _stop(proc)
    met = {mode: _meets(instances, figures[f"paced_{mode}"]) for mode in ("per_call", "batched")}
    return {
        "goal": f"{GOAL_INSTANCES} instances renewed each second with p99 < {GOAL_P99_MS:g} ms",
        # The agent renews the instances due in the same tick with one `renew_many` call: judged batched.
        "met": met["batched"],
        "met_per_call": met["per_call"],
        "instances": instances,
        "seconds": seconds,
        "connections": CONNECTIONS,
        "batch_max": BATCH,
        "cpus": os.cpu_count(),
        **figures,
        "renew_vs_set": round(figures["renew"]["ops_per_s"] / max(1, figures["set"]["ops_per_s"]), 2),
        "per_call_ceiling_vs_goal": round(figures["renew"]["ops_per_s"] / instances, 2),
    }


def _meets(instances: int, paced: dict[str, Any]) -> bool:
    return bool(
        instances >= GOAL_INSTANCES
        and paced["every_instance_every_second"]
        and paced["renewals_per_s"] >= instances
        and paced["p99_ms"] < GOAL_P99_MS
    )


def _paced_lines(title: str, p: dict[str, Any], met: bool) -> list[str]:
    return [
        f"  {title}: {p['renewals_per_s']:,} renewals/s in {p['calls']:,} calls",
        f"    due→reply p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms "
        f"(one call alone: p50 {p['call_p50_ms']} ms, p99 {p['call_p99_ms']} ms)",
        f"    CPU: client {p['client_cpu']:.2f}, redis {p['redis_cpu']:.2f} cores; every instance renewed within "
        f"each second: {'yes' if p['every_instance_every_second'] else 'no'} "
        f"({p['late']} later than 1 s, {p['not_mine']} not answered MINE); goal {'met' if met else 'missed'}",
    ]


def render(result: dict[str, Any]) -> str:
    s, r = result["set"], result["renew"]
    return "\n".join(
        [
            f"lease bench: one redis-server on loopback, redis-py asyncio, {result['connections']} connections, "
            f"{result['cpus']} CPUs",
            f"  SET at full speed:    {s['ops_per_s']:>8,} /s   (CPU: client {s['client_cpu']:.2f}, "
            f"redis {s['redis_cpu']:.2f} cores)",
            f"  renew at full speed:  {r['ops_per_s']:>8,} /s   (CPU: client {r['client_cpu']:.2f}, "
            f"redis {r['redis_cpu']:.2f} cores); renew/SET = {result['renew_vs_set']:.2f}; "
            f"{result['per_call_ceiling_vs_goal']:.2f}× the paced rate",
            f"  paced: {result['instances']:,} instances, each renewed once a second (spread evenly) for "
            f"{result['seconds']:g} s",
            *_paced_lines("one call per renewal", result["paced_per_call"], result["met_per_call"]),
            *_paced_lines(
                f"renew_many of the instances due together (≤ {result['batch_max']} a call)",
                result["paced_batched"],
                result["met"],
            ),
            f"  goal: {result['goal']} (as the agent renews: batched): {'met' if result['met'] else 'MISSED'}",
        ]
    )
