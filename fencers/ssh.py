"""The "ssh" driver: power a node off by running a command on it over SSH (paramiko).

This module owns how the driver logs in (one unencrypted key file; the host key pinned by one known_hosts file
and nothing else, unknown or changed keys refused), what counts as a dispatched power-off, and the messages an
operator reads when it fails.

SSH cannot read power: `status` is always UNKNOWN and `observes_power` is False. A power-off that "worked" here
only means the command was sent; the node's OFF must be confirmed by another level's status read or by the
weaker proof the orchestrator applies (the node silent on every medium for `confirm_ms`). SSH cannot power a
node on either.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import paramiko
from paramiko.hostkeys import InvalidHostKey

from arbiter.config import SshFence
from arbiter.model import Power
from fencers.base import FenceError, within

log = logging.getLogger(__name__)

CHECK_COMMAND = "uname -n"
TAIL_BYTES = 2048  # how much of the command's stderr/stdout an error message quotes
POLL = 0.1  # how often the exit wait drains output, so a chatty command never stalls on a full SSH window


def _known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH (and paramiko) look a host up by in known_hosts."""
    return host if port == 22 else f"[{host}]:{port}"


def _tail(data: bytes) -> str:
    text = data[-TAIL_BYTES:].decode("utf-8", "replace").strip()
    return " | ".join(line for line in text.splitlines() if line.strip())


class _PinnedHostKeys(paramiko.RejectPolicy):
    """RejectPolicy whose refusal says what the host offered and which file lacked it."""

    def __init__(self, device: str, known_hosts: Path) -> None:
        self.device = device
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise FenceError(
            f"{self.device}: host key refused: {hostname} offered {key.get_name()} {key.fingerprint}, "
            f"and {self.known_hosts} has no {key.get_name()} key for {hostname!r}"
        )


@dataclass
class _Session:
    """How far one call got; the caller reads it when the hard deadline abandons the worker thread."""

    client: paramiko.SSHClient | None = None
    sent: bool = False  # the command request was handed to the transport
    finished: bool = False  # the worker reached its own verdict (as opposed to being cut off by the deadline)
    stopped: bool = False  # the caller gave up at the deadline: the command must not be sent any more
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def may_send(self) -> bool:
        """Claim the right to send the command; False once the caller gave up (checked and set atomically)."""
        with self.lock:
            if not self.stopped:
                self.sent = True
            return self.sent

    def stop(self) -> bool:
        """The caller gives up: no command may be sent after this. True if it was already sent."""
        with self.lock:
            self.stopped = True
            return self.sent

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


@dataclass
class _Exit:
    status: int | None  # None: no status before the wait ended; -1: session closed without one
    out: bytes
    err: bytes


