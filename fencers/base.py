"""The driver interface every STONITH driver implements, and the hard deadline it runs its calls under.

Drivers are synchronous (pyghmi, paramiko and subprocess all block); the orchestrator runs them in threads.
Each driver call is bounded by its own deadline (`within`), because the libraries have none that holds:
pyghmi can wait forever for a silent BMC, paramiko's `timeout` covers the connect only. A caller may shorten
that bound per call (`timeout=`: what is left of a fence level's one deadline); a call past its bound is
*stopped* by the driver (worker process or agent killed, SSH command never sent), never left running, so
nothing reaches a device after the caller has given up on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from arbiter.model import Power

T = TypeVar("T")


class FenceError(Exception):
    """A driver could not do what was asked; the message is for the operator (device, what failed, why)."""


@runtime_checkable
class Fencer(Protocol):
    """One fencing device (a BMC, an SSH login, a PDU outlet…) that can act on one node."""

    driver: str  # registry name: "ipmi", "ssh", "agent"
    device: str  # human name of the device, e.g. "ipmi 10.0.9.12:623"
    # False when the device cannot read power (SSH): OFF must then be proven by another level or by silence.
    observes_power: bool

    # `timeout`: seconds this call may take at most (None: the driver's own timeout); past it the call is stopped.

    def power_off(self, target: str, timeout: float | None = None) -> None:
        """Send power-off; returns once the device accepted (or, for SSH, dispatched) it. Raises FenceError."""

    def power_on(self, target: str, timeout: float | None = None) -> None:
        """Send power-on. Raises FenceError."""

    def status(self, target: str, timeout: float | None = None) -> Power:
        """The power state as the device reads it now; UNKNOWN on any failure or timeout. Never raises."""

    def check(self, target: str) -> str:
        """Log in and read what can be read without touching power; a one-line summary. Raises FenceError."""


def within(seconds: float, what: str, call: Callable[[], T]) -> T:
    """Run `call` in a daemon thread and give up after `seconds` with a FenceError naming `what`.

    A call that hangs is abandoned, not killed (Python threads cannot be): its thread keeps its socket until the
    library gives up on its own. Only silent devices leave such threads behind, and each one leaves one.
    """
    box: dict[str, object] = {}
    done = threading.Event()

    def body() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=body, name=f"fence: {what}", daemon=True).start()
    if not done.wait(seconds):
        raise FenceError(f"{what}: no answer within {seconds:g}s")
    if "error" in box:
        error = box["error"]
        if isinstance(error, FenceError):
            raise error
        raise FenceError(f"{what}: {type(error).__name__}: {error}") from error  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def read_password(path: Path, what: str) -> bytes:
    """The secret in `path` as bytes, without its trailing newline; FenceError naming `what` and the file."""
    try:
        secret = path.read_bytes()
    except OSError as exc:
        raise FenceError(f"{what}: cannot read password_file {path}: {exc.strerror or exc}") from exc
    return secret.rstrip(b"\r\n")
