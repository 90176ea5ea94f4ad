"""The gate: keepalived's `track_file` for one instance, the only veto the agent has over the VIP.

keepalived (configured with `weight 0`) re-reads the file on change through inotify and puts the instance in
FAULT, releasing the VIP, while the value is non-zero. This module owns the file's content ("0" open, "1" closed),
its atomic replacement, and the cache that keeps an unchanged decision from touching the disk on every cycle.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from arbiter.model import Gate

_CONTENT = {Gate.OPEN: b"0\n", Gate.CLOSED: b"1\n"}


class GateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        # None until the first write: the file on disk may hold anything from a previous run or init_file.
        self._written: Gate | None = None

    @property
    def cached(self) -> Gate | None:
        """The gate this object last wrote, None before its first write."""
        return self._written

    def write(self, gate: Gate) -> bool:
        """Make the file say `gate`; True when it was written, False when the cached value already matched.

        Raises OSError naming the path when the file cannot be written; the cache is then left untouched so
        the next call tries again.
        """
        if gate is self._written:
            return False
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
        self._written = gate
        return True

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
