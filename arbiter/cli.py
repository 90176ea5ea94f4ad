"""The `keepalived-arbiter` command line. Only commands that work are registered (so `--help` never lies)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from arbiter import config as config_mod
from arbiter.model import PolicyConfig
from arbiter.policy import RULES, handover_bound

# Default for -c/--config when set (the lab sets it for `lab exec`; a node with two configs can too).
CONFIG_ENV = "KEEPALIVED_ARBITER_CONFIG"
EXIT_OK = 0
EXIT_INVALID = 2


def _load_checked(path: Path, offline: bool) -> config_mod.Config | None:
    """The config, checked; None after printing every problem (one line each, naming its key) to stderr.
    Media missing right now (`media_warnings`) and fence levels that cannot read power (`fencing_warnings`) are
    printed as warnings and do not make the config invalid."""
    try:
        cfg = config_mod.load(path)
        problems = config_mod.check(cfg, offline=offline)
    except config_mod.ConfigError as exc:
        problems = exc.problems
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return None
    for warning in config_mod.fencing_warnings(cfg):
        print(f"warning: {warning}", file=sys.stderr)
    if not offline:
        for warning in config_mod.media_warnings(cfg):
            print(f"warning: {warning}", file=sys.stderr)
    return cfg


def close_gates(paths: Sequence[Path]) -> None:
    """An agent that cannot run leaves every gate it knows of closed (fail closed): keepalived alone, with a gate
    left open by `init_file 0` or an earlier run, would hold the VIP beside the master. Best effort, each alone."""
    from arbiter.agent.gate import GateFile  # noqa: PLC0415 - only `run` writes gates
    from arbiter.model import Gate  # noqa: PLC0415

    for path in paths:
        try:
            GateFile(path).write(Gate.CLOSED)
        except OSError as exc:
            print(f"keepalived-arbiter run: {exc}", file=sys.stderr)
        else:
            print(f"keepalived-arbiter run: gate {path} closed", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_checked(args.config, args.offline)
    if cfg is None:
        return EXIT_INVALID
    where = " (offline: node checks skipped)" if args.offline else ""
    if blind := len(config_mod.fencing_warnings(cfg)):
        where += f" ({blind} peer(s) fenced only over SSH: see the warning)"
    if not args.offline and (missing := len(config_mod.media_warnings(cfg))):
        where += f" ({missing} heartbeat medium(s) missing now: the agent runs with them down)"
    print(
        f"{args.config}: valid{where}; node {cfg.node.name}, {len(cfg.instance)} instance(s), {len(cfg.peer)} peer(s)"
    )
    return EXIT_OK


def explain(cfg: config_mod.Config) -> str:
    """The rules table with this config's timings filled in."""
    lines: list[str] = []
    for inst in cfg.instance:
        pc = PolicyConfig.from_config(cfg, inst.name)
        fenceable = ", ".join(sorted(pc.fenceable)) or "none (lease only)"
        lines += [
            f"instance {inst.name} on {inst.interface} (VRRPv{inst.vrrp_version}, advert {pc.advert_int:g}s, "
            f"priority {inst.priority}{', nopreempt' if pc.nopreempt else ''})",
            f"  keepalived master-down interval: {pc.master_down:.3f}s",
            f"  VRRP path counted cut: adverts missing {pc.cut_after:.3f}s while a heartbeat says MASTER",
            f"  lease: ttl {pc.ttl:g}s, renew every {cfg.lease.renew_ms / 1000:g}s, "
            f"self-demotion {pc.ttl - pc.safety:g}s after the last renewal was sent",
            f"  heartbeat: every {pc.cycle:g}s, peer silent after {pc.deadtime:g}s",
            f"  fencing: peers with fence levels: {fenceable}; race delay {pc.fence_delay:g}s; "
            f"no-lease fence after {pc.ttl + pc.fence_delay:g}s of silence; on failure: {pc.on_fence_failure}",
            f"  preemption handover: {'off (nopreempt)' if pc.nopreempt else 'on'}; a holder yields to a returning "
            f"higher-priority node for at most {handover_bound(pc):.3f}s (preempt_delay {pc.preempt_delay:g}s)",
            "",
        ]
    lines.append("rules (first match wins):")
    width = max(len(k) for k in RULES)
    lines += [f"  {rule.ljust(width)}  {text}" for rule, text in RULES.items()]
    return "\n".join(lines)


def cmd_policy_explain(args: argparse.Namespace) -> int:
    cfg = _load_checked(args.config, offline=True)
    if cfg is None:
        return EXIT_INVALID
    print(explain(cfg))
    return EXIT_OK


