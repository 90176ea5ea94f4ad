"""The gate: keepalived's `track_file` for one instance, the only veto the agent has over the VIP.

keepalived (configured with `weight 0`) re-reads the file on change through inotify and puts the instance in
FAULT, releasing the VIP, while the value is non-zero. This module owns the file's content ("0" open, "1" closed),
its atomic replacement, its enforcement, and the watch that notices when someone else changed it.

The agent does not only write on change: keepalived's `init_file N overwrite` writes N into the file every time
keepalived starts, and an operator may edit it by hand. Each `write` therefore reads the file back and rewrites it
when it no longer says what the agent decided (`GateWrite.RESTORED`), and `GateWatch` wakes the agent the moment
the file changes, so a keepalived restart cannot reopen a closed gate for longer than one decision cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from asyncinotify import Inotify, Mask

from arbiter.model import Gate

log = logging.getLogger(__name__)

_CONTENT = {Gate.OPEN: b"0\n", Gate.CLOSED: b"1\n"}
# A write by keepalived (open + truncate + write + close), an atomic replacement (rename into the directory), a
# new file, or its removal: anything after which the file may no longer say what the agent decided.
_CHANGES = Mask.CLOSE_WRITE | Mask.MOVED_TO | Mask.CREATE | Mask.DELETE | Mask.MODIFY


class GateWrite(enum.Enum):
    """What `GateFile.write` did; false only for UNCHANGED, so `if gate.write(...)` reads "if written"."""

    UNCHANGED = "unchanged"  # the decision and the file already agreed
    CHANGED = "changed"  # a new decision (or the first one since start) written
    RESTORED = "restored"  # the decision stood but the file said otherwise (keepalived's init_file, a hand edit)

    def __bool__(self) -> bool:
        return self is not GateWrite.UNCHANGED


class GateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        # None until the first write: the file on disk may hold anything from a previous run or init_file.
        self._written: Gate | None = None
        self.restored = 0  # times the file was found changed behind the agent's back and rewritten

    @property
    def cached(self) -> Gate | None:
        """The gate this object last wrote, None before its first write."""
        return self._written

    def write(self, gate: Gate) -> GateWrite:
        """Make the file say `gate`, and keep it saying so.

        A new decision is always written. An unchanged one is checked against the file (a read of two bytes on
        tmpfs) and written again only when the file says otherwise: keepalived rewrites the file each time it
        starts (`init_file ... overwrite`), and an unchanged decision must still hold.

        Raises OSError naming the path when the file cannot be written; the cache is then left untouched so
        the next call tries again.
        """
        if gate is self._written:
            try:
                found = self.read()
            except OSError:
                found = None  # unreadable: write it again
            if found is gate:
                return GateWrite.UNCHANGED
            self._replace(gate)
            self.restored += 1
            return GateWrite.RESTORED
        self._replace(gate)
        self._written = gate
        return GateWrite.CHANGED

    def _replace(self, gate: Gate) -> None:
        # Same directory as the target: os.replace is atomic only within one filesystem, and keepalived must
        # never read a half-written file (an empty file reads as 0 = open).
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, _CONTENT[gate])
                # Durable before the rename: after a crash the file holds the old or the new value, never empty.
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OSError(exc.errno, f"gate not written: {exc.strerror or exc}", str(self.path)) from exc
        # No fsync of the directory: the agent writes the gate again first thing after any restart.

    def read(self) -> Gate | None:
        """What the file says now as keepalived would read it; None when it does not exist.

        keepalived reads the leading integer: 0 (or an empty file) is open, anything else closed.
        Raises OSError naming the path for other read errors.
        """
        try:
            text = self.path.read_bytes().decode("ascii", "replace").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OSError(exc.errno, f"gate not read: {exc.strerror or exc}", str(self.path)) from exc
        digits = text.split()[0] if text else "0"
        try:
            value = int(digits)
        except ValueError:
            # No leading number reads as 0 in keepalived too: such a file does not hold the instance in FAULT.
            value = 0
        return Gate.OPEN if value == 0 else Gate.CLOSED


class GateWatch:
    """inotify on the gates' directories: calls `on_change(instance)` when a gate file no longer says what its
    GateFile last wrote (the agent's own replacements, which still say it, are not reported).

    The directories are watched, not the files: keepalived's init_file and the agent's atomic replace both leave
    a different inode behind, and a watch on the old one would go quiet.
    """

    def __init__(self, gates: Mapping[str, GateFile], on_change: Callable[[str], None]) -> None:
        self._by_path = {(gate.path.parent, gate.path.name): (name, gate) for name, gate in gates.items()}
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        with Inotify() as inotify:
            for directory in {d for d, _ in self._by_path}:
                try:
                    inotify.add_watch(directory, _CHANGES)
                except OSError as exc:
                    # The per-cycle check still enforces the gate; only the immediate wake-up is lost.
                    log.warning("gate directory %s not watched (%s); gates checked every cycle only", directory, exc)
            async for event in inotify:
                if event.watch is None or event.name is None:
                    continue
                found = self._by_path.get((event.watch.path, str(event.name)))
                if found is None:
                    continue
                name, gate = found
                try:
                    now = gate.read()
                except OSError:
                    now = None
                if gate.cached is not None and now is not gate.cached:
                    self._on_change(name)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
