"""The causes of split-brain that a keepalived.conf (or a pair of them) shows before anything runs.

Two nodes' VRRP instances must agree on what puts their adverts in the same conversation (VRID, advert
interval, version, authentication, unicast addresses, VIPs); one node must not reuse a VRID on an interface;
and the arbiter's wiring (the weight-0 gate, the notify hook) and the values it mirrors must match
keepalived.conf. Every rule has a stable code; `CODES` lists them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from arbiter.config import Config, InstanceConfig
from arbiter.kconf.parser import (
    TRACK_FILE_DEFAULT_WEIGHT,
    Instance,
    Severity,
    Summary,
    Value,
    Where,
    load,
)

NOTIFY_HOOK = "keepalived-arbiter-notify"

CODES: dict[str, str] = {
    # single node
    "bad-value": "a value keepalived refuses or ignores",
    "duplicate-name": "two vrrp_instance (or vrrp_sync_group) blocks with one name",
    "track-file-unknown": "an instance tracks a track_file that no block defines",
    "include-empty": "an include pattern that matches no file",
    "vrid-missing": "an instance without virtual_router_id (keepalived drops it)",
    "vrid-duplicate": "one VRID used twice on one interface and address family",
    "nopreempt-master": "nopreempt with state MASTER (keepalived ignores nopreempt)",
    "script-security": "scripts configured without enable_script_security",
    # between two nodes
    "instance-missing": "an instance on one node only",
    "vrid-mismatch": "the nodes' virtual_router_id differ",
    "advert-mismatch": "the nodes' advert_int differ",
    "version-mismatch": "the nodes' VRRP versions differ",
    "auth-mismatch": "the nodes' authentication differs (type or first 8 characters of the password)",
    "vip-mismatch": "the nodes' virtual_ipaddress sets differ",
    "unicast-mismatch": "unicast on one node, multicast on the other",
    "unicast-peer-missing": "a node's unicast_peer lacks the other node's unicast_src_ip",
    "unicast-src-unknown": "no unicast_src_ip: the peer list cannot be checked",
    # the arbiter's wiring and mirrors (with -c arbiter.toml)
    "arbiter-instance-missing": "the arbiter config names an instance keepalived.conf does not have",
    "gate-missing": "no track_file on the instance points at the arbiter's gate file",
    "gate-weight": "the gate's track_file weight is not 0 (a closed gate would not force FAULT)",
    "gate-init": "the gate is not `init_file 1 overwrite` (keepalived started without the agent runs open)",
    "notify-missing": "no notify keepalived-arbiter-notify and no vrrp_notify_fifo the agent reads",
    "arbiter-unnamed": "an instance wired to an arbiter gate or hook that the arbiter config does not name",
    "arbiter-mirror": "a value the arbiter mirrors differs from keepalived.conf",
}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    message: str
    file: Path
    line: int | None  # None: the file as a whole (an arbiter config, whose models keep no line numbers)
    other_file: Path | None = None
    other_line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        also = ""
        if self.other_file is not None:
            other = f"{self.other_file}:{self.other_line}" if self.other_line is not None else str(self.other_file)
            also = f" (see {other})"
        return f"{where}: {self.severity}: [{self.code}] {self.message}{also}"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["file"] = str(self.file)
        data["other_file"] = None if self.other_file is None else str(self.other_file)
        return data


def _finding(
    severity: Severity, code: str, message: str, where: Where | Path, other: Where | Path | None = None
) -> Finding:
    assert code in CODES, code
    file, line = (where.file, where.line) if isinstance(where, Where) else (where, None)
    other_file, other_line = (other.file, other.line) if isinstance(other, Where) else (other, None)
    return Finding(severity, code, message, file, line, other_file, other_line)


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (str(f.file), f.line or 0, f.code, f.message))


def format_findings(findings: Iterable[Finding]) -> str:
    return "\n".join(str(f) for f in sort_findings(findings))


def findings_json(findings: Iterable[Finding]) -> str:
    return json.dumps([f.as_json() for f in sort_findings(findings)], indent=2)


# --- one node -----------------------------------------------------------------------------------------------


def _shown(value: Value[Any] | None) -> str:
    if value is None:
        return "not set"
    return f"{value.value:g}" if isinstance(value.value, float) else str(value.value)


def _default_note(value: Value[Any]) -> str:
    return " (keepalived's default)" if value.default else ""


def single_node(a: Summary) -> list[Finding]:
    found = [_finding(i.severity, i.code, i.message, i.where) for i in a.issues]
    by_slot: dict[tuple[str, int, int], Instance] = {}
    for inst in a.instances.values():
        vrid = inst.virtual_router_id
        if vrid is None and "virtual_router_id" not in inst.keywords:  # an invalid one is a bad-value already
            found.append(
                _finding(
                    "error",
                    "vrid-missing",
                    f"instance {inst.name} has no virtual_router_id (keepalived refuses the instance)",
                    inst.where,
                )
            )
        elif vrid is not None:
            # keepalived's own check: one VRID per interface and address family (the virtual MAC and the
            # adverts' VRID field would mix the two instances, whatever their VRRP version).
            interface = inst.interface.value if inst.interface else "(default interface)"
            slot = (interface, inst.family, vrid.value)
            first = by_slot.setdefault(slot, inst)
            if first is not inst:
                found.append(
                    _finding(
                        "error",
                        "vrid-duplicate",
                        f"instance {inst.name} uses virtual_router_id {vrid.value} on {interface} (IPv{inst.family}), "
                        f"already used there by instance {first.name}",
                        vrid.where,
                        first.virtual_router_id.where if first.virtual_router_id else first.where,
                    )
                )
        if inst.nopreempt is not None and inst.state is not None and inst.state.value == "MASTER":
            found.append(
                _finding(
                    "error",
                    "nopreempt-master",
                    f"instance {inst.name}: nopreempt is ignored with state MASTER (keepalived preempts anyway); "
                    "use state BACKUP",
                    inst.nopreempt,
                    inst.state.where,
                )
            )
    if a.scripts and a.global_defs.enable_script_security is None:
        first_script = a.scripts[0]
        where = a.global_defs.where or first_script.where
        found.append(
            _finding(
                "warning",
                "script-security",
                f"{len(a.scripts)} script(s) configured (first: {first_script.kind} {first_script.path}) but "
                "global_defs has no enable_script_security: keepalived runs them without checking who can "
                "modify them",
                where,
                first_script.where if where != first_script.where else None,
            )
        )
    return found


# --- two nodes ----------------------------------------------------------------------------------------------


def _compare(
    code: str, what: str, name: str, x: Value[Any] | None, y: Value[Any] | None, fallback: tuple[Where, Where]
) -> list[Finding]:
    if (x.value if x else None) == (y.value if y else None):
        return []
    wx = x.where if x else fallback[0]
    wy = y.where if y else fallback[1]
    return [
        _finding(
            "error",
            code,
            f"instance {name}: {what} {_shown(x)} here{_default_note(x) if x else ''}, "
            f"{_shown(y)} on the other node{_default_note(y) if y else ''}",
            wx,
            wy,
        )
    ]


def _unicast(x: Instance, y: Instance) -> list[Finding]:
    """Rules seen from node x; the caller runs them both ways."""
    found: list[Finding] = []
    if not x.unicast_peers:
        if y.unicast_peers:
            found.append(
                _finding(
                    "error",
                    "unicast-mismatch",
                    f"instance {x.name} sends multicast adverts here but the other node sends unicast to "
                    f"{', '.join(p.value for p in y.unicast_peers)}: neither hears the other",
                    x.where,
                    y.unicast_peer or y.where,
                )
            )
        return found
    if not y.unicast_peers:
        return found  # reported from y's side
    if y.unicast_src_ip is None:
        found.append(
            _finding(
                "warning",
                "unicast-src-unknown",
                f"instance {x.name}: the other node sets no unicast_src_ip, so keepalived there sends from "
                f"{y.interface.value if y.interface else 'its interface'}'s primary address, which this check "
                f"cannot see; cannot verify that unicast_peer here lists it",
                x.unicast_peer or x.where,
                y.where,
            )
        )
    elif y.unicast_src_ip.value not in {p.value for p in x.unicast_peers}:
        found.append(
            _finding(
                "error",
                "unicast-peer-missing",
                f"instance {x.name}: unicast_peer here ({', '.join(p.value for p in x.unicast_peers)}) lacks the "
                f"other node's unicast_src_ip {y.unicast_src_ip.value}: its adverts are dropped here",
                x.unicast_peer or x.where,
                y.unicast_src_ip.where,
            )
        )
    return found


def _auth_key(inst: Instance) -> tuple[str | None, str | None]:
    auth = inst.authentication
    if auth is None:
        return None, None
    return (
        auth.auth_type.value if auth.auth_type else None,
        auth.auth_pass.value if auth.auth_pass else None,
    )


def _auth_finding(name: str, x: Instance, y: Instance) -> Finding:
    (tx, _), (ty, _) = _auth_key(x), _auth_key(y)
    ax, ay = x.authentication, y.authentication
    if tx != ty:
        detail = f"auth_type {tx or 'none'} here, {ty or 'none'} on the other node"
        wx = ax.auth_type.where if ax and ax.auth_type else (ax.where if ax else x.where)
        wy = ay.auth_type.where if ay and ay.auth_type else (ay.where if ay else y.where)
    else:
        detail = "auth_pass differs in its first 8 characters (all that keepalived sends)"
        wx = ax.auth_pass.where if ax and ax.auth_pass else (ax.where if ax else x.where)
        wy = ay.auth_pass.where if ay and ay.auth_pass else (ay.where if ay else y.where)
    return _finding("error", "auth-mismatch", f"instance {name}: {detail}", wx, wy)


def two_nodes(a: Summary, b: Summary) -> list[Finding]:
    found: list[Finding] = []
    for here, there in ((a, b), (b, a)):
        for name, inst in here.instances.items():
            if name not in there.instances:
                found.append(
                    _finding(
                        "error",
                        "instance-missing",
                        f"instance {name} is configured here but not in {there.path}",
                        inst.where,
                        there.path,
                    )
                )
    for name, x in a.instances.items():
        y = b.instances.get(name)
        if y is None:
            continue
        heads = (x.where, y.where)
        if x.virtual_router_id and y.virtual_router_id:  # a missing or invalid one is reported on its node
            found += _compare(
                "vrid-mismatch", "virtual_router_id", name, x.virtual_router_id, y.virtual_router_id, heads
            )
        found += _compare("advert-mismatch", "advert_int", name, x.advert_int, y.advert_int, heads)
        found += _compare("version-mismatch", "VRRP version", name, x.version, y.version, heads)
        if _auth_key(x) != _auth_key(y):
            found.append(_auth_finding(name, x, y))
        vx = {v.address for v in x.vips}
        vy = {v.address for v in y.vips}
        if vx != vy:
            only_x = ", ".join(sorted(vx - vy)) or "none"
            only_y = ", ".join(sorted(vy - vx)) or "none"
            # Point at an address only one side has, so the line shown is the one to fix.
            wx = next((v.where for v in x.vips if v.address not in vy), x.vips[0].where if x.vips else x.where)
            wy = next((v.where for v in y.vips if v.address not in vx), y.vips[0].where if y.vips else y.where)
            found.append(
                _finding(
                    "error",
                    "vip-mismatch",
                    f"instance {name}: virtual_ipaddress differs: only here: {only_x}; "
                    f"only on the other node: {only_y}",
                    wx,
                    wy,
                )
            )
        found += _unicast(x, y)
        found += _unicast(y, x)
    return found


# --- the arbiter's wiring -----------------------------------------------------------------------------------


def _gate_init(a: Summary, gate: Path) -> tuple[str, Where] | None:
    """Why the track_file block of `gate` does not fail closed (and where), None when it says
    `init_file 1 overwrite` (or any non-zero value with overwrite)."""
    track = next((t for t in a.track_files.values() if t.file is not None and t.file.value == gate), None)
    if track is None:
        return None  # gate-missing reports it
    if track.init_file is None:
        return "has no init_file: keepalived creates no gate, and a missing file reads as open", track.where
    words = track.init_file.value.split()
    value = words[0] if words else "0"
    if not value.lstrip("-").isdigit() or int(value) == 0:
        opens = f"has `init_file {track.init_file.value}`: keepalived opens the gate each time it starts"
        return opens, track.init_file.where
    if "overwrite" not in words[1:]:
        return (
            f"has `init_file {track.init_file.value}` without overwrite: a gate the agent left open stays open when "
            "keepalived restarts without the agent",
            track.init_file.where,
        )
    return None


def _gate_refs(a: Summary, inst: Instance) -> list[tuple[Path, Where, int, Value[int] | None]]:
    """Each track_file reference of `inst` as (file it reads, where referenced, effective weight, weight value)."""
    refs = []
    for ref in inst.track_files:
        track = a.track_files.get(ref.name)
        if track is None or track.file is None:
            continue
        weight = ref.weight or track.weight
        refs.append((track.file.value, ref.where, weight.value if weight else TRACK_FILE_DEFAULT_WEIGHT, weight))
    return refs


def _hooked(inst: Instance) -> bool:
    return any(s.kind == "notify" and s.path.endswith(NOTIFY_HOOK) for s in inst.scripts)


def _mirrors(inst: Instance, mine: InstanceConfig, source: Where | Path) -> list[Finding]:
    pairs: list[tuple[str, Value[Any] | None, Any, Any]] = [
        ("interface", inst.interface, inst.interface.value if inst.interface else None, mine.interface),
        ("priority", inst.priority, inst.priority.value, mine.priority),
        ("advert_int_ms", inst.advert_int, round(inst.advert_int.value * 1000), mine.advert_int_ms),
        ("vrrp_version", inst.version, inst.version.value, mine.vrrp_version),
        ("nopreempt", None, inst.nopreempt is not None, mine.nopreempt),
    ]
    if mine.virtual_router_id is not None and inst.virtual_router_id is not None:
        vrid = inst.virtual_router_id
        pairs.append(("virtual_router_id", vrid, vrid.value, mine.virtual_router_id))
    found = []
    for key, value, keepalived, arbiter in pairs:
        if keepalived == arbiter:
            continue
        where = value.where if value else (inst.nopreempt or inst.where)
        shown = (
            "not set" if keepalived is None else str(keepalived).lower() if isinstance(keepalived, bool) else keepalived
        )
        wanted = str(arbiter).lower() if isinstance(arbiter, bool) else arbiter
        note = _default_note(value) if value else ""
        found.append(
            _finding(
                "error",
                "arbiter-mirror",
                f"instance {inst.name}: the arbiter config says {key} = {wanted}"
                f", keepalived.conf says {shown}{note}: the agent would compute keepalived's timers wrong",
                where,
                source,
            )
        )
    vips = {v.address for v in inst.vips}
    missing = [str(v) for v in mine.vip if str(v) not in vips]
    if missing:
        found.append(
            _finding(
                "error",
                "arbiter-mirror",
                f"instance {inst.name}: the arbiter config's vip {', '.join(missing)} is not in virtual_ipaddress "
                f"({', '.join(sorted(vips)) or 'empty'}): the agent would watch for an address keepalived never adds",
                inst.vips[0].where if inst.vips else inst.where,
                source,
            )
        )
    return found


def _instance_tables(source: Path | None, count: int) -> list[Where | Path]:
    """Where each `[[instance]]` table starts in the arbiter config (its models keep no line numbers)."""
    fallback: list[Where | Path] = [source or Path("<arbiter config>")] * count
    if source is None:
        return fallback
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return fallback
    tables: list[Where | Path] = []
    for n, text in enumerate(lines, 1):
        if text.strip() != "[[instance]]":
            continue
        where = Where(source, n)  # the header, unless the table has a `name = ...` line: that says which instance
        for m in range(n, len(lines)):
            if lines[m].strip().startswith("["):
                break
            if lines[m].split("=")[0].strip() == "name":
                where = Where(source, m + 1)
                break
        tables.append(where)
    # Instances written as an inline array (`instance = [...]`) have no header per table: name the file only.
    return tables if len(tables) == count else fallback


def arbiter_wiring(a: Summary, arbiter: Config, source: Path | None = None) -> list[Finding]:
    """`arbiter` is this node's arbiter config; `source` its path, for the messages."""
    where_cfg = source or Path("<arbiter config>")
    tables = _instance_tables(source, len(arbiter.instance))
    found: list[Finding] = []
    named = {i.name: i for i in arbiter.instance}
    gates = {i.track_file: i.name for i in arbiter.instance}
    gate_dirs = {i.track_file.parent for i in arbiter.instance}
    fifo = arbiter.api.notify_fifo
    fifo_wired = (
        fifo is not None
        and a.global_defs.vrrp_notify_fifo is not None
        and (a.global_defs.vrrp_notify_fifo.value == fifo)
    )
    for index, mine in enumerate(arbiter.instance):
        inst = a.instances.get(mine.name)
        if inst is None:
            found.append(
                _finding(
                    "error",
                    "arbiter-instance-missing",
                    f"instance[{index}] {mine.name}: no vrrp_instance {mine.name} in {a.path}",
                    tables[index],
                    a.path,
                )
            )
            continue
        refs = [r for r in _gate_refs(a, inst) if r[0] == mine.track_file]
        if not refs:
            found.append(
                _finding(
                    "error",
                    "gate-missing",
                    f"instance {inst.name}: no track_file reads the arbiter's gate {mine.track_file}: add "
                    f'`track_file {{ NAME weight 0 }}` with a track_file NAME {{ file "{mine.track_file}" }} '
                    "block, or the agent cannot take the VIP away",
                    inst.where,
                    tables[index],
                )
            )
        for _, ref_where, weight, _value in refs:
            if weight != 0:
                found.append(
                    _finding(
                        "error",
                        "gate-weight",
                        f"instance {inst.name}: the gate {mine.track_file} is tracked with weight {weight}"
                        f"{'' if _value else ' (no weight given: keepalived uses 1)'}; it must be `weight 0`, "
                        "or a closed gate only shifts priorities instead of forcing FAULT",
                        ref_where,
                    )
                )
        init = _gate_init(a, mine.track_file) if refs else None
        if init is not None:
            found.append(
                _finding(
                    "warning",
                    "gate-init",
                    f"instance {inst.name}: the gate {mine.track_file} {init[0]}; use `init_file 1 overwrite` so that "
                    "keepalived starting without a running agent takes no VIP (the agent opens the gate when it "
                    "decides, and rewrites it whenever keepalived overwrites it)",
                    init[1],
                )
            )
        if not _hooked(inst) and not fifo_wired:
            found.append(
                _finding(
                    "error",
                    "notify-missing",
                    f"instance {inst.name}: no `notify` script ending in {NOTIFY_HOOK}"
                    + (
                        f" and global_defs vrrp_notify_fifo is not {fifo}"
                        if fifo is not None
                        else " (and the arbiter config sets no api.notify_fifo)"
                    )
                    + ": the agent hears of state changes only by polling",
                    inst.where,
                    tables[index],
                )
            )
        found += _mirrors(inst, mine, tables[index])
    for inst in a.instances.values():
        if inst.name in named:
            continue
        paths = [(path, where) for path, where, _, _ in _gate_refs(a, inst)]
        why = next((f"tracks {p}, the gate of instance {gates[p]}" for p, _ in paths if p in gates), None)
        why = why or next(
            (f"tracks {p}, in the arbiter's gate directory" for p, _ in paths if p.parent in gate_dirs), None
        )
        if why is None and _hooked(inst):
            why = f"notifies {NOTIFY_HOOK}"
        if why is not None:
            found.append(
                _finding(
                    "error",
                    "arbiter-unnamed",
                    f"instance {inst.name} {why}, but the arbiter config names no [[instance]] {inst.name}",
                    inst.where,
                    where_cfg,
                )
            )
    return found


