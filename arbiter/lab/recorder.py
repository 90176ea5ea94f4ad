"""The lab's recorders: watches that turn what each namespace shows into `Event`s on one `Timeline`.

- `AddressWatch`: VIP add/remove in one node's namespace (`ip -n NS -o monitor address`, plus a snapshot).
- `ArpWatch`: who answers the client's ARP for each VIP (`python -m arbiter.lab.arpwatch` in the client's namespace).
- `KeepalivedStateWatch`: keepalived's own state changes, read from its `vrrp_notify_fifo`.
- `Recorder`: starts and stops a set of watches together.

Every helper process is stopped by its PID, never by name. Helper processes run *inside* the watched namespace, so a
"power-off" that kills every process of a node's namespace kills the address monitor too: pass `Recorder.pids()` as
`keep=` to spare them. Otherwise `AddressWatch` relaunches its monitor while the namespace exists and reconciles the
addresses it missed (stamped when seen again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from arbiter.lab.events import ARP, VIP_ADD, VIP_DEL, VRRP_STATE, Timeline
from arbiter.lab.netns import LabError

log = logging.getLogger(__name__)

RTMGRP_IPV4_IFADDR = 0x10
MAX_ARP_INTERVAL = 0.05


class Watch(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def pids(self) -> list[int]: ...


def _kill(proc: subprocess.Popen[Any] | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log.warning("process %d survives SIGKILL", proc.pid)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def namespace_exists(netns: str) -> bool:
    return os.path.exists(f"/run/netns/{netns}")


def parse_address_line(line: str) -> tuple[bool, str, str] | None:
    """One line of `ip -o monitor address` / `ip -o addr show` -> (deleted, interface key, IPv4 address).

    `None` for anything that is not an IPv4 address line (IPv6, blank, unknown). The key names the interface and
    the prefix length, so one address on two interfaces is tracked as two entries.
    """
    tokens = line.split()
    deleted = False
    while tokens and (tokens[0] == "Deleted" or tokens[0].startswith("[")):
        deleted = deleted or tokens[0] == "Deleted"
        tokens = tokens[1:]
    if len(tokens) < 4 or "inet" not in tokens:
        return None
    i = tokens.index("inet")
    if i + 1 >= len(tokens):
        return None
    address, _, prefix = tokens[i + 1].partition("/")
    ifname = tokens[1].split("@", 1)[0]
    return deleted, f"{ifname}/{prefix}", address


W = TypeVar("W", bound=Watch)


class AddressWatch:
    """VIP_ADD / VIP_DEL for `vips` appearing on / leaving any interface of `netns`, node named `node`.

    A node "holds" a VIP while at least one of its interfaces carries it: an event is emitted when that set goes
    from empty to non-empty (VIP_ADD) or back (VIP_DEL), so duplicates from the snapshot/monitor overlap vanish.
    """

    def __init__(
        self,
        timeline: Timeline,
        node: str,
        netns: str,
        vips: Sequence[str],
        *,
        ready_timeout: float = 2.0,
        restart_delay: float = 0.3,
    ) -> None:
        self.timeline = timeline
        self.node = node
        self.netns = netns
        self.vips = list(vips)
        self.ready_timeout = ready_timeout
        self.restart_delay = restart_delay
        self.restarts = 0
        self._held: dict[str, set[str]] = {v: set() for v in self.vips}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def pids(self) -> list[int]:
        proc = self._proc
        return [proc.pid] if proc is not None and proc.poll() is None else []

    def running(self) -> bool:
        """The reader still watches (False once stopped, or once the namespace is gone)."""
        return self._thread is not None and self._thread.is_alive()

    def holds(self, vip: str) -> bool:
        with self._lock:
            return bool(self._held.get(vip))

    def start(self) -> None:
        if self._thread is not None:
            return
        self._proc = self._launch()
        try:
            self._reconcile(self._snapshot())
        except BaseException:
            _kill(self._proc)
            raise
        self._thread = threading.Thread(target=self._read, name=f"addr-watch-{self.node}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:  # the reader swaps in a relaunched monitor under this lock: we kill whichever is current
            self._stopping.set()
            proc = self._proc
        _kill(proc)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _launch(self) -> subprocess.Popen[bytes]:
        # Monitor first, then the snapshot: whatever changes in between shows up in one or both, never in neither.
        proc = subprocess.Popen(
            ["ip", "-n", self.netns, "-o", "monitor", "address"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + self.ready_timeout
        while not self._subscribed(proc.pid):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                _kill(proc)
                raise LabError(f"ip -n {self.netns} monitor address: exit {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                log.warning("%s: cannot confirm the address monitor's subscription; going on", self.netns)
                break
            time.sleep(0.005)
        return proc

    @staticmethod
    def _subscribed(pid: int) -> bool:
        # /proc/PID/net/netlink lists the sockets of the monitor's namespace: ours is bound once its groups show.
        try:
            with open(f"/proc/{pid}/net/netlink", encoding="ascii") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            return False
        for row in rows:
            cols = row.split()
            if len(cols) >= 4 and cols[1] == "0" and cols[2] == str(pid) and int(cols[3], 16) & RTMGRP_IPV4_IFADDR:
                return True
        return False

    def _snapshot(self) -> dict[str, set[str]]:
        done = subprocess.run(
            ["ip", "-n", self.netns, "-o", "-4", "addr", "show"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise LabError(f"ip -n {self.netns} -o -4 addr show: exit {done.returncode}: {done.stderr.strip()}")
        present: dict[str, set[str]] = {v: set() for v in self.vips}
        for line in done.stdout.splitlines():
            parsed = parse_address_line(line)
            if parsed is not None and not parsed[0] and parsed[2] in present:
                present[parsed[2]].add(parsed[1])
        return present

    def _reconcile(self, present: dict[str, set[str]]) -> None:
        with self._lock:
            for vip in self.vips:
                was, now = bool(self._held[vip]), bool(present[vip])
                self._held[vip] = set(present[vip])
                if now and not was:
                    self.timeline.add(VIP_ADD, self.node, vip)
                elif was and not now:
                    self.timeline.add(VIP_DEL, self.node, vip)

    def handle_line(self, line: str) -> None:
        parsed = parse_address_line(line)
        if parsed is None:
            return
        deleted, key, address = parsed
        with self._lock:
            held = self._held.get(address)
            if held is None:
                return
            if deleted and key in held:
                held.discard(key)
                if not held:
                    self.timeline.add(VIP_DEL, self.node, address)
            elif not deleted and key not in held:
                held.add(key)
                if len(held) == 1:
                    self.timeline.add(VIP_ADD, self.node, address)

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        """Feed the monitor's lines until it ends, we stop, or the namespace is deleted (then kill the monitor,
        which would otherwise keep the deleted namespace — and its links — alive)."""
        if proc.stdout is None:
            return
        fd = proc.stdout.fileno()
        pending = b""
        while True:
            readable, _, _ = select.select([fd], [], [], 0.25)
            if not readable:
                if self._stopping.is_set():
                    return
                if not namespace_exists(self.netns):
                    _kill(proc)
                    return
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self.handle_line(raw.decode("utf-8", "replace"))

    def _read(self) -> None:
        proc = self._proc
        while proc is not None:
            self._pump(proc)
            proc.wait()
            if self._stopping.is_set() or not namespace_exists(self.netns):
                return
            # Killed from outside (a power-off kills every process of the namespace): watch again, catch up.
            log.info("%s: address monitor ended (exit %s); relaunching", self.netns, proc.returncode)
            if self._stopping.wait(self.restart_delay) or not namespace_exists(self.netns):
                return
            try:
                new = self._launch()
                with self._lock:
                    if self._stopping.is_set():
                        _kill(new)
                        return
                    self._proc = new
                self._reconcile(self._snapshot())
            except (LabError, OSError, subprocess.SubprocessError) as exc:
                log.warning("%s: address monitor not relaunched: %s", self.netns, exc)
                return
            self.restarts += 1
            _kill(proc)
            proc = new


class ArpWatch:
    """Who answers the client's ARP for each VIP: ARP events on every change of first responder or responder set.

    Runs `python -m arbiter.lab.arpwatch` in `client_netns` and uses the child's monotonic timestamps (the clock is
    shared by every network namespace). `mac_to_node` names the MACs; an unnamed MAC is recorded as node "?".
    """

    def __init__(
        self,
        timeline: Timeline,
        client_netns: str,
        iface: str,
        vips: Sequence[str],
        mac_to_node: Mapping[str, str],
        *,
        interval: float = MAX_ARP_INTERVAL,
        ready_timeout: float = 5.0,
        python: str = sys.executable,
    ) -> None:
        if not 0 < interval <= MAX_ARP_INTERVAL:
            raise ValueError(f"ArpWatch interval must be in (0, {MAX_ARP_INTERVAL}] s, not {interval}")
        self.timeline = timeline
        self.client_netns = client_netns
        self.iface = iface
        self.vips = list(vips)
        self.mac_to_node = {mac.lower(): node for mac, node in mac_to_node.items()}
        self.interval = interval
        self.ready_timeout = ready_timeout
        self.python = python
        self.rounds = 0
        self.stderr = ""
        self._last: dict[str, tuple[str, frozenset[str]]] = {}
        self._lock = threading.Lock()
        self._seen_all = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def pids(self) -> list[int]:
        proc = self._proc
        return [proc.pid] if proc is not None and proc.poll() is None else []

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def node_of(self, mac: str) -> str:
        if not mac:
            return ""
        return self.mac_to_node.get(mac.lower(), "?")

    def start(self) -> None:
        if self._thread is not None:
            return
        argv = [
            "ip", "netns", "exec", self.client_netns,
            self.python, "-m", "arbiter.lab.arpwatch", self.iface, *self.vips, "--interval", f"{self.interval:g}",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self._thread = threading.Thread(target=self._read, name=f"arp-watch-{self.client_netns}", daemon=True)
        self._thread.start()
        # Return once every VIP has been probed once, so the caller starts from a known client view.
        deadline = time.monotonic() + self.ready_timeout
        while not self._seen_all.wait(0.01):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._thread.join(timeout=1)
                stderr = self.stderr.strip()
                self.stop()
                raise LabError(
                    f"{' '.join(argv)}: no ARP round within {self.ready_timeout:g}s: {stderr or 'no output'}"
                )

    def stop(self) -> None:
        _kill(self._proc)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def handle_line(self, line: str) -> None:
        """`<monotonic t> <vip> <first mac or -> <all macs or ->`: an ARP event when the answer changed."""
        parts = line.split()
        if len(parts) != 4 or parts[1] not in self.vips:
            return
        try:
            t = float(parts[0])
        except ValueError:
            return
        vip = parts[1]
        first = "" if parts[2] == "-" else parts[2].lower()
        macs = [m.lower() for m in parts[3].split(",") if m and m != "-"]
        answer = (first, frozenset(macs))
        with self._lock:
            self.rounds += 1
            if self._last.get(vip) != answer:
                self._last[vip] = answer
                detail = f"{vip} {first or '-'} {','.join(macs) or '-'}"
                self.timeline.add(ARP, self.node_of(first), detail, t=t)
            if len(self._last) == len(set(self.vips)):
                self._seen_all.set()

    def _read(self) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            return
        for line in proc.stdout:
            self.handle_line(line)
        if proc.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                self.stderr = proc.stderr.read()


class KeepalivedStateWatch:
    """VRRP_STATE events from keepalived's `vrrp_notify_fifo` at `fifo_path` (a FIFO the caller created).

    Lines read `INSTANCE "VI_1" MASTER 150`; the event's detail is `VI_1 MASTER`. GROUP lines and
    MASTER_RX_LOWER_PRI (a master hearing a lower priority: not a state change) are ignored. The FIFO is held open
    read-write, so keepalived restarting (closing and reopening its end) never produces an end of file.
    """

    IGNORED_STATES = frozenset({"MASTER_RX_LOWER_PRI"})

    def __init__(self, timeline: Timeline, node: str, fifo_path: str | os.PathLike[str]) -> None:
        self.timeline = timeline
        self.node = node
        self.fifo_path = os.fspath(fifo_path)
        self._fd: int | None = None
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def pids(self) -> list[int]:
        return []

    def start(self) -> None:
        if self._thread is not None:
            return
        if not stat.S_ISFIFO(os.stat(self.fifo_path).st_mode):
            raise LabError(f"{self.fifo_path}: not a FIFO (create it with os.mkfifo before keepalived starts)")
        self._fd = os.open(self.fifo_path, os.O_RDWR | os.O_NONBLOCK)
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._read, name=f"vrrp-fifo-{self.node}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in (self._fd, *(self._wake or ())):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = None
        self._wake = None

    def handle_line(self, line: str) -> None:
        parts = line.split()
        if len(parts) < 3 or parts[0] != "INSTANCE" or parts[2] in self.IGNORED_STATES:
            return
        self.timeline.add(VRRP_STATE, self.node, f"{parts[1].strip(chr(34))} {parts[2]}")

    def _read(self) -> None:
        fd, wake = self._fd, self._wake
        if fd is None or wake is None:
            return
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(wake[0], select.POLLIN)
        pending = b""
        while True:
            ready = dict(poller.poll())
            if wake[0] in ready:
                return
            if fd not in ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self.handle_line(raw.decode("utf-8", "replace"))


class Recorder:
    """Owns watches: starts them together, stops them all (idempotent, never raises; safe in any teardown)."""

    def __init__(self, watches: Iterable[Watch] = ()) -> None:
        self.watches: list[Watch] = list(watches)
        self._started: list[Watch] = []
        self._stopped = False

    def add(self, watch: W) -> W:
        self.watches.append(watch)
        return watch

    def pids(self) -> list[int]:
        return [pid for w in self.watches for pid in w.pids()]

    def start(self) -> None:
        self._stopped = False
        for watch in self.watches:
            if watch in self._started:
                continue
            try:
                watch.start()
            except BaseException:
                self.stop()
                raise
            self._started.append(watch)

    def stop(self) -> list[str]:
        """Stop every started watch, newest first; returns the errors met (also logged)."""
        errors: list[str] = []
        if self._stopped:
            return errors
        self._stopped = True
        # Watches whose start() failed half-way may hold a process too: stop every one, started or not.
        for watch in reversed(self.watches):
            try:
                watch.stop()
            except Exception as exc:  # teardown must reach every watch
                errors.append(f"{type(watch).__name__}: {exc}")
                log.warning("stopping %r: %s", watch, exc)
        self._started.clear()
        return errors

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