@dataclass
class SshFencer:
    """One SSH login that can run a power-off command on one node."""

    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    command: str
    timeout: float  # seconds; bounds each call as a whole (connect, auth, command)
    driver: str = "ssh"
    observes_power: bool = False
    device: str = field(init=False)

    def __post_init__(self) -> None:
        self.device = f"ssh {self.user}@{self.host}:{self.port}"

    def power_off(self, target: str, timeout: float | None = None) -> None:
        """Run the power-off command. Returns once it was dispatched; raises FenceError if it was not.

        Exit 0, the session dying (EOF, exit -1) or no answer before the deadline once the command was sent all
        count as dispatched: a working power-off takes the session down with the node. A non-zero exit status
        reported by the node means the command failed. A worker thread still connecting at the deadline never
        sends the command afterwards (`_Session.stop`).
        """
        bound = self.timeout if timeout is None else timeout
        if bound <= 0:
            raise FenceError(f"{self.device}: power off {target}: not sent: no time left before the deadline")
        session = _Session()
        try:
            how = within(bound, f"{self.device}: power off {target}", lambda: self._run_off(session, bound))
        except FenceError:
            sent = session.stop()
            if session.finished or not sent:
                raise
            how = f"no answer within {bound:.3g}s after the command was sent"
        finally:
            session.close()  # the worker closes its own client; this covers a worker abandoned at the deadline
        log.info("%s: power-off command for %s dispatched (%s); OFF needs another proof", self.device, target, how)

    def power_on(self, target: str, timeout: float | None = None) -> None:
        raise FenceError(f"{self.device}: SSH cannot power a node on; use an IPMI or fence-agent level")

    def status(self, target: str, timeout: float | None = None) -> Power:
        """Always UNKNOWN, without touching the network: SSH cannot read power (a login proves only the OS)."""
        return Power.UNKNOWN

    def check(self, target: str) -> str:
        """Log in, run `uname -n`, and say so; power is not touched."""
        session = _Session()
        try:
            return within(self.timeout, f"{self.device}: check {target}", lambda: self._run_check(session))
        finally:
            session.close()

    def _until(self, timeout: float | None = None) -> float:
        """When a call's own waits end: a little before the hard deadline, so its own, clearer verdict wins."""
        bound = self.timeout if timeout is None else timeout
        return time.monotonic() + bound - min(0.5, bound / 10)

    def _run_off(self, session: _Session, timeout: float) -> str:
        until = self._until(timeout)
        try:
            channel = self._open(session, until)
            # Claimed before the request: a node that powers off may never answer it.
            if not session.may_send():
                raise FenceError(f"{self.device}: logged in after the deadline: power-off command not sent")
            try:
                channel.exec_command(self.command)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if channel.get_transport().is_active():  # connection alive, channel closed: sshd said no
                    raise FenceError(f"{self.device}: the node refused to run {self.command!r}: {exc}") from exc
                return f"session lost while the command was being accepted: {str(exc) or type(exc).__name__}"
            result = _wait_exit(channel, until)
            if result.status is None:
                return "no exit status before the deadline"
            if result.status == -1:
                return "session closed without an exit status"
            if result.status != 0:
                detail = _tail(result.err) or _tail(result.out) or "no output"
                raise FenceError(
                    f"{self.device}: power-off command {self.command!r} failed with exit status {result.status}: "
                    f"{detail}"
                )
            return "exit status 0"
        finally:
            session.finished = True
            session.close()

    def _run_check(self, session: _Session) -> str:
        until = self._until()
        try:
            channel = self._open(session, until)
            try:
                channel.exec_command(CHECK_COMMAND)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise FenceError(f"{self.device}: logged in, but could not run {CHECK_COMMAND!r}: {exc}") from exc
            result = _wait_exit(channel, until)
            if result.status != 0:
                said = "no exit status in time" if result.status is None else f"exit status {result.status}"
                detail = _tail(result.err) or "no output"
                raise FenceError(f"{self.device}: logged in, but {CHECK_COMMAND!r} failed ({said}): {detail}")
            transport = channel.get_transport()
            key = transport.get_remote_server_key()
            return (
                f"{self.device}: logged in with {self.key_file} (host key {key.get_name()} {key.fingerprint} "
                f"pinned by {self.known_hosts}); {CHECK_COMMAND}: {_tail(result.out)}; power not readable over SSH"
            )
        finally:
            session.close()

    def _open(self, session: _Session, until: float) -> paramiko.Channel:
        """Connect, check the host key, authenticate with the key file, open a session channel."""
        key = self._key()
        client = paramiko.SSHClient()
        session.client = client
        try:
            client.load_host_keys(str(self.known_hosts))  # this file only: no system or user known_hosts
        except (OSError, InvalidHostKey) as exc:
            raise FenceError(f"{self.device}: cannot read known_hosts {self.known_hosts}: {exc}") from exc
        client.set_missing_host_key_policy(_PinnedHostKeys(self.device, self.known_hosts))
        left = max(until - time.monotonic(), 0.01)
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                pkey=key,
                allow_agent=False,
                look_for_keys=False,
                timeout=left,
                # Shorter than `timeout`, which also ends the key exchange wait: a silent peer is then reported
                # as "no banner" instead of paramiko's "No existing session".
                banner_timeout=left * 0.9,
                auth_timeout=left,
                channel_timeout=left,
            )
        except paramiko.BadHostKeyException as exc:
            name = _known_hosts_name(self.host, self.port)
            raise FenceError(
                f"{self.device}: host key refused: {name} offered {exc.key.get_name()} {exc.key.fingerprint}, "
                f"but {self.known_hosts} pins {exc.expected_key.get_name()} {exc.expected_key.fingerprint} "
                "for it (host reinstalled, or not the host you meant)"
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise FenceError(
                f"{self.device}: authentication failed: {self.user} not accepted with {key.get_name()} key "
                f"{key.fingerprint} from {self.key_file} ({exc})"
            ) from exc
        except paramiko.SSHException as exc:
            raise FenceError(f"{self.device}: SSH handshake failed within {left:.1f}s: {exc}") from exc
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            # One error per address tried; its own message reads "[Errno None] Unable to connect…".
            why = "; ".join(sorted({getattr(e, "strerror", None) or str(e) for e in exc.errors.values()}))
            raise FenceError(f"{self.device}: cannot connect: {why}") from exc
        except (OSError, EOFError) as exc:
            raise FenceError(f"{self.device}: cannot connect: {str(exc) or type(exc).__name__}") from exc
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise FenceError(f"{self.device}: connection closed right after login")
        try:
            return transport.open_session(timeout=max(until - time.monotonic(), 0.01))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise FenceError(f"{self.device}: logged in, but the session was refused: {exc}") from exc

    def _key(self) -> paramiko.PKey:
        try:
            return paramiko.PKey.from_path(self.key_file)
        except paramiko.PasswordRequiredException as exc:
            raise FenceError(f"{self.device}: key file {self.key_file} is passphrase-protected") from exc
        except (OSError, paramiko.SSHException, ValueError) as exc:
            raise FenceError(f"{self.device}: cannot load key file {self.key_file}: {exc}") from exc


def _wait_exit(channel: paramiko.Channel, until: float) -> _Exit:
    """Wait for the exit status until `until` (monotonic), keeping the tail of the output.

    `status_event.wait` rather than `recv_exit_status()`, which never times out; the event is also set when the
    session closes without a status (exit_status stays -1).
    """
    out, err = bytearray(), bytearray()

    def drain() -> None:
        while channel.recv_ready():
            out.extend(channel.recv(65536))
        while channel.recv_stderr_ready():
            err.extend(channel.recv_stderr(65536))
        del out[:-TAIL_BYTES]
        del err[:-TAIL_BYTES]

    while True:
        left = until - time.monotonic()
        done = channel.status_event.wait(min(max(left, 0.0), POLL))
        drain()
        if done:
            return _Exit(channel.exit_status, bytes(out), bytes(err))
        if left <= 0:
            return _Exit(None, bytes(out), bytes(err))


def from_config(device: SshFence, timeout: float) -> SshFencer:
    return SshFencer(
        host=device.host,
        port=device.port,
        user=device.user,
        key_file=device.key_file,
        known_hosts=device.known_hosts,
        command=device.command,
        timeout=timeout,
    )
