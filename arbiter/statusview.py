"""`keepalived-arbiter status`: ask the agent on its Unix socket, print the cluster at a glance (or the JSON).

The request is one line, `STATUS`, on the same socket the notify hook uses; the agent answers `OK <json>` (the
schema of arbiter.agent.status) or `ERR <reason>`; `pause` and `resume` use the same client (`ask`). This module
is the client side only: it needs no agent code, so an operator in `api.group` can run it without reading the
agent's config.

The text view reads like `crm_mon`: who holds each VIP and why, then each node's side of each instance, the
heartbeat media, the lease, the reference quorum and the last fence, and alert endpoints in trouble.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TIMEOUT = 3.0
MAX_REPLY = 4 * 1024 * 1024


class StatusError(Exception):
    """The agent could not be asked, or refused; the message says which and what to check."""


def fetch(path: Path, timeout: float = TIMEOUT) -> dict[str, Any]:
    return ask(path, "STATUS", timeout)


def ask(path: Path, request: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request line (STATUS, PAUSE, RESUME) and return the JSON object the agent answers with."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise StatusError(f"{path}: no such socket; is the agent running?") from None
        except PermissionError:
            raise StatusError(f"{path}: permission denied (root or api.group only)") from None
        except ConnectionRefusedError:
            raise StatusError(f"{path}: connection refused; the agent is not listening (stale socket?)") from None
        sock.sendall(request.encode("utf-8") + b"\n")
        chunks = []
        size = 0
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_REPLY:
                raise StatusError(f"{path}: reply larger than {MAX_REPLY} bytes")
    except TimeoutError:
        raise StatusError(f"{path}: the agent did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise StatusError(f"{path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    line = b"".join(chunks).decode("utf-8", "replace").rstrip("\n")
    if line.startswith("ERR "):
        raise StatusError(f"agent refused: {line[4:]}")
    if not line.startswith("OK "):
        raise StatusError(f"{path}: unexpected reply {line[:80]!r}")
    try:
        status = json.loads(line[3:])
    except ValueError as exc:
        raise StatusError(f"{path}: reply is not JSON ({exc})") from None
    if not isinstance(status, dict):
        raise StatusError(f"{path}: reply is not a JSON object")
    return status


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 10:
        return f"{seconds:.1f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m{seconds % 60:02.0f}s ago" if seconds >= 60 else f"{seconds:.0f}s ago"
    return f"{seconds / 3600:.0f}h{seconds % 3600 / 60:02.0f}m ago"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _clock(wall: float | None) -> str:
    return "-" if wall is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))


def _yes(value: bool | None, yes: str, no: str, unknown: str = "unknown") -> str:
    return unknown if value is None else (yes if value else no)


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _holders(inst: Mapping[str, Any], node: str, peers: Sequence[Mapping[str, Any]]) -> list[str]:
    holders = [node] if inst["vip_present"] else []
    for peer in peers:
        for report in peer["instances"]:
            if report["name"] == inst["name"] and report["vip_present"] and peer["alive"]:
                holders.append(peer["name"])
    return holders


def render(status: Mapping[str, Any]) -> str:
    node = status["node"]
    peers: list[Mapping[str, Any]] = status["peers"]
    health = "healthy" if status["healthy"] else f"NOT HEALTHY (last decision {_age(status['last_cycle_age_s'])})"
    lines = [
        f"Cluster {status['cluster']}: seen from {node} (pid {status['pid']}), agent up "
        f"{_duration(status['uptime_s'])}, {health}",
        f"Updated {_clock(status['time'])}",
    ]
    paused = status.get("maintenance") or {}
    if paused.get("paused"):
        why = f": {paused['reason']}" if paused.get("reason") else ""
        held = ", ".join(f"{n} {g}" for n, g in (paused.get("gates") or {}).items()) or "-"
        lines += [
            f"*** MAINTENANCE MODE: {node} PAUSED by {paused['by']} since {_clock(paused['at'])}{why} ***",
            f"    gates held ({held}); no fencing, no lease acquired or released: nothing guards this node",
            "    until `keepalived-arbiter resume`. Decisions below are what resume would do.",
        ]
    ref = status["reference"]
    replies = ref.get("replies") or {}
    answered = ", ".join(f"{a} {'ok' if ok else 'silent'}" for a, ok in replies.items()) or "no round yet"
    lines.append(
        f"Reference: {_yes(ref['quorate'], 'quorate', 'NO QUORUM', 'pending')} "
        f"({sum(replies.values())} of {len(replies)} answered, {ref['quorum']} needed: {answered})"
    )
    lines.append("")
    for inst in status["instances"]:
        holders = _holders(inst, node, peers)
        if len(holders) > 1:
            held = "SPLIT BRAIN: held by " + " and ".join(holders)
        elif holders:
            held = f"held by {holders[0]}"
        else:
            held = "held by nobody"
        lines.append(f"Instance {inst['name']}  VIP {', '.join(inst['vips'])} on {inst['interface']}  ({held})")
        lease = inst["lease"]
        lease_text = lease["status"]
        if lease["holder"]:
            lease_text = f"{lease['holder']} token {lease['token']}"
            if lease["ttl_ms"] is not None:
                lease_text += f" ttl {lease['ttl_ms'] / 1000:.1f}s"
        elif lease.get("error"):
            lease_text += f" ({lease['error']})"
        rows = [["node", "keepalived", "VIP", "gate", "lease (as this node reads it)", "rule"]]
        decision = inst["decision"] or {}
        rows.append(
            [
                f"{node} (here)",
                inst["state"],
                "up" if inst["vip_present"] else "-",
                inst["gate"] or "-",
                lease_text,
                decision.get("rule", "-"),
            ]
        )
        for peer in peers:
            report = next((r for r in peer["instances"] if r["name"] == inst["name"]), None)
            if report is None:
                rows.append([peer["name"], "not heard", "?", "?", "?", "?"])
                continue
            stale = "" if peer["alive"] else f" ({_age(peer['last_heard_age_s'])})"
            holder = report["lease_holder"]
            rows.append(
                [
                    peer["name"],
                    report["state"] + stale,
                    "up" if report["vip_present"] else "-",
                    report["gate"] or "-",
                    "-" if holder is None else f"{holder} token {report['lease_token']}",
                    report["rule"] or "-",
                ]
            )
        lines += _table(rows)
        if decision:
            lines.append(f"  decision: {decision['rule']} since {_clock(decision['since'])}: {decision['reason']}")
        if paused.get("paused") and decision:
            would = ", ".join(inst.get("withheld") or []) or "nothing besides the gate"
            lines.append(f"  paused: would set the gate {decision['gate']} and {would}")
        if inst["split_brain"]:
            sb = inst["split_brain"]
            lines.append(f"  SPLIT BRAIN on the wire: ARP for the VIP answered by {', '.join(sb['macs'])}")
        lines.append("")
    for peer in peers:
        if peer["leaving"]:
            state = "stopped cleanly (said leaving)"
        else:
            state = _yes(peer["alive"], "alive", "SILENT", "not heard yet")
        lines.append(f"Peer {peer['name']}: {state}, last heard {_age(peer['last_heard_age_s'])}")
        rows = [
            [m["medium"], _yes(m["up"], "up", "DOWN", "pending"), f"last frame {_age(m['last_seen_age_s'])}"]
            for m in peer["media"]
        ]
        if rows:
            lines += _table(rows, "  heartbeat ")
        if peer["power"]:
            lines.append(f"  power: {peer['power']['state']} (read {_age(peer['power']['age_s'])})")
        fence = peer["fence"]
        if fence:
            lines.append(
                f"  last fence: {fence['outcome'].upper()} at {_clock(fence['at'])} (token {fence['token']}, "
                f"why: {fence['why']})"
            )
            lines.append(f"    {('proof: ' + fence['proof']) if fence['proof'] else fence['reason']}")
        else:
            lines.append("  last fence: none since the agent started")
    # Duplicates are expected (a frame can arrive on an interface twice); the JSON still counts them.
    for medium, link in status["heartbeat"].get("media", {}).items():
        if not link["open"]:
            retry = link["next_retry_in_s"]
            when = "retrying" if retry is None else f"retry in {retry:g}s"
            lines.append(
                f"Heartbeat {medium} DOWN on this node: {link['reason']} ({link['failures']} attempt(s) failed, {when})"
            )
    refused = {m: {k: n for k, n in r.items() if k != "duplicate"} for m, r in status["heartbeat"]["refused"].items()}
    refused = {m: r for m, r in refused.items() if r}
    if refused:
        text = "; ".join(f"{m}: " + ", ".join(f"{k} {n}" for k, n in r.items()) for m, r in refused.items())
        lines.append(f"Heartbeat frames refused: {text}")
    for ep in status["alerts"]:
        if ep["dead"] or ep["queued"] or ep["dropped"]:
            lines.append(
                f"Alerts to {ep['url']}: {'DEAD' if ep['dead'] else 'ok'}, {ep['queued']} queued, {ep['dropped']} "
                f"dropped, last error: {ep['last_error'] or '-'}"
            )
    drift = status.get("drift")
    if drift:
        if drift.get("error"):
            lines.append(f"keepalived.conf check: cannot read: {drift['error']}")
        elif drift.get("findings"):
            lines.append(f"keepalived.conf check: {len(drift['findings'])} finding(s):")
            lines += [f"  {f}" for f in drift["findings"]]
    reload = status["config"].get("reload")
    if reload and not reload["ok"]:
        lines.append(f"Last reload at {_clock(reload['at'])} REFUSED (old config kept): {reload['error']}")
    return "\n".join(lines).rstrip() + "\n"


def main(socket_path: Path, *, as_json: bool, watch: float | None) -> int:
    """Exit 0 with the status printed, 1 when the agent could not be asked (message on stderr)."""
    import sys  # noqa: PLC0415

    while True:
        try:
            status = fetch(socket_path)
        except StatusError as exc:
            print(f"status: {exc}", file=sys.stderr)
            if watch is None:
                return 1
            status = None
        if as_json and watch is not None:
            # One compact object per line: a stream a program can read, no screen to clear.
            if status is not None:
                sys.stdout.write(json.dumps(status, sort_keys=True, separators=(",", ":")) + "\n")
        elif status is not None:
            if watch is not None:
                sys.stdout.write("\x1b[H\x1b[2J")  # clear the screen, as `watch` does
            sys.stdout.write(json.dumps(status, indent=2, sort_keys=True) + "\n" if as_json else render(status))
        sys.stdout.flush()
        if watch is None:
            return 0
        time.sleep(watch)
