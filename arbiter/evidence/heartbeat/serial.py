"""Heartbeats over a serial line (a null-modem cable between two nodes), with pyserial.

Framing: each frame is one line, `#` + base64 of the signed frame + `\n`. `#` and `\n` are outside the base64
alphabet, so after noise (line glitches, a half-sent frame from a cable re-plugged mid-write) the reader resyncs
at the next `#`; lines longer than a frame can be are dropped. A corrupted frame that still looks like base64 is
refused later by its MAC.

The device is opened with `exclusive=True` (a second agent on the same port would interleave frames). pyserial
only opens, configures and locks the port: reads and writes are non-blocking `os.read`/`os.write` on its fd from
the event loop (`add_reader`/`add_writer`), because pyserial's `write` with `write_timeout=0` spins on EAGAIN.
When the device is not there at start, or vanishes later (EIO, or readable with no data: the cable's other end is
gone, a USB adapter unplugged, socat killed), the medium is down and `LinkKeeper` opens it again with capped
exponential backoff until the path works, possibly as a new pty behind the same link.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import os
from pathlib import Path

import serial
from redis.backoff import ExponentialBackoff

from arbiter.evidence.heartbeat.frame import MAX_FRAME
from arbiter.evidence.heartbeat.transport import FrameQueue, Link, LinkKeeper, MediumCounters

START = b"#"
END = b"\n"
MAX_LINE = len(START) + 4 * ((MAX_FRAME + 2) // 3)
# Unsent bytes kept while the line is slower than the frames (or the other side is not reading): about two
# frames. Older bytes are dropped whole; the receiver resyncs at the next marker.
MAX_PENDING = 2 * (MAX_LINE + 1)


def encode_line(frame: bytes) -> bytes:
    return START + base64.b64encode(frame) + END


class LineFramer:
    """Bytes in (any chunking, any noise), frames out. Counts garbled lines and over-long ones."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.garbled = 0
        self.dropped = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        frames: list[bytes] = []
        while True:
            end = self._buf.find(END)
            if end < 0:
                break
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            frame = self._payload(line)
            if frame is not None:
                frames.append(frame)
        if len(self._buf) > MAX_LINE:
            # No terminator within a frame's length: keep only from the last marker, if it can still be a frame.
            start = self._buf.rfind(START)
            if start < 0 or len(self._buf) - start > MAX_LINE:
                self.dropped += 1
                self._buf.clear()
            else:
                del self._buf[:start]
        return frames

    def _payload(self, line: bytes) -> bytes | None:
        start = line.rfind(START)
        if start < 0:
            return None  # noise between frames: nothing that claimed to be a frame
        text = line[start + len(START) :]
        if len(text) > MAX_LINE:
            self.dropped += 1
            return None
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            self.garbled += 1
            return None


class SerialTransport:
    def __init__(
        self,
        device: str | Path,
        baud: int = 115200,
        *,
        medium: str | None = None,
        backoff_initial: float = 0.05,
        backoff_cap: float = 2.0,
    ) -> None:
        self.device = str(device)
        self.baud = baud
        self._medium = medium or f"serial:{self.device}"
        self.backoff_initial = backoff_initial
        self.backoff_cap = backoff_cap
        self.counters = MediumCounters()
        self._port: serial.Serial | None = None
        self._fd: int | None = None
        self._framer = LineFramer()
        self._pending = bytearray()
        self._frames: FrameQueue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        backoff = ExponentialBackoff(cap=backoff_cap, base=backoff_initial)
        self._keeper = LinkKeeper(self._medium, self._try_open, backoff)
        self._opened_once = False

    @property
    def medium(self) -> str:
        return self._medium

    @property
    def link(self) -> Link:
        return self._keeper.link

    @property
    def last_error(self) -> str:
        return self._keeper.link.reason

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._frames = FrameQueue(self.counters)
        self._keeper.start()

    def _try_open(self) -> str | None:
        assert self._loop is not None
        try:
            # timeout=0: never block; exclusive: a second process on the same port is refused (flock).
            port = serial.Serial(self.device, self.baud, timeout=0, write_timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            return str(exc)
        assert port.fd is not None
        self._port, self._fd = port, port.fd
        self._framer = LineFramer()  # a half line from before the loss is garbage now
        self._pending.clear()
        if self._opened_once:
            self.counters.reopened += 1
        self._opened_once = True
        self._loop.add_reader(port.fd, self._on_readable)
        return None

    def _on_readable(self) -> None:
        assert self._fd is not None and self._frames is not None
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(f"read failed: {exc.strerror}")
            return
        if not chunk:
            self._lost("readable but no data: device disconnected")
            return
        garbled, dropped = self._framer.garbled, self._framer.dropped
        for frame in self._framer.feed(chunk):
            self._frames.put(frame)
        self.counters.garbled += self._framer.garbled - garbled
        self.counters.dropped += self._framer.dropped - dropped

    def send(self, frame: bytes) -> None:
        if self._fd is None:
            self.counters.send_errors["closed"] += 1
            return
        line = encode_line(frame)
        if len(self._pending) + len(line) > MAX_PENDING:
            self.counters.send_errors["overflow"] += 1
            self._pending.clear()
        self._pending += line
        self.counters.sent += 1
        self._flush()

    def _flush(self) -> None:
        if self._fd is None:
            return
        assert self._loop is not None
        try:
            while self._pending:
                written = os.write(self._fd, self._pending)
                del self._pending[:written]
        except BlockingIOError:
            self._loop.add_writer(self._fd, self._flush)
            return
        except OSError as exc:
            self.counters.send_errors[errno.errorcode.get(exc.errno or 0, "OSError")] += 1
            self._lost(f"write failed: {exc.strerror}")
            return
        self._loop.remove_writer(self._fd)

    def _lost(self, why: str) -> None:
        self.counters.lost += 1
        self._close_port()
        if self._loop is not None:
            self._keeper.lost(why)

    def _close_port(self) -> None:
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        if self._port is not None:
            # Closing a vanished device may fail; the fd is gone either way.
            with contextlib.suppress(serial.SerialException, OSError):
                self._port.close()
        self._port, self._fd = None, None
        self._pending.clear()

    async def receive(self) -> bytes:
        if self._frames is None:
            raise RuntimeError(f"{self.medium}: receive() before open()")
        return await self._frames.get()

    def close(self) -> None:
        self._keeper.cancel()
        self._close_port()
