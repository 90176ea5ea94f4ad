"""keepalived's state changes as they reach the agent: the notify hook's Unix socket and `vrrp_notify_fifo`.

This module owns the agent's end of both channels: the line protocol the hook speaks (hooks/notify.py), its
validation and replies, who may use the socket, and the reading of keepalived's FIFO. Both deliver the same
event to a callback: `on_event(kind, name, state, priority, at, sent_at)`, kind "INSTANCE" or "GROUP", `at` the
monotonic time the line was read, `sent_at` the time keepalived spawned the hook (the hook's `at=` word, never
later than `at`; None from the FIFO and from a hook that sent none): hooks arrive out of order, and only their
spawn times tell which is newer (arbiter.agent.kstate). keepalived's DELETED (the instance left the
configuration on a reload) is delivered as VrrpState.STOP: either way keepalived no longer runs the instance.

The socket is the agent's only local API, so requests are dispatched by their first word; NOTIFY is the first
verb, STATUS and others are added with `add_verb`. Access is checked twice. The file's mode lets only the owner
(0600), or also the configured group (0660), connect. Then SO_PEERCRED names the connecting process's uid:
privileged verbs (NOTIFY: a forged "MASTER" would mislead the policy) are refused to any uid other than root
(keepalived runs the hook as root) and the agent's own; unprivileged ones are open to whoever could connect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import grp
import inspect
import logging
import os
import re
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from arbiter.model import VrrpState

log = logging.getLogger(__name__)

OnEvent = Callable[[str, str, VrrpState, int | None, float, float | None], None]
# A verb's handler gets the words after the verb and the receive time; it returns the reply line (no newline).
Handler = Callable[[Sequence[str], float], str | Awaitable[str]]

TYPES = ("INSTANCE", "GROUP")
STATES = {
    "MASTER": VrrpState.MASTER,
    "BACKUP": VrrpState.BACKUP,
    "FAULT": VrrpState.FAULT,
    "STOP": VrrpState.STOP,
    "DELETED": VrrpState.STOP,
}
MAX_NAME = 64
SENT_PREFIX = "at="  # the hook's last word: its spawn time in monotonic seconds
SENT_TIME = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
MAX_LINE = 1024  # the longest valid NOTIFY line is about 100 bytes
READ_TIMEOUT = 2.0  # a client that connects and says nothing must not hold a task forever


class BadRequestError(ValueError):
    """A request line the agent refuses; the message is the reason sent back after `ERR `."""


def parse_event(words: Sequence[str]) -> tuple[str, str, VrrpState, int | None]:
    """TYPE NAME STATE [PRIORITY] → (kind, name, state, priority); BadRequestError naming the bad field."""
    if len(words) not in (3, 4):
        raise BadRequestError(f"expected TYPE NAME STATE [PRIORITY], got {len(words)} fields")
    kind, name, state = words[0], words[1], words[2]
    if kind not in TYPES:
        raise BadRequestError(f"TYPE: expected one of {', '.join(TYPES)}")
    if not name or len(name) > MAX_NAME or not all(c.isprintable() and not c.isspace() for c in name):
        raise BadRequestError(f"NAME: 1..{MAX_NAME} printable characters without spaces")
    if state not in STATES:
        raise BadRequestError(f"STATE: expected one of {', '.join(STATES)}")
    priority: int | None = None
    if len(words) == 4:
        text = words[3]
        if not (text.isascii() and text.isdigit() and len(text) <= 3 and int(text) <= 255):
            raise BadRequestError("PRIORITY: expected an integer 0..255")
        priority = int(text)
    return kind, name, STATES[state], priority


def parse_sent(text: str) -> float:
    """The hook's spawn time (seconds on the monotonic clock, which every process on the host shares)."""
    if SENT_TIME.fullmatch(text) is None:
        raise BadRequestError(f"{SENT_PREFIX}: expected the hook's spawn time in monotonic seconds")
    return float(text)


