"""systemd's readiness and watchdog protocol (sd_notify) for the agent, and the gate that feeds the watchdog.

This module owns the datagrams the agent sends to `$NOTIFY_SOCKET` (READY=1, STATUS=, RELOADING=1, STOPPING=1,
WATCHDOG=1) and the rule for when a watchdog ping is deserved: only while the decision loop keeps cycling. A
stuck decision loop then stops the pings, systemd kills the agent after `WatchdogSec=` and restarts it, and the
restarted agent writes every gate closed first thing (see daemon.py, S0).

Written on the stdlib socket module: the protocol is one AF_UNIX datagram of `KEY=value` lines, and
python-systemd (the binding to libsystemd's sd_notify) needs libsystemd's C headers and a compiler on every node.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def _address(value: str) -> str | None:
    """The socket address for a `$NOTIFY_SOCKET` value, None when it is not one this module can reach.

    `/path` is a filesystem socket, `@name` an abstract-namespace one (a leading NUL byte on the wire). Newer
    systemd also hands out `vsock:` addresses (for VMs); the agent never runs under one of those.
    """
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of `$WATCHDOG_USEC` in seconds (the ping period sd_watchdog_enabled(3) recommends), when the
    watchdog is meant for this process: `$WATCHDOG_PID` unset or equal to our pid (a child that inherited the
    environment must not ping for its parent)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


class SystemdNotifier:
    """Sends sd_notify datagrams; a no-op when the agent does not run under systemd (`enabled` False).

    Never raises on a failed send: systemd gone or restarting must not stop the agent from writing gates. The
    first failure is logged as a warning, later ones at debug level (a watchdog ping every few seconds would
    otherwise flood the journal it cannot reach anyway).
    """

    def __init__(self, address: str | None, *, watchdog_interval: float | None = None) -> None:
        self._address = address
        # The watchdog is meaningless without a socket to ping.
        self.watchdog_interval = watchdog_interval if address is not None else None
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SystemdNotifier:
        """The notifier systemd's environment asks for: disabled when `$NOTIFY_SOCKET` is unset or empty."""
        raw = environ.get("NOTIFY_SOCKET", "")
        address = _address(raw) if raw else None
        if raw and address is None:
            log.warning("NOTIFY_SOCKET=%r: unsupported address; systemd notifications disabled", raw)
        return cls(address, watchdog_interval=_watchdog_interval(environ) if address else None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send `KEY=value` lines in one datagram; True when the kernel took it. Values lose their newlines
        (a newline would start a new, unintended field)."""
        if self._address is None or not fields:
            return False
        text = "\n".join(f"{key}={' '.join(str(value).splitlines())}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # MSG_DONTWAIT: a full receive queue on systemd's side drops this datagram instead of blocking the
            # event loop (the next watchdog ping comes soon enough).
            self._sock.sendto(text.encode(), socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            level = logging.DEBUG if self._failed else logging.WARNING
            log.log(level, "systemd notification not sent to %r: %s", self._address.replace("\0", "@"), exc)
            self._failed = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """Start-up done (systemd leaves `activating`; keepalived.service, ordered after us, may start)."""
        return self.notify(READY=1, STATUS=status)

    def reloading(self) -> bool:
        """A reload (SIGHUP) began; send `ready()` again when it is done. MONOTONIC_USEC lets systemd 253+ tell
        this reload from an earlier one; systemd 252 ignores the field."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self) -> bool:
        return self.notify(STOPPING=1)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def status(self, text: str) -> bool:
        """One line for `systemctl status` (e.g. the gates and the last decision's reason)."""
        return self.notify(STATUS=text)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WatchdogGate:
    """Whether the decision loop is alive: it calls `beat()` after every cycle; `healthy()` says whether the
    last beat is at most `max_age` seconds old. Counts from construction until the first beat, so a loop that
    never completes its first cycle is unhealthy too.

    Pick `max_age` well above the loop's longest normal cycle gap (the heartbeat interval) and at most the
    watchdog ping interval, so that one stuck stretch of WatchdogSec/2 already withholds a ping.
    """

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_age <= 0:
            raise ValueError(f"max_age must be positive (got {max_age})")
        self.max_age = max_age
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        self._last = self._clock()

    def age(self, now: float | None = None) -> float:
        """Seconds since the last beat (or construction)."""
        return (self._clock() if now is None else now) - self._last

    def healthy(self, now: float | None = None) -> bool:
        return self.age(now) <= self.max_age


async def keep_watchdog(notifier: SystemdNotifier, gate: WatchdogGate) -> None:
    """Ping systemd every `notifier.watchdog_interval` while `gate` is healthy; returns at once when systemd
    set no watchdog. Run it as a task beside the decision loop (asyncio.sleep runs on the monotonic clock)."""
    interval = notifier.watchdog_interval
    if interval is None:
        return
    withheld = False
    while True:
        if gate.healthy():
            notifier.watchdog()
            withheld = False
        elif not withheld:
            # Logged once per stuck stretch: systemd kills the agent within WatchdogSec if it stays stuck.
            log.error("decision loop silent for %.1fs: watchdog ping withheld", gate.age())
            withheld = True
        await asyncio.sleep(interval)
