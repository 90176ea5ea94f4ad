"""Network namespaces for the agent's integration tests, and threads that live inside one.

Namespaces get a prefix unique to this test run (`kag<pid>x`) and are removed by name in `finally`; processes
a test starts are killed by PID (arbiter.lab.netns), never by pattern.

`NsThread` runs an asyncio loop in a thread that joined a namespace with setns(2): a socket created there
(netlink, raw IP, AF_PACKET) belongs to that namespace, and interface names resolve there, exactly as they do
for an agent started inside the namespace. Only that thread moves; the test process stays where it was.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

from arbiter.lab import netns

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
PREFIX = f"kag{os.getpid()}x"
_libc = ctypes.CDLL(None, use_errno=True)
_count = 0


def ns_name(role: str) -> str:
    """A namespace name unique to this run and call (names are limited to what `ip netns` accepts)."""
    global _count  # noqa: PLW0603 -- a per-process counter is all the uniqueness needed
    _count += 1
    return f"{PREFIX}{_count}{role}"


@contextmanager
def namespaces(*roles: str) -> Iterator[list[str]]:
    """Create one namespace per role (lo up) and delete them all by name afterwards, also on failure."""
    names: list[str] = []
    try:
        for role in roles:
            name = ns_name(role)
            names.append(name)
            netns.add_namespace(name)
        yield names
    finally:
        for name in names:
            netns.delete_namespace(name)


def enter(ns: str) -> None:
    """Move the calling thread into network namespace `ns`."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


class NsThread:
    """An asyncio loop running in a thread inside network namespace `ns`."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"ns-{ns}", daemon=True)
        self._thread.start()
        self._ready.wait(5)
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            enter(self.ns)
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        asyncio.set_event_loop(self.loop)
        self._ready.set()
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run `coro` on the namespace's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Call a plain function inside the namespace (on the loop's thread, so it blocks that loop meanwhile)."""

        async def call() -> T:
            return fn(*args)

        return self.run(call(), timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()

    def __enter__(self) -> NsThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NsWorker:
    """A plain thread inside network namespace `ns` that runs blocking calls one at a time (no event loop:
    libraries that start their own loop, like pyroute2's sync IPRoute, work there)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name=f"nsw-{ns}", daemon=True)
        self._entered: Future[None] = Future()
        self._thread.start()
        self._entered.result(5)

    def _main(self) -> None:
        try:
            enter(self.ns)
        except OSError as exc:
            self._entered.set_exception(exc)
            return
        self._entered.set_result(None)
        while (job := self._jobs.get()) is not None:
            fn, done = job
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the caller, who re-raises it
                done.set_exception(exc)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        done: Future[T] = Future()
        self._jobs.put((lambda: fn(*args), done))
        return done.result(timeout)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(5)

    def __enter__(self) -> NsWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
