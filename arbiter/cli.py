"""The `keepalived-arbiter` command line. Only commands that work are registered (so `--help` never lies)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from arbiter import config as config_mod
from arbiter.model import PolicyConfig
from arbiter.policy import RULES

EXIT_OK = 0
EXIT_INVALID = 2


def _load_checked(path: Path, offline: bool) -> config_mod.Config:
    cfg = config_mod.load(path)
    problems = config_mod.check(cfg, offline=offline)
    if problems:
        raise config_mod.ConfigError(problems)
    return cfg


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = _load_checked(args.config, args.offline)
    except config_mod.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    where = " (offline: node checks skipped)" if args.offline else ""
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
            "",
        ]
    lines.append("rules (first match wins):")
    width = max(len(k) for k in RULES)
    lines += [f"  {rule.ljust(width)}  {text}" for rule, text in RULES.items()]
    return "\n".join(lines)


def cmd_policy_explain(args: argparse.Namespace) -> int:
    try:
        cfg = _load_checked(args.config, offline=True)
    except config_mod.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    print(explain(cfg))
    return EXIT_OK


def cmd_lab(args: argparse.Namespace) -> int:
    # Imported here: the lab pulls in subprocess-heavy modules that the agent's other commands never need.
    from arbiter.lab import cli as lab_cli  # noqa: PLC0415

    return lab_cli.dispatch(args)


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
            default=config_mod.DEFAULT_PATH,
            help=f"arbiter config file (default {config_mod.DEFAULT_PATH})",
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

    from arbiter.lab.cli import add_lab_parser  # noqa: PLC0415 - argparse wiring only, no lab IO

    add_lab_parser(sub, cmd_lab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
