"""`keepalived-arbiter lab ...`: run scenarios, keep a lab up, inject faults into it, clean up after crashes."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arbiter.lab.netns import LabError

FAULT_VERBS = (
    "vrrp-cut",
    "vrrp-loss",
    "hb-cut",
    "bridge",
    "isolate",
    "link-down",
    "serial-cut",
    "redis-stop",
    "redis-restart-empty",
    "redis-partition",
    "reference-lost",
    "pause",
    "kill",
    "power-off",
    "power-on",
    "heal",
)
# Verbs that act on exactly one node, named as a positional argument.
NODE_VERBS = ("isolate", "link-down", "redis-partition", "reference-lost", "pause", "kill", "power-off", "power-on")


def add_lab_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    from arbiter.lab.scenarios import SCENARIOS  # noqa: PLC0415 - keeps `--help` of other commands light

    lab = sub.add_parser("lab", help="the lab: real keepalived in network namespaces (root only)")
    verbs = lab.add_subparsers(dest="lab_command", required=True, metavar="VERB")

    run = verbs.add_parser("run", help="run a named scenario and judge it")
    run.add_argument("scenario", choices=sorted(SCENARIOS), metavar="SCENARIO", help=", ".join(SCENARIOS))
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--advert-int", type=float, default=1.0, help="keepalived advert_int in seconds")
    run.add_argument("--vrrp-version", type=int, choices=(2, 3), default=2)
    run.add_argument("--arbiter", action="store_true", help="run the arbiter's agent on every node")
    run.add_argument("--nodes", type=int, choices=(2, 3), default=2)
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--report", type=Path, metavar="DIR", help="write timeline.svg, timeline.txt and result.json here")
    run.set_defaults(func=func)

    compare = verbs.add_parser("compare", help="two reports of `lab run --report` side by side")
    compare.add_argument("dirs", nargs=2, type=Path, metavar="DIR")
    compare.set_defaults(func=func)

    from arbiter.lab.bench import TARGETS  # noqa: PLC0415

    bench = verbs.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument(
        "target",
        nargs="?",
        choices=sorted(TARGETS),
        metavar="TARGET",
        help=f"{', '.join(sorted(TARGETS))} (default: scenarios, keepalived alone beside the arbiter)",
    )
    bench.add_argument(
        "--runs",
        type=int,
        default=None,
        help="scenarios: runs per power-off figure (medians; default 5); transitions: runs per case (default 1); "
        "loss: power-off runs per side (default 3)",
    )
    bench.add_argument("--scenarios", help="transitions: only these scenarios (comma-separated)")
    bench.add_argument("--quick", action="store_true", help="transitions: only the 2-node VRRPv3/0.1 s cases")
    bench.add_argument(
        "--case",
        action="append",
        metavar="CASE",
        help="scenarios: only this case, e.g. 'power-off v3/0.1s' (repeatable; the agent's benches are skipped)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--seconds", type=float, default=None, help="measurement length (default: the goal's)")
    bench.add_argument("--instances", type=int, default=10_000, help="lease: VRRP instances renewed each second")
    bench.set_defaults(func=func)

    chaos = verbs.add_parser("chaos", help="a seeded schedule of overlapping faults, a client's writes, judged whole")
    chaos.add_argument("--seed", type=int, required=True)
    chaos.add_argument("--duration", type=float, default=60.0, help="seconds of chaos, the quiet end included")
    chaos.add_argument("--nodes", type=int, choices=(2, 3), default=2)
    _chaos_common(chaos)
    chaos.add_argument("--advert-int", type=float, default=1.0, help="keepalived advert_int in seconds")
    chaos.add_argument("--vrrp-version", type=int, choices=(2, 3), default=2)
    chaos.add_argument(
        "--witness",
        choices=("redis", "sentinel"),
        default="redis",
        help="the lease witness: one Redis, or a master, a replica and 3 sentinels (adds sentinel-failover)",
    )
    chaos.set_defaults(func=func)

    replay = verbs.add_parser("replay", help="run a saved chaos schedule again, exactly")
    replay.add_argument("file", type=Path, metavar="FILE")
    _chaos_common(replay)
    replay.set_defaults(func=func)

    soak = verbs.add_parser("soak", help="many chaos schedules, the arbiter beside keepalived alone: the table")
    soak.add_argument("--count", type=int, default=100, help="schedules (default 100)")
    soak.add_argument("--duration", type=float, default=60.0, help="seconds per schedule (default 60)")
    soak.add_argument("--first-seed", type=int, default=1)
    soak.add_argument("--shrink", type=int, default=8, metavar="RUNS", help="per violation, at most this many runs")
    soak.add_argument("--save", type=Path, default=None, metavar="DIR", help="results and schedules (lab-report/soak)")
    soak.add_argument("--json", action="store_true", help="print one JSON object")
    soak.set_defaults(func=func)

    verbs.add_parser("list", help="list the scenarios").set_defaults(func=func)
    verbs.add_parser("clean", help="remove namespaces and processes left by crashed labs").set_defaults(func=func)

    up = verbs.add_parser("up", help="build a lab and keep it until Ctrl-C; prints its name")
    up.add_argument("--nodes", type=int, choices=(2, 3), default=2)
    up.add_argument("--advert-int", type=float, default=1.0)
    up.add_argument("--vrrp-version", type=int, choices=(2, 3), default=2)
    up.add_argument("--arbiter", action="store_true", help="run the arbiter's agent on every node")
    up.set_defaults(func=func)

    status = verbs.add_parser("status", help="who holds each VIP in a running lab")
    status.add_argument("--lab", required=True, help="the lab's name printed by `lab up`")
    status.set_defaults(func=func)

    run_in = verbs.add_parser(
        "exec", help="run a command on a lab node (its namespace; its arbiter.toml as the default config)"
    )
    run_in.add_argument("--lab", required=True, help="the lab's name printed by `lab up`")
    run_in.add_argument("node", help="lab node: a, b or c")
    run_in.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    run_in.set_defaults(func=func)

    for verb in FAULT_VERBS:
        p = verbs.add_parser(verb, help=f"fault: {verb} in a running lab" if verb != "heal" else "undo faults")
        p.add_argument("--lab", required=True, help="the lab's name printed by `lab up`")
        if verb in ("vrrp-cut", "vrrp-loss", "hb-cut", "serial-cut"):
            p.add_argument("node", nargs="?", help="one node (default: every node)")
        if verb == "vrrp-cut":
            p.add_argument("--direction", choices=("in", "out", "both"), default="both")
        if verb == "vrrp-loss":
            p.add_argument("--percent", type=int, required=True, help="share of incoming VRRP dropped, 1 to 100")
        if verb == "hb-cut":
            p.add_argument(
                "--medium",
                choices=("ethernet", "lan", "hb"),
                default="ethernet",
                help="ethernet: VRRP and every Ethernet heartbeat; lan, hb: only the UDP heartbeat on eth0, eth1",
            )
        if verb == "bridge":
            p.add_argument("node", help="one node of a 3-node lab")
            p.add_argument("peer", help="the node it is cut from (each still reaches the third)")
        if verb in NODE_VERBS:
            p.add_argument("node")
        if verb == "link-down":
            p.add_argument("link", nargs="?", choices=("lan", "hb", "mgmt"), default="lan")
        if verb in ("pause", "kill"):
            p.add_argument("process", choices=("keepalived", "sshd", "agent"))
        p.set_defaults(func=func)


def _chaos_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arbiter", action="store_true", help="run the arbiter's agent on every node")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", type=Path, metavar="DIR", help="write timeline.svg, the logs and result.json here")
    p.add_argument(
        "--shrink", type=int, default=8, metavar="RUNS", help="on a violation, at most this many runs to shrink (0: no)"
    )
    p.add_argument("--save", type=Path, default=None, metavar="DIR", help="where schedules go (lab-report/chaos)")


def dispatch(args: argparse.Namespace) -> int:
    try:
        return _dispatch(args)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    from arbiter.lab import lab as lab_mod  # noqa: PLC0415
    from arbiter.lab import scenarios, topology  # noqa: PLC0415

    verb = args.lab_command
    if verb == "list":
        for s in scenarios.SCENARIOS.values():
            print(f"{s.name:24} {s.summary}")
        return 0
    if verb == "compare":
        from arbiter.lab.compare import compare  # noqa: PLC0415

        print(compare(args.dirs[0], args.dirs[1]))
        return 0
    lab_mod.require_root()
    if verb == "bench":
        from arbiter.lab import bench  # noqa: PLC0415

        target = bench.load(args.target or bench.DEFAULT)
        result = target.run(args)
        print(json.dumps(result) if args.json else target.render(result))
        return 0
    if verb == "clean":
        removed = lab_mod.clean()
        print(f"removed {len(removed)} namespace(s)" + (f": {' '.join(removed)}" if removed else ""))
        return 0
    if verb == "run":
        result = scenarios.run_scenario(
            args.scenario,
            seed=args.seed,
            advert_int=args.advert_int,
            vrrp_version=args.vrrp_version,
            arbiter=args.arbiter,
            report_dir=args.report,
            nodes=args.nodes,
        )
        if args.report is not None:
            (args.report / "result.json").write_text(json.dumps(result, indent=1) + "\n")
        if args.json:
            print(json.dumps(result))
        else:
            print(format_result(result))
        return 0
    if verb in ("chaos", "replay"):
        return _chaos(args)
    if verb == "soak":
        from arbiter.lab.chaos import command  # noqa: PLC0415

        if not args.json:
            print(command.SOAK_HEADER, flush=True)
        found = command.soak(
            args.count,
            args.first_seed,
            args.duration,
            args.save or command.SOAK_DIR,
            args.shrink,
            progress=None if args.json else lambda line: print(line, flush=True),
        )
        print(json.dumps(found) if args.json else command.render_soak(found))
        return 0 if found["totals"]["goal"] == "met" else 1
    if verb == "up":
        spec = topology.LabSpec(
            nodes=args.nodes, advert_int=args.advert_int, vrrp_version=args.vrrp_version, arbiter=args.arbiter
        )
        # Ctrl-C tears the lab down, also when started from a background job (whose shell ignores SIGINT for it).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with lab_mod.Lab(spec) as lab:
            print(f"lab {lab.plan.prefix} is up (state in {lab.plan.dir}); Ctrl-C tears it down", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    plan = topology.LabPlan.load(Path(topology.LAB_ROOT, args.lab))
    if verb == "exec":
        return _exec(plan, args.node, args.argv)
    if verb == "status":
        for vip in plan.vips:
            holders = [n.name for n in plan.nodes if _holds(n.netns, vip)]
            print(f"{vip}: {' '.join(holders) or 'nobody'}")
        return 0
    return _fault(plan, args)


def _chaos(args: argparse.Namespace) -> int:
    from arbiter.lab.chaos import command  # noqa: PLC0415
    from arbiter.lab.chaos.schedule import Schedule, ScheduleError  # noqa: PLC0415

    try:
        if args.lab_command == "replay":
            schedule = Schedule.from_json(args.file.read_text())
        else:
            schedule = command.drawn(
                args.seed, args.duration, args.nodes, args.vrrp_version, args.advert_int, args.witness
            )
    except (OSError, ScheduleError) as exc:
        raise LabError(str(exc)) from None
    result = command.play(
        schedule,
        arbiter=args.arbiter,
        report=args.report,
        save_dir=args.save or command.DEFAULT_DIR,
        budget=args.shrink,
        replay_of=args.file if args.lab_command == "replay" else None,
    )
    print(json.dumps(result) if args.json else command.render(result))
    return 0


def _exec(plan: Any, node_name: str, argv: list[str]) -> int:
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    from arbiter.cli import CONFIG_ENV  # noqa: PLC0415
    from arbiter.lab import agentconf  # noqa: PLC0415
    from arbiter.lab.netns import in_ns  # noqa: PLC0415

    node = plan.node(node_name)
    argv = argv[1:] if argv[:1] == ["--"] else argv
    if not argv:
        raise LabError("exec: give the command after --, e.g. `-- keepalived-arbiter fence node-b status`")
    if argv[0] == "keepalived-arbiter":
        argv = [str(Path(plan.python).with_name("keepalived-arbiter")), *argv[1:]]  # this venv's, not PATH's
    env = {**os.environ, CONFIG_ENV: str(agentconf.config_path(node))}
    return subprocess.run(in_ns(node.netns, argv), env=env, check=False).returncode


def _holds(ns: str, vip: str) -> bool:
    from arbiter.lab.netns import run  # noqa: PLC0415

    out = run(["ip", "-n", ns, "-o", "-4", "addr", "show"], check=False).stdout
    return f" {vip}/" in out


def _fault(plan: Any, args: argparse.Namespace) -> int:
    from arbiter.lab.bmc import Bmc  # noqa: PLC0415
    from arbiter.lab.events import Timeline  # noqa: PLC0415
    from arbiter.lab.faults import Faults, heal_all  # noqa: PLC0415
    from arbiter.lab.lab import bmc_spec  # noqa: PLC0415

    timeline = Timeline()
    faults = Faults(plan, timeline)
    verb = args.lab_command
    if verb == "heal":
        print("\n".join(heal_all(plan, timeline)) or "nothing to undo")
        return 0
    if verb in ("power-off", "power-on"):
        bmc = Bmc(bmc_spec(plan, args.node))
        done = bmc.ipmitool("chassis", "power", verb.split("-")[1], from_netns=plan.witness_ns)
        print(done.stdout.strip() or done.stderr.strip())
        return 0 if done.returncode == 0 else 1
    actions: dict[str, Callable[[], object]] = {
        "vrrp-cut": lambda: faults.vrrp_cut(getattr(args, "node", None), args.direction),
        "vrrp-loss": lambda: faults.vrrp_loss(args.node, args.percent),
        "hb-cut": lambda: faults.heartbeat_cut(args.node, args.medium),
        "bridge": lambda: faults.bridge(args.node, args.peer),
        "isolate": lambda: faults.isolate(args.node),
        "link-down": lambda: faults.link_down(args.node, args.link),
        "serial-cut": lambda: faults.serial_cut(args.node),
        "redis-stop": faults.redis_stop,
        "redis-restart-empty": faults.redis_restart_empty,
        "redis-partition": lambda: faults.redis_partition(args.node),
        "reference-lost": lambda: faults.reference_lost(args.node),
        "pause": lambda: faults.pause(args.node, args.process),
        "kill": lambda: faults.kill(args.node, args.process),
    }
    actions[verb]()
    print(f"{verb} done at {time.strftime('%H:%M:%S')}; `keepalived-arbiter lab heal --lab {plan.prefix}` undoes it")
    return 0


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"scenario {result['scenario']} (arbiter: {'yes' if result['arbiter'] else 'no'}, "
        f"VRRPv{result['vrrp_version']}, advert_int {result['advert_int']:g}s, seed {result['seed']})",
        "",
        "timeline:",
    ]
    for e in result["timeline"]:
        lines.append(f"  {e['t']:8.3f}s  {e['kind']:11} {e['node'] or '-':3} {e['detail']}")
    lines += [
        "",
        f"dual_master_ms  {result['dual_master_ms']}",
        f"no_master_ms    {result['no_master_ms']}",
        f"failover_ms     {result['failover_ms']}",
        f"settled_ms      {result.get('settled_ms')}",
        f"arp_flaps       {result['arp_flaps']}",
        f"vip_moves       {result.get('vip_moves')}",
        f"fences          {result.get('fences')}",
        f"holders at end  {' '.join(result['holders_at_end']) or 'nobody'}",
    ]
    if result["arbiter"]:
        keep = result.get("fence_before_keep")
        lines += [
            f"released by     {result.get('released_by') or '-'}",
            f"fence_ms        {result.get('fence_ms')}",
            "fence before keep " + ("-" if keep is None else "yes" if keep else "NO"),
        ]
    for p in result.get("phases", []):
        lines.append(
            f"  phase {p['phase']:22} {p['from_s']:8.3f}s  dual {p['dual_master_ms']} ms, moves {p['vip_moves']}, "
            f"no master {p['no_master_ms']} ms, flaps {p['arp_flaps']}, fences {p['fences']}"
        )
    lines += ["violations      " + ("; ".join(result["violations"]) or "none")]
    if "report" in result:
        lines.append("report          " + " ".join(result["report"]))
    return "\n".join(lines)
