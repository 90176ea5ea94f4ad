"""The last decision per instance, kept in `state_dir/decisions.json` so that a restarted agent can resume.

This module owns the file's format, its atomic replacement, and the clocks its times are written in. Times are
CLOCK_BOOTTIME seconds (they count a suspend, as the lease's TTL in Redis does) with the boot id beside them:
both restart with the kernel, so a record written before the last reboot is not resumed from. Loading converts
them to this process's monotonic clock, the one the policy decides in.

The record is advisory: a missing, stale or corrupt file means "nothing to resume", and start-up then closes
every gate (S0) as a first start does. A corrupt file is reported (`DecisionFileError` names the file and what
is wrong) and replaced by the next write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arbiter.model import Gate, Resumed

DECISION_FILE_NAME = "decisions.json"
DECISION_FILE_VERSION = 1
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class DecisionFileError(Exception):
    """A decision record that cannot be read; the message names the file and the fault."""


@dataclass(frozen=True)
class Clocks:
    """One reading of the clocks a record needs, taken together."""

    boot_id: str
    boottime: float
    monotonic: float
    wall: float

    @classmethod
    def read(cls, boot_id_path: Path = BOOT_ID) -> Clocks:
        try:
            boot_id = boot_id_path.read_text(encoding="ascii").strip()
        except OSError:
            boot_id = ""  # no /proc: nothing written now can be resumed after a reboot, nor before one
        return cls(boot_id, time.clock_gettime(time.CLOCK_BOOTTIME), time.monotonic(), time.time())

    def to_boot(self, mono: float) -> float:
        return self.boottime - (self.monotonic - mono)

    def to_mono(self, boot: float) -> float:
        return self.monotonic - (self.boottime - boot)


@dataclass(frozen=True)
class Entry:
    """What is recorded of one instance's decision (times in the policy's monotonic clock)."""

    gate: Gate
    rule: str
    holding: bool
    lease_token: int | None
    lease_until: float | None
    holding_since: float | None = None
    fence_failing: tuple[str, ...] = ()  # peers whose failed fence holds the gate closed (F1)


def dump(entries: Mapping[str, Entry], clocks: Clocks) -> str:
    instances = {
        name: {
            "gate": e.gate.value,
            "rule": e.rule,
            "holding": e.holding,
            "lease_token": e.lease_token,
            "lease_until": None if e.lease_until is None else round(clocks.to_boot(e.lease_until), 6),
            "holding_since": None if e.holding_since is None else round(clocks.to_boot(e.holding_since), 6),
            "fence_failing": list(e.fence_failing),
        }
        for name, e in sorted(entries.items())
    }
    data = {
        "version": DECISION_FILE_VERSION,
        "boot_id": clocks.boot_id,
        "boottime": round(clocks.boottime, 6),
        "wall": round(clocks.wall, 3),
        "instances": instances,
    }
    return json.dumps(data, indent=1) + "\n"


def parse(text: str, source: str, clocks: Clocks) -> dict[str, Resumed]:
    """The record as the policy resumes from it; empty when it was written before the last reboot.

    Raises DecisionFileError naming `source` and the first fault found.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecisionFileError(f"{source}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("version") != DECISION_FILE_VERSION:
        raise DecisionFileError(f'{source}: expected {{"version": {DECISION_FILE_VERSION}, ...}}')
    boot_id = data.get("boot_id")
    written = _number(data.get("boottime"), f"{source}: boottime")
    instances = data.get("instances")
    if not isinstance(boot_id, str) or not isinstance(instances, dict):
        raise DecisionFileError(f"{source}: boot_id must be a string and instances a table")
    out: dict[str, Resumed] = {}
    for name, raw in instances.items():
        out[name] = _resumed(raw, f"{source}: instances.{name}", written, clocks)
    if not boot_id or boot_id != clocks.boot_id:
        return {}  # another boot: keepalived has started since, and the monotonic clock restarted
    return out


def _resumed(raw: Any, where: str, written: float, clocks: Clocks) -> Resumed:
    if not isinstance(raw, dict):
        raise DecisionFileError(f"{where}: not a table")
    try:
        gate = Gate(raw.get("gate"))
    except ValueError:
        raise DecisionFileError(f"{where}.gate: expected 'open' or 'closed' (got {raw.get('gate')!r})") from None
    rule, holding, token = raw.get("rule"), raw.get("holding"), raw.get("lease_token")
    if not isinstance(rule, str) or not isinstance(holding, bool):
        raise DecisionFileError(f"{where}: rule must be a string and holding true or false")
    if token is not None and (isinstance(token, bool) or not isinstance(token, int) or token < 0):
        raise DecisionFileError(f"{where}.lease_token: not a token (got {token!r})")
    until = raw.get("lease_until")
    lease_until = None if until is None else clocks.to_mono(_number(until, f"{where}.lease_until"))
    since = raw.get("holding_since")
    holding_since = None if since is None else clocks.to_mono(_number(since, f"{where}.holding_since"))
    failing = raw.get("fence_failing", [])  # absent in records of earlier versions
    if not isinstance(failing, list) or not all(isinstance(peer, str) for peer in failing):
        raise DecisionFileError(f"{where}.fence_failing: expected a list of node names (got {failing!r})")
    return Resumed(gate, rule, holding, token, lease_until, clocks.to_mono(written), holding_since, tuple(failing))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DecisionFileError(f"{where}: not a number (got {value!r})")
    return float(value)


class DecisionFile:
    """`state_dir/decisions.json`: read once at start, replaced atomically (tmp + fsync + rename) after."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, clocks: Clocks) -> dict[str, Resumed]:
        """The previous agent's decisions; empty on a first start. Raises DecisionFileError when unreadable."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise DecisionFileError(f"{self.path}: cannot read: {exc}") from exc
        return parse(text, str(self.path), clocks)

    def write(self, entries: Mapping[str, Entry], clocks: Clocks) -> None:
        """Blocking (fsync): run it off the event loop. Raises OSError naming the path."""
        text = dump(entries, clocks)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            # No fsync of the directory: a rename lost with the power belongs to a boot that is not resumed.
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OSError(exc.errno, f"decision record not written: {exc.strerror or exc}", str(self.path)) from exc