def cmd_check_keepalived(args: argparse.Namespace) -> int:
    """Lint one node's keepalived.conf, or a pair, for split-brain causes: exit 0 clean, 1 findings, 2 unreadable."""
    from arbiter.kconf import lint, parser  # noqa: PLC0415 - only this command parses keepalived.conf

    try:
        arbiter = config_mod.load(args.config) if args.config is not None else None
        node_a = parser.load(args.node_a)
        node_b = parser.load(args.node_b) if args.node_b is not None else None
    except config_mod.ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}" if problem.path else problem, file=sys.stderr)
        return EXIT_INVALID
    except parser.KconfError as exc:
        print(f"check-keepalived: {exc}", file=sys.stderr)
        return EXIT_INVALID
    found = lint.lint(node_a, node_b, arbiter, arbiter_source=args.config)
    if args.json:
        print(lint.findings_json(found))
    elif found:
        print(lint.format_findings(found))
        errors = sum(f.severity == "error" for f in found)
        print(f"{errors} error(s), {len(found) - errors} warning(s)", file=sys.stderr)
    else:
        files = ", ".join(str(p) for p in (args.node_a, args.node_b) if p is not None)
        print(f"{files}: no findings", file=sys.stderr)
    return 1 if found else EXIT_OK


def cmd_lab(args: argparse.Namespace) -> int:
    # Imported here: the lab pulls in subprocess-heavy modules that the agent's other commands never need.
    from arbiter.lab import cli as lab_cli  # noqa: PLC0415

    return lab_cli.dispatch(args)