# --- entry points -------------------------------------------------------------------------------------------


def lint(a: Summary, b: Summary | None, arbiter: Config | None, *, arbiter_source: Path | None = None) -> list[Finding]:
    """Every finding, sorted by file and line. `a` is the node whose arbiter config `arbiter` is."""
    found = single_node(a)
    if b is not None:
        found += single_node(b)
        found += two_nodes(a, b)
    if arbiter is not None:
        found += arbiter_wiring(a, arbiter, arbiter_source)
    return sort_findings(found)


def check_node(keepalived_conf: Path, arbiter: Config) -> list[Finding]:
    """The drift check the agent runs: this node's rules and the arbiter's wiring; KconfError if unreadable."""
    return lint(load(keepalived_conf), None, arbiter)


def vrrp_fingerprint(summary: Summary, instance: str) -> dict[str, Any]:
    """What two nodes' instance must agree on, small enough for a heartbeat; the password only as a hash prefix."""
    inst = summary.instances.get(instance)
    if inst is None:
        raise KeyError(f"no vrrp_instance {instance} in {summary.path}")
    auth_type, auth_pass = _auth_key(inst)
    return {
        "virtual_router_id": inst.virtual_router_id.value if inst.virtual_router_id else None,
        "advert_int": inst.advert_int.value,
        "version": inst.version.value,
        "auth_type": auth_type,
        "auth_pass_sha256": hashlib.sha256(auth_pass.encode()).hexdigest()[:12] if auth_pass is not None else None,
        "vips": sorted(v.address for v in inst.vips),
    }