@dataclass(frozen=True)
class _Verb:
    handler: Handler
    privileged: bool


class NotifyServer:
    """The agent's Unix stream socket: one request line per connection, one reply line, then close."""

    def __init__(self, path: Path, on_event: OnEvent, group: str | None = None) -> None:
        self.path = Path(path)
        self.on_event = on_event
        self.group = group
        self.accepted = 0
        self.refused: collections.Counter[str] = collections.Counter()
        self._verbs: dict[str, _Verb] = {}
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._trusted = {0, os.geteuid()}
        self.add_verb("NOTIFY", self._notify, privileged=True)

    def add_verb(self, verb: str, handler: Handler, *, privileged: bool) -> None:
        """Answer requests whose first word is `verb`; privileged ones only from root or the agent's own uid."""
        self._verbs[verb] = _Verb(handler, privileged)

    async def start(self) -> None:
        """Listen on `path`. Raises OSError when another agent answers there, the path is not a socket, or
        the group does not exist."""
        gid = self._gid()
        # 0755: keepalived's hook (root) and the group's members must be able to reach the socket inside.
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        await self._clear_stale()
        # Bound with the process umask and narrowed just after: in that instant a connection is still subject
        # to the uid check below, so the window cannot deliver a privileged request.
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        try:
            if gid is not None:
                os.chown(self.path, -1, gid)
            os.chmod(self.path, 0o660 if gid is not None else 0o600)
            self._inode = self.path.stat().st_ino
        except OSError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening and remove the socket file (only if it is still the one this server created)."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()

    # --- connections ------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._answer(reader, writer)
            writer.write(reply.encode("utf-8", "replace") + b"\n")
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (OSError, TimeoutError):
            pass  # the client went away before its answer: nothing left to tell it
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), READ_TIMEOUT)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        try:
            raw = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
        except TimeoutError:
            return self._refuse("timeout", "no request line in time")
        except ValueError:  # asyncio's LimitOverrunError (the line is longer than MAX_LINE) is a ValueError
            return self._refuse("too_long", f"request longer than {MAX_LINE} bytes")
        at = time.monotonic()
        try:
            line = raw.decode("utf-8").rstrip("\n")
        except UnicodeDecodeError:
            return self._refuse("encoding", "request is not UTF-8")
        words = line.split(" ")
        if not line or "" in words or line != line.strip():
            return self._refuse("syntax", "expected words separated by single spaces")
        verb = self._verbs.get(words[0])
        if verb is None:
            return self._refuse("verb", f"unknown verb {words[0][:16]!r}; known: {', '.join(sorted(self._verbs))}")
        if verb.privileged:
            uid = _peer_uid(writer.get_extra_info("socket"))
            if uid not in self._trusted:
                return self._refuse("uid", f"{words[0]} refused to uid {uid}")
        try:
            reply = verb.handler(words[1:], at)
            if inspect.isawaitable(reply):
                reply = await reply
        except BadRequestError as exc:
            return self._refuse(words[0].lower(), str(exc))
        except Exception as exc:
            log.exception("notify: %s failed", words[0])
            return self._refuse("internal", f"{words[0]} failed in the agent: {type(exc).__name__}")
        self.accepted += 1
        return str(reply)

    def _refuse(self, reason: str, detail: str) -> str:
        self.refused[reason] += 1
        log.warning("notify socket: refused (%s): %s", reason, detail)
        return f"ERR {detail}"

    def _notify(self, words: Sequence[str], at: float) -> str:
        sent_at = None
        if words and words[-1].startswith(SENT_PREFIX):
            sent_at = min(parse_sent(words[-1][len(SENT_PREFIX) :]), at)
            words = words[:-1]
        kind, name, state, priority = parse_event(words)
        self.on_event(kind, name, state, priority, at, sent_at)
        return "OK"

    # --- the socket file --------------------------------------------------------------------------------

    def _gid(self) -> int | None:
        if self.group is None:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise OSError(errno.EINVAL, f"notify socket: no such group {self.group!r}", str(self.path)) from None

    async def _clear_stale(self) -> None:
        """Remove a socket file left by a previous run; refuse to touch a live agent's socket or any other file."""
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise OSError(errno.EEXIST, "exists and is not a socket; not replacing it", str(self.path))
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path)), 1.0)
        except (ConnectionRefusedError, FileNotFoundError):
            self.path.unlink(missing_ok=True)  # nobody listens: a stale file from a run that ended
            return
        except (OSError, TimeoutError) as exc:
            raise OSError(errno.EADDRINUSE, f"cannot tell whether the socket is in use: {exc}", str(self.path)) from exc
        writer.close()
        raise OSError(
            errno.EADDRINUSE, "another process answers on this socket (agent already running?)", str(self.path)
        )


