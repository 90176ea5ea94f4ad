"""`lab bench hook`: wall time of the notify hook next to `-c pass` of the interpreter it runs on.

The hook is run exactly as keepalived runs it: its console script (`keepalived-arbiter-notify`, whose shebang is
this venv's python), with keepalived's four arguments, talking to a live agent socket (the agent's own
`NotifyServer`, answering OK). No shell or wrapper in between. The baseline is the same interpreter, same
environment, `-c pass`. Runs alternate so both see the same machine state; medians of `rounds` each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from arbiter.agent.notify import NotifyServer
from arbiter.model import VrrpState

GOAL_RATIO = 1.2
DEFAULT_ROUNDS = 200


def _serve(path: Path, ready: threading.Event, stop: threading.Event, seen: list[int]) -> None:
    async def main() -> None:
        def on_event(
            kind: str, name: str, state: VrrpState, priority: int | None, at: float, sent: float | None
        ) -> None:
            seen.append(1)

        server = NotifyServer(path, on_event=on_event)
        await server.start()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.stop()

    asyncio.run(main())


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    quiet = subprocess.DEVNULL
    subprocess.run(argv, env=env, stdin=quiet, stdout=quiet, stderr=quiet, check=False)
    return (time.perf_counter() - started) * 1000


def measure(rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    bindir = Path(sys.executable).parent
    hook = bindir / "keepalived-arbiter-notify"
    shebang = hook.read_text().splitlines()[0].removeprefix("#!").strip()
    with tempfile.TemporaryDirectory(prefix="kahook") as tmp:
        sock = Path(tmp, "agent.sock")
        ready, stop = threading.Event(), threading.Event()
        seen: list[int] = []
        server = threading.Thread(target=_serve, args=(sock, ready, stop, seen), daemon=True)
        server.start()
        if not ready.wait(10):
            raise RuntimeError("notify server did not start")
        env = {"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "KEEPALIVED_ARBITER_SOCKET": str(sock)}
        hook_argv = [str(hook), "INSTANCE", "VI_1", "MASTER", "150"]
        pass_argv = [shebang, "-c", "pass"]
        for _ in range(5):  # warm the page cache and .pyc files
            _time(hook_argv, env)
            _time(pass_argv, env)
        delivered_before = len(seen)
        hook_ms, pass_ms = [], []
        for i in range(rounds):
            first, second = (hook_argv, pass_argv) if i % 2 == 0 else (pass_argv, hook_argv)
            a, b = _time(first, env), _time(second, env)
            hook_ms.append(a if first is hook_argv else b)
            pass_ms.append(b if first is hook_argv else a)
        delivered = len(seen) - delivered_before
        stop.set()
        server.join(5)
    hook_med, pass_med = statistics.median(hook_ms), statistics.median(pass_ms)
    ratio = hook_med / pass_med
    return {
        "target": "hook",
        "rounds": rounds,
        "interpreter": shebang,
        "hook_ms_median": round(hook_med, 2),
        "hook_ms_p90": round(statistics.quantiles(hook_ms, n=10)[-1], 2),
        "pass_ms_median": round(pass_med, 2),
        "pass_ms_p90": round(statistics.quantiles(pass_ms, n=10)[-1], 2),
        "ratio": round(ratio, 3),
        "goal_ratio": GOAL_RATIO,
        "met": ratio <= GOAL_RATIO,
        "delivered": delivered,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds = getattr(args, "rounds", None) or DEFAULT_ROUNDS
    return measure(rounds)


def render(result: dict[str, Any]) -> str:
    verdict = "met" if result["met"] else "missed"
    return "\n".join(
        [
            f"hook: {result['rounds']} runs each, alternating, against a live agent socket "
            f"({result['delivered']} events delivered)",
            f"  keepalived-arbiter-notify   median {result['hook_ms_median']:.2f} ms   "
            f"p90 {result['hook_ms_p90']:.2f} ms",
            f"  {result['interpreter']} -c pass   median {result['pass_ms_median']:.2f} ms   "
            f"p90 {result['pass_ms_p90']:.2f} ms",
            f"  ratio {result['ratio']:.3f}   goal ≤ {result['goal_ratio']}: {verdict}",
        ]
    )
