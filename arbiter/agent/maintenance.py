"""Maintenance mode (`keepalived-arbiter pause` / `resume`): the paused flag, its file, and the verbs' words.

While paused the agent holds every gate at the value it had when paused (and keeps enforcing it), carries out no
fence and no lease acquire or release — renewals of a lease held here go on, so the holder keeps it and no VIP
moves at resume — and still decides every cycle, logging what it would do (arbiter.policy.withhold).

The flag lives in `node.state_dir/maintenance.json`, written atomically, so an agent restarted while paused
starts paused and keeps each gate as found on disk. The file's existence is the flag: an unreadable one still
means paused (its content only says who, when and why), since starting unpaused would close every gate.

Socket protocol (privileged verbs, arbiter.agent.notify): `PAUSE WHO [REASON...]` and `RESUME WHO`; the reply
is `OK <json>` with `changed` (false for a pause of a paused agent or a resume of a running one), `paused`,
`message` (one line for the operator) and the pause's `by`, `at` and `reason`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arbiter.agent.notify import BadRequestError
from arbiter.model import AcquireLease, Action, Fence, ReleaseLease

FILE_NAME = "maintenance.json"
FILE_VERSION = 1
MAX_WHO = 64
MAX_REASON = 200  # the request line is at most 1024 bytes (arbiter.agent.notify.MAX_LINE)


@dataclass(frozen=True)
class Pause:
    by: str
    at: float  # wall-clock Unix time the pause began
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"by": self.by, "at": self.at, "reason": self.reason}


class PauseFile:
    """`maintenance.json` under the state directory: present while paused."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILE_NAME

    def load(self) -> Pause | None:
        """The pause on disk, None when not paused. A file that cannot be read or parsed is still a pause."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            return self._unreadable(f"cannot read: {exc}")
        try:
            data = json.loads(text)
            by, at, reason = data["by"], data["at"], data.get("reason")
            if data.get("version") != FILE_VERSION or not isinstance(by, str) or not by:
                raise ValueError(f'expected {{"version": {FILE_VERSION}, "by": "...", "at": ..., "reason": ...}}')
            if isinstance(at, bool) or not isinstance(at, int | float) or not isinstance(reason, str | None):
                raise ValueError("at: a Unix time, reason: a string or null")
        except (ValueError, KeyError, TypeError) as exc:
            return self._unreadable(f"not a maintenance file ({exc})")
        return Pause(by, float(at), reason)

    def _unreadable(self, why: str) -> Pause:
        with contextlib.suppress(OSError):
            at = self.path.stat().st_mtime
            return Pause("unknown", round(at, 3), f"{self.path}: {why}; still paused until `resume`")
        return Pause("unknown", 0.0, f"{self.path}: {why}; still paused until `resume`")

    def save(self, pause: Pause) -> None:
        """Durable before it returns (tmp + fsync + rename + directory fsync); OSError naming the path."""
        text = json.dumps({"version": FILE_VERSION, **pause.as_dict()}) + "\n"
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            self._sync_dir()
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OSError(exc.errno, f"maintenance flag not written: {exc.strerror or exc}", str(self.path)) from exc

    def clear(self) -> None:
        """Remove the flag (durably); a missing file is already clear. OSError naming the path."""
        try:
            self.path.unlink(missing_ok=True)
            self._sync_dir()
        except OSError as exc:
            raise OSError(exc.errno, f"maintenance flag not removed: {exc.strerror or exc}", str(self.path)) from exc

    def _sync_dir(self) -> None:
        # A rename or unlink survives a crash only once the directory entry is on disk.
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def who(word: str, verb: str) -> str:
    if len(word) > MAX_WHO or not all(c.isprintable() for c in word):
        raise BadRequestError(f"{verb}: WHO: 1..{MAX_WHO} printable characters without spaces")
    return word


def parse_pause(words: Sequence[str]) -> tuple[str, str | None]:
    """`PAUSE WHO [REASON...]`'s words after the verb → (who, reason or None); BadRequestError naming the field."""
    if not words:
        raise BadRequestError("PAUSE: expected WHO [REASON...], got nothing")
    reason = " ".join(words[1:]) or None
    if reason is not None and len(reason) > MAX_REASON:
        raise BadRequestError(f"PAUSE: REASON longer than {MAX_REASON} characters")
    return who(words[0], "PAUSE"), reason


def parse_resume(words: Sequence[str]) -> str:
    """`RESUME WHO`'s words after the verb → who; BadRequestError naming the field."""
    if len(words) != 1:
        raise BadRequestError(f"RESUME: expected WHO, got {len(words)} words")
    return who(words[0], "RESUME")


def describe(action: Action) -> str:
    """How a withheld action reads in a log line and in status: "fence node-b", "acquire lease"."""
    if isinstance(action, Fence):
        return f"fence {action.peer}"
    if isinstance(action, AcquireLease):
        return "acquire lease"
    if isinstance(action, ReleaseLease):
        return "release lease"
    return type(action).__name__


def reply(*, changed: bool, pause: Pause | None, message: str) -> str:
    """The socket reply to PAUSE or RESUME (schema in the module docstring)."""
    body = {"changed": changed, "paused": pause is not None, "message": message}
    body.update(pause.as_dict() if pause is not None else {"by": None, "at": None, "reason": None})
    return "OK " + json.dumps(body, separators=(",", ":"))