def _peer_uid(sock: socket.socket | None) -> int | None:
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


# --- vrrp_notify_fifo --------------------------------------------------------------------------------------

FIFO_LINE = re.compile(r'^(INSTANCE|GROUP) "([^"]*)" ([A-Z_]+)(?: (\d{1,3}))?$')
MAX_PENDING = 64 * 1024  # a writer that never ends its line must not grow the buffer without bound


class NotifyFifo:
    """keepalived's `vrrp_notify_fifo`: one line per state change, in order, no process spawned.

    Lines are `INSTANCE "VI_1" MASTER 150` or `GROUP "G1" BACKUP`; other lines keepalived writes there (e.g.
    `MASTER_RX_LOWER_PRI`, or the checker's) are counted in `ignored` and otherwise skipped.
    """

    def __init__(self, path: Path, on_event: OnEvent) -> None:
        self.path = Path(path)
        self.on_event = on_event
        self.accepted = 0
        self.ignored = 0
        self._fd: int | None = None
        self._pending = b""
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Create the FIFO if absent (keepalived uses an existing one) and read it from the running loop.

        Raises OSError when the path exists and is not a FIFO, or cannot be opened.
        """
        loop = asyncio.get_running_loop()
        try:
            os.mkfifo(self.path, 0o600)
        except FileExistsError:
            if not stat.S_ISFIFO(self.path.stat().st_mode):
                raise OSError(errno.EEXIST, "notify fifo: exists and is not a FIFO", str(self.path)) from None
        # O_RDWR: the open never waits for a writer, and this end keeps one, so a keepalived restart is not EOF.
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._loop = loop
        loop.add_reader(self._fd, self._on_readable)

    def stop(self) -> None:
        """Stop reading; the FIFO stays (keepalived may have it open)."""
        if self._fd is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = None

    def _on_readable(self) -> None:
        at = time.monotonic()
        while self._fd is not None:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("notify fifo %s: read failed: %s", self.path, exc)
                return
            if not chunk:
                return
            self._pending += chunk
            *lines, self._pending = self._pending.split(b"\n")
            if len(self._pending) > MAX_PENDING:
                self.ignored += 1
                self._pending = b""
            for line in lines:
                self.feed(line.decode("utf-8", "replace"), at)

    def feed(self, line: str, at: float) -> bool:
        """Handle one line (without its newline) read at `at`; True when it was a state change."""
        match = FIFO_LINE.match(line.rstrip("\r"))
        if match is None:
            self.ignored += 1
            return False
        kind, name, state, priority = match.groups()
        try:
            event = parse_event([kind, name, state, priority] if priority is not None else [kind, name, state])
        except BadRequestError:
            self.ignored += 1  # e.g. MASTER_RX_LOWER_PRI, or a name the hook would refuse too
            return False
        self.accepted += 1
        try:
            self.on_event(*event, at, None)
        except Exception:
            # The consumer's bug must not stop the reader: later lines would be lost with it.
            log.exception("notify fifo %s: on_event failed", self.path)
        return True