def cmd_run(args: argparse.Namespace) -> int:
    """The agent. Decisions go to stdout as JSON lines, the libraries' own messages to stderr."""
    import asyncio  # noqa: PLC0415 - only the agent and `fence` run an event loop
    import signal  # noqa: PLC0415

    cfg = _load_checked(args.config, offline=False)
    if cfg is None:
        close_gates(config_mod.track_files_of(args.config))
        return EXIT_INVALID
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)

    from arbiter.agent.daemon import Agent  # noqa: PLC0415

    async def main() -> None:
        agent = Agent.from_config(cfg, config_path=args.config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        loop.add_signal_handler(signal.SIGHUP, agent.request_reload)
        # Stop for a restart (gates, leases, VIPs kept for the next agent) under a supervisor other than systemd.
        loop.add_signal_handler(signal.SIGUSR2, agent.stop_for_restart)
        await agent.run()

    try:
        asyncio.run(main())
    except Exception as exc:  # a start-up failure (key file, token file, socket): one line, not a traceback
        print(f"keepalived-arbiter run: {type(exc).__name__}: {exc}", file=sys.stderr)
        close_gates([inst.track_file for inst in cfg.instance])
        return 1
    return EXIT_OK


def _agent_socket(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    # The agent's socket as configured; an operator in api.group may not be able to read the config (0600),
    # and then the default path is the best guess (say --socket otherwise).
    try:
        return config_mod.load(args.config).api.socket
    except config_mod.ConfigError as exc:
        path = config_mod.ApiConfig().socket
        first = exc.problems[0] if exc.problems else exc
        print(f"{args.command}: {args.config}: {first}; asking the default socket {path}", file=sys.stderr)
        return path


def cmd_status(args: argparse.Namespace) -> int:
    from arbiter import statusview  # noqa: PLC0415

    path = _agent_socket(args)
    if args.watch is not None and args.watch <= 0:
        print("status: --watch needs a positive number of seconds", file=sys.stderr)
        return EXIT_INVALID
    try:
        return statusview.main(path, as_json=args.json, watch=args.watch)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_maintenance(args: argparse.Namespace) -> int:
    """`pause` / `resume`: exit 0 when the agent is (now) paused / running, 1 when it cannot be asked or refused."""
    import getpass  # noqa: PLC0415
    import json  # noqa: PLC0415

    from arbiter import statusview  # noqa: PLC0415

    who = os.environ.get("SUDO_USER") or getpass.getuser()
    words = [args.command.upper(), "".join(c if c.isprintable() and not c.isspace() else "_" for c in who)]
    if getattr(args, "reason", None) is not None:
        reason = " ".join(args.reason.split())  # the socket protocol separates words by single spaces
        if not reason:
            print(f"{args.command}: --reason is empty", file=sys.stderr)
            return EXIT_INVALID
        words.append(reason)
    try:
        answer = statusview.ask(_agent_socket(args), " ".join(words))
    except statusview.StatusError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, sort_keys=True))
    else:
        print(answer.get("message", answer))
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    """Print this node's fencing token for INSTANCE (exit 0) or, when it has none to give, the reason (exit 1)."""
    import json  # noqa: PLC0415

    from arbiter import statusview  # noqa: PLC0415

    try:
        answer = statusview.ask(_agent_socket(args), f"TOKEN {args.instance}")
    except statusview.StatusError as exc:
        print(f"token: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, sort_keys=True))
    elif answer.get("token") is not None:
        print(answer["token"])
    if answer.get("token") is None:
        if not args.json:
            print(f"token: no token: {answer.get('reason')}", file=sys.stderr)
        return 1
    return EXIT_OK


FENCE_ACTIONS = ("status", "check", "off", "on", "confirm-off")


def _confirm_off(args: argparse.Namespace) -> int:
    """`fence NODE confirm-off --yes`: tell the running agent, over its socket, that NODE is off (an operator's
    word, as Pacemaker's `stonith_admin --confirm`); the agent records who and when, and refuses a node it hears."""
    import getpass  # noqa: PLC0415

    from arbiter import statusview  # noqa: PLC0415

    who = os.environ.get("SUDO_USER") or getpass.getuser()
    who = "".join(c if c.isprintable() and not c.isspace() else "_" for c in who)
    try:
        answer = statusview.ask(_agent_socket(args), f"CONFIRM-OFF {who} {args.node}")
    except statusview.StatusError as exc:
        print(f"fence: {exc}", file=sys.stderr)
        return 1
    print(answer.get("message", answer))
    return EXIT_OK


def cmd_fence(args: argparse.Namespace) -> int:
    """fence-agents' vocabulary and exit codes: status exits 0 on, 2 off, 1 unknown; other actions 0 or 1."""
    import asyncio  # noqa: PLC0415 - only this command runs an event loop

    from arbiter.model import Power  # noqa: PLC0415
    from fencers.base import FenceError  # noqa: PLC0415
    from fencers.orchestration import FenceAttempt, Orchestrator  # noqa: PLC0415

    if args.action in ("off", "on") and not args.yes:
        print(f"fence: refusing to power {args.action} {args.node} without --yes", file=sys.stderr)
        return 1
    if args.action == "confirm-off":
        if not args.yes:
            print(
                f"fence: confirm-off tells the agent {args.node} is powered off although no device proved it; "
                "check it by hand first (a wrong confirmation can cause a split brain), then add --yes",
                file=sys.stderr,
            )
            return 1
        return _confirm_off(args)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1

    fenceable = [peer.name for peer in cfg.peer if peer.fence]
    if args.node not in fenceable:
        print(f"fence: unknown node {args.node!r}; fenceable: {', '.join(fenceable) or 'none'}", file=sys.stderr)
        return 1

    # This command prints every attempt and the outcome itself; the libraries' own log lines would repeat them.
    logging.getLogger("fencers.orchestration").setLevel(logging.CRITICAL)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)

    def show(attempt: FenceAttempt) -> None:
        proof = f"; proof: {attempt.proof}" if attempt.proof else ""
        detail = f"; {attempt.detail}" if attempt.detail and attempt.result != "off" else ""
        print(f"  level {attempt.level} {attempt.device}: {attempt.result} in {attempt.duration:.3f}s{proof}{detail}")

    try:
        orch = Orchestrator.from_config(cfg, drawn_delay_ms=0, on_event=show)
        orch.race_delay = 0.0  # an operator's command is not a race between partitioned nodes
        if args.action == "status":
            power, device = asyncio.run(orch.status(args.node))
            print(f"{args.node}: {power.value.upper()}" + (f" (read from {device})" if device else ""))
            return {Power.ON: 0, Power.OFF: 2}.get(power, 1)
        if args.action == "check":
            results = asyncio.run(orch.check(args.node))
            if not results:
                print(f"{args.node}: no fence level configured", file=sys.stderr)
                return 1
            for level, fencer, ok, said in results:
                said_alone = said.removeprefix(f"{fencer.device}: ")
                print(f"level {level} {fencer.device}: {'ok' if ok else 'FAILED'}: {said_alone}")
            return 0 if all(ok for _, _, ok, _ in results) else 1
        if args.action == "on":
            ok, detail = asyncio.run(orch.power_on(args.node))
            print(f"{args.node}: {detail}")
            return 0 if ok else 1
        print(f"fencing {args.node} (operator, no lease token):")
        report = asyncio.run(orch.fence(args.node, token=None, why="operator command"))
        print(report.reason)
        return 0 if report.off else 1
    except FenceError as exc:
        print(f"fence: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keepalived-arbiter",
        description="Quorum and fencing for keepalived: keeps two VRRP nodes out of split-brain.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            type=Path,
            default=Path(os.environ.get(CONFIG_ENV) or config_mod.DEFAULT_PATH),
            help=f"arbiter config file (default ${CONFIG_ENV} or {config_mod.DEFAULT_PATH})",
        )

    check = sub.add_parser("check-config", help="validate a config file (exit 0 valid, 2 invalid)")
    with_config(check)
    check.add_argument(
        "--offline",
        action="store_true",
        help="skip checks that only hold on the node itself (secret files, interfaces)",
    )
    check.set_defaults(func=cmd_check_config)

    policy = sub.add_parser("policy", help="the arbitration policy")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")
    exp = policy_sub.add_parser("explain", help="print the rules with this config's timings")
    with_config(exp)
    exp.set_defaults(func=cmd_policy_explain)

    agent = sub.add_parser("run", help="run the agent (the per-node daemon) in the foreground")
    with_config(agent)
    agent.set_defaults(func=cmd_run)

    status = sub.add_parser(
        "status",
        help="the cluster as this node's agent sees it (exit 1 if the agent cannot be asked)",
        description="Asks the running agent over its Unix socket. --json prints the documented schema "
        "(keepalived-arbiter.status/1); --watch repeats every SECONDS (with --json: one object per line).",
    )
    with_config(status)
    status.add_argument("--socket", type=Path, help="the agent's socket (default: api.socket from the config)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--watch", type=float, nargs="?", const=2.0, metavar="SECONDS", help="refresh every SECONDS (default 2)"
    )
    status.set_defaults(func=cmd_status)

    for verb, text in (
        ("pause", "maintenance mode: hold every gate as it is, no fencing, no lease changes (survives a restart)"),
        ("resume", "end maintenance mode: the policy acts again"),
    ):
        p = sub.add_parser(
            verb,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. Asks the running agent over its Unix socket (root or the "
            "agent's user only); exits 1 when it cannot. Pausing a paused agent or resuming a running one "
            "changes nothing and says so. Pause every node before an upgrade.",
        )
        with_config(p)
        p.add_argument("--socket", type=Path, help="the agent's socket (default: api.socket from the config)")
        p.add_argument("--json", action="store_true", help="print the agent's answer as JSON")
        if verb == "pause":
            p.add_argument("--reason", metavar="TEXT", help="why (shown in status and the alert)")
        p.set_defaults(func=cmd_maintenance)

    token = sub.add_parser(
        "token",
        help="this node's fencing token for INSTANCE (exit 0), or why there is none (exit 1)",
        description="Asks the running agent over its Unix socket. A token is given only while this node holds "
        "the lease, valid past its safety margin, and the instance's gate is open; a service writing on the VIP "
        "carries it into its store, which refuses tokens lower than the highest it has seen.",
    )
    with_config(token)
    token.add_argument("instance", metavar="INSTANCE", help="an [[instance]] name from the config")
    token.add_argument("--socket", type=Path, help="the agent's socket (default: api.socket from the config)")
    token.add_argument("--json", action="store_true", help="the agent's whole answer as JSON")
    token.set_defaults(func=cmd_token)

    fence = sub.add_parser(
        "fence",
        help="STONITH a peer through its configured levels (status exits 0 on, 2 off, 1 unknown)",
        description="status: power as the first device that can read it says; check: log in to every device "
        "without touching power; off/on: power the node off (confirmed) or on (need --yes); confirm-off: tell "
        "the running agent that a silent node is off when no device can prove it (needs --yes; recorded with "
        "who and when; ends the closed gate a failed fence holds).",
    )
    with_config(fence)
    fence.add_argument("node", metavar="NODE", help="a [[peer]] name from the config")
    fence.add_argument("action", choices=FENCE_ACTIONS, metavar="ACTION", help=" | ".join(FENCE_ACTIONS))
    fence.add_argument("--yes", action="store_true", help="confirm off/on/confirm-off")
    fence.add_argument("--socket", type=Path, help="the agent's socket, for confirm-off (default: api.socket)")
    fence.set_defaults(func=cmd_fence)

    kcheck = sub.add_parser(
        "check-keepalived",
        help="lint keepalived.conf (one node or a pair) for split-brain causes (exit 0 clean, 1 findings, 2 unusable)",
    )
    kcheck.add_argument("node_a", type=Path, metavar="NODE_A.conf", help="this node's keepalived.conf")
    kcheck.add_argument("node_b", type=Path, nargs="?", metavar="NODE_B.conf", help="the peer's, to compare")
    kcheck.add_argument("-c", "--config", type=Path, help="node A's arbiter config: check the arbiter's wiring too")
    kcheck.add_argument("--json", action="store_true", help="print the findings as a JSON list")
    kcheck.set_defaults(func=cmd_check_keepalived)

    from arbiter.lab.cli import add_lab_parser  # noqa: PLC0415 - argparse wiring only, no lab IO

    add_lab_parser(sub, cmd_lab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
