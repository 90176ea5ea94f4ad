"""keepalived's generic notify script: `notify /usr/local/bin/keepalived-arbiter-notify` in keepalived.conf.

keepalived runs it as `keepalived-arbiter-notify TYPE NAME STATE [PRIORITY]` after every state change
(TYPE is INSTANCE or GROUP; STATE is MASTER, BACKUP, FAULT, STOP or DELETED; PRIORITY 0..255, absent for some
GROUP notifications). keepalived neither waits for it nor reads its exit status: it cannot veto anything (the
veto is the track_file gate). Its only job is to tell the agent quickly, so it is stdlib-only and imports as
little as possible; the agent also watches the VIP itself and never depends on this hook arriving.

Protocol: one SOCK_STREAM connection to the agent's Unix socket (`$KEEPALIVED_ARBITER_SOCKET`, else
/run/keepalived-arbiter/agent.sock), one UTF-8 line `NOTIFY TYPE NAME STATE PRIORITY at=SPAWNED\\n` (PRIORITY
left out when keepalived gave none), a half-close, then an optional one-line reply read until EOF; a reply
starting with `ERR` is logged. SPAWNED is when keepalived started this process (monotonic seconds, from the
kernel's record of the process start, 10 ms resolution): hooks for one transition arrive out of order after
their start-up, and the agent orders them by it. An agent older than that field refuses the line; the hook then
sends it again without. The whole exchange is bounded by a short timeout (0.2 s, or
`$KEEPALIVED_ARBITER_NOTIFY_TIMEOUT` seconds, at most 5).

Exit status: 2 for bad arguments (one line on stderr naming the argument), else 0, also when the agent is
absent, refuses, or does not answer in time: that is logged to syslog and never blocks keepalived.
"""

from __future__ import annotations

# `_socket`, not `socket`: the wrapper module imports enum, selectors and more, about 4 ms of a ~22 ms run.
import _socket
import os
import sys
import time

PROG = "keepalived-arbiter-notify"
USAGE = f"usage: {PROG} TYPE NAME STATE [PRIORITY]"
DEFAULT_SOCKET = "/run/keepalived-arbiter/agent.sock"
SOCKET_ENV = "KEEPALIVED_ARBITER_SOCKET"
TIMEOUT_ENV = "KEEPALIVED_ARBITER_NOTIFY_TIMEOUT"
DEFAULT_TIMEOUT = 0.2
MAX_TIMEOUT = 5.0
TYPES = ("INSTANCE", "GROUP")
STATES = ("MASTER", "BACKUP", "FAULT", "STOP", "DELETED")
MAX_NAME = 64
MAX_REPLY = 1024
OLD_AGENT_REFUSAL = "ERR expected TYPE NAME STATE [PRIORITY], got"

EXIT_OK = 0
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad argument; the message names it."""


def _expected(field: str, choices: tuple[str, ...], got: str) -> UsageError:
    return UsageError(f"{field}: expected one of {', '.join(choices)} (got {got!r})")


def parse_args(argv: list[str]) -> str:
    """Validate keepalived's arguments and return the line to send (without the newline)."""
    if len(argv) not in (3, 4):
        raise UsageError(f"arguments: expected TYPE NAME STATE [PRIORITY] (got {len(argv)} arguments)")
    kind, name, state = argv[0], argv[1], argv[2]
    if kind not in TYPES:
        raise _expected("TYPE", TYPES, kind)
    if not name:
        raise UsageError("NAME: must not be empty (got '')")
    if len(name) > MAX_NAME:
        raise UsageError(f"NAME: longer than {MAX_NAME} characters (got {len(name)} characters)")
    if not all(c.isprintable() and not c.isspace() for c in name):
        # Also refuses undecodable bytes (surrogate escapes), so the line is always valid UTF-8.
        raise UsageError(f"NAME: must not contain whitespace or control characters (got {name!r})")
    if state not in STATES:
        raise _expected("STATE", STATES, state)
    fields = ["NOTIFY", kind, name, state]
    if len(argv) == 4:
        priority = argv[3]
        if not (priority.isascii() and priority.isdigit() and len(priority) <= 3 and int(priority) <= 255):
            raise UsageError(f"PRIORITY: expected an integer 0..255 (got {priority!r})")
        fields.append(str(int(priority)))
    return " ".join(fields)


def spawned_at() -> float | None:
    """When this process was forked (by keepalived), on the monotonic clock; None when /proc cannot tell.

    /proc/self/stat's starttime counts clock ticks on the boot-time clock and is rounded down, so the result is
    never later than the real fork, and at most one tick (10 ms) earlier.
    """
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        mono, boot = time.monotonic(), time.clock_gettime(time.CLOCK_BOOTTIME)
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22; the fields after the name start at 3
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, mono - max(0.0, boot - started))


def _timeout() -> float:
    """The total time budget; a bad or absent setting means the default (this hook never refuses to run)."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV, ""))
    except ValueError:
        return DEFAULT_TIMEOUT
    return min(value, MAX_TIMEOUT) if value > 0 else DEFAULT_TIMEOUT


def send(line: str, path: str, timeout: float) -> str:
    """Deliver `line` to the agent and return its reply line ("" if it closed without one).

    Raises OSError (TimeoutError included) when the agent is absent, refuses or is too slow.
    """
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(remaining())
        sock.connect(path)
        sock.settimeout(remaining())
        sock.sendall(line.encode("utf-8") + b"\n")
        sock.shutdown(_socket.SHUT_WR)
        reply = b""
        while b"\n" not in reply and len(reply) < MAX_REPLY:
            sock.settimeout(remaining())
            chunk = sock.recv(MAX_REPLY)
            if not chunk:
                break
            reply += chunk
    except TimeoutError as exc:
        raise TimeoutError(f"no answer within {timeout:g} s") from exc
    finally:
        sock.close()
    return reply.partition(b"\n")[0].decode("utf-8", "replace").strip()


def _log(message: str) -> None:
    """One line to syslog (and stderr, which keepalived discards); failures here are swallowed."""
    # Imported only on this failure path, to keep the normal start-up minimal.
    import contextlib  # noqa: PLC0415
    import syslog  # noqa: PLC0415

    # Logging must never turn into a failure of the hook.
    with contextlib.suppress(Exception):
        syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_WARNING, message)
        syslog.closelog()
    with contextlib.suppress(Exception):
        print(f"{PROG}: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return EXIT_OK
    try:
        line = parse_args(args)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    path = os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    spawned = spawned_at()
    stamped = line if spawned is None else f"{line} at={spawned:.6f}"
    try:
        reply = send(stamped, path, _timeout())
        if reply.startswith(OLD_AGENT_REFUSAL) and stamped != line:
            reply = send(line, path, _timeout())  # an agent from before the spawn time (a rolling upgrade)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        _log(f"agent not told {line!r}: {path}: {reason}")
        return EXIT_OK
    except Exception as exc:  # never fail keepalived's notification for an unforeseen reason
        _log(f"agent not told {line!r}: {type(exc).__name__}: {exc}")
        return EXIT_OK
    if reply.startswith("ERR"):
        _log(f"agent refused {line!r}: {reply}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
