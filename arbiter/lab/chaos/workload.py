"""The chaos workload: what a split brain does to data, measured.

Three small programs, each run as `python -m arbiter.lab.chaos.workload ROLE ...` inside a lab namespace, each
writing one JSON line per event to a file the runner reads back at the end:

- `service` (on every node, started at every boot): accepts `W <value>` lines on TCP port `SERVICE_PORT` (so on
  the VIP of whichever node holds it) and stores the value in the lab's data store (`STORE_PORT` in the witness
  namespace, a Redis apart from the lease witness, so that a witness fault never erases the data being judged).
  With the arbiter it asks its agent for the fencing token before every write (`TOKEN VI_1` on the agent's socket,
  as `keepalived-arbiter token` does) and writes only with it, through `STORE_SCRIPT`: the store refuses a token
  lower than the highest it has accepted (README, "Carrying the token into your data"), never retried, and
  answered within the token's validity or dropped (`Store`). Without the arbiter it
  writes with token 0, which the script always accepts: what keepalived alone gives a service. It answers
  `OK <node> <token>` or `NO <node> <reason>`.
- `client` (in the client namespace): one write every `interval` s to the first VIP, each with a unique
  increasing value, on one TCP connection re-opened after any error or a reply later than `REPLY_TIMEOUT`. Its
  file holds every write's outcome: `ok` (acknowledged), `no` (refused), `err` (no answer).
- `leases` (in the witness namespace): reads the witness's lease of every instance every `LEASE_POLL` s and
  writes each change of holder or token (and when the witness stops or starts answering, or answers late),
  stamped with the host's wall clock when the answer came (the store stamps its writes with the same clock).

Stored writes are `STORE_KEY` list entries `<value> <node> <token> <seconds.micros>`.
"""

from __future__ import annotations

import json
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from arbiter import statusview

SERVICE_PORT = 7100
STORE_PORT = 6380
STORE_KEY = "chaos:writes"
TOKEN_KEY = "chaos:token"
REPLY_TIMEOUT = 0.5  # s: the client gives up on a write after this
TOKEN_TIMEOUT = 0.2  # s: the service's wait for its agent's TOKEN answer
STORE_TIMEOUT = 0.3  # s: the service's wait for the store
LEASE_POLL = 0.01  # s
SLOW_POLL = 0.05  # s: a poll answered later than this leaves its stretch unknown

# The README's Redis recipe, appending the write instead of setting one key: refuse a token below the highest
# accepted, then record the write with the store's clock. KEYS[1] token, KEYS[2] writes; ARGV token, record.
STORE_SCRIPT = """
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) < seen then return redis.error_reply('stale token ' .. ARGV[1] .. ' < ' .. seen) end
redis.call('SET', KEYS[1], ARGV[1])
local now = redis.call('TIME')
redis.call('RPUSH', KEYS[2], ARGV[2] .. ' ' .. now[1] .. '.' .. string.format('%06d', tonumber(now[2])))
return 'OK'
"""

# Every instance's lease as the witness holds it, in one step: {holder, token, issued} per instance.
LEASE_SCRIPT = """
local out = {}
for i = 1, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[i]) or ''
end
return out
"""


def lease_keys(cluster: str, instance: str) -> tuple[str, str, str]:
    """The witness's holder, token and highest-issued-token keys of one instance (arbiter/evidence/lease.py's
    layout)."""
    base = f"keepalived-arbiter:{{{cluster}:{instance}}}"
    return f"{base}:lease", f"{base}:lease-token", f"{base}:token"


# --- what the runner reads back ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One write as the client saw it."""

    value: int
    t: float  # wall-clock second it was sent
    outcome: str  # "ok", "no" or "err"
    node: str  # who answered ("" for err)
    token: int | None
    why: str = ""


@dataclass(frozen=True)
class Stored:
    """One write the store accepted."""

    value: int
    node: str
    token: int
    t: float  # the store's wall clock at acceptance


@dataclass(frozen=True)
class LeaseSeen:
    """The witness's lease of one instance from `t` (the host's wall clock at the answer) on; `up` False: the
    witness did not answer (or answered late), so the lease is unknown from `t`."""

    t: float
    instance: str
    holder: str  # "" when free
    token: int | None
    up: bool = True
    issued: int | None = None  # the highest token the witness remembers issuing (None: it remembers none)


def read_writes(path: Path) -> list[Write]:
    out = []
    for obj in _json_lines(path):
        out.append(
            Write(
                int(obj["v"]),
                float(obj["t"]),
                str(obj["r"]),
                str(obj.get("node", "")),
                obj.get("token"),
                obj.get("why", ""),
            )
        )
    return out


def parse_stored(entries: Sequence[str]) -> list[Stored]:
    out = []
    for entry in entries:
        value, node, token, t = entry.split()
        out.append(Stored(int(value), node, int(token), float(t)))
    return out


def read_leases(path: Path) -> list[LeaseSeen]:
    out = []
    for obj in _json_lines(path):
        token = obj.get("token")
        issued = obj.get("issued")
        out.append(
            LeaseSeen(float(obj["t"]), str(obj["instance"]), str(obj.get("holder", "")), token, bool(obj["up"]), issued)
        )
    return out


def _json_lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(obj, dict):
            found.append(obj)
    return found


# --- the programs ------------------------------------------------------------------------------------------


class _Log:
    """JSON lines to a file, flushed every second and at exit (a write per line would cost the loop)."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self._flushed = time.monotonic()

    def add(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")
            if time.monotonic() - self._flushed > 1.0:
                self._file.flush()
                self._flushed = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _stop_on_sigterm(stop: threading.Event) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())


def _ask_token(agent_socket: str, instance: str) -> tuple[int | None, float, str]:
    """This node's token from its agent and for how long it stays valid (None and the reason when it gives none)."""
    try:
        answer = statusview.ask(Path(agent_socket), f"TOKEN {instance}", TOKEN_TIMEOUT)
    except statusview.StatusError as exc:
        return None, 0.0, f"agent: {exc}"
    token = answer.get("token")
    if token is None:
        return None, 0.0, str(answer.get("reason"))
    return int(token), float(answer.get("valid_s") or 0.0), ""


class StoreError(Exception):
    """The store refused the write (its error reply, e.g. a stale token)."""


class Store:
    """The data store, spoken to directly (RESP over TCP, one command per write), because a write must never
    outlive its token: each write has a deadline, and on a timeout or error the connection is reset (SO_LINGER 0:
    the kernel drops what it has not delivered). redis-py retries a timed-out command on a new connection and
    closes gracefully, so the kernel delivers the first attempt when the network heals: chaos found writes stored
    15 and 26 s after the client had given up, with a token whose lease had run out meanwhile."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.sock: socket.socket | None = None
        self.buffer = b""

    def eval(self, script: str, keys: Sequence[str], args: Sequence[str], deadline: float) -> str:
        """Run `script` once; the reply's text. StoreError for an error reply, OSError past `deadline` (monotonic)
        or on any failure (the connection is then reset)."""
        words = [b"EVAL", script.encode(), str(len(keys)).encode(), *(k.encode() for k in keys)]
        words += [a.encode() for a in args]
        request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
        try:
            sock = self._connected(deadline)
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.sendall(request)
            line = self._line(sock, deadline)
            if line.startswith(b"-"):
                raise StoreError(line[1:].decode("utf-8", "replace"))
            if line.startswith(b"$"):
                return self._line(sock, deadline).decode("utf-8", "replace")
            return line[1:].decode("utf-8", "replace")
        except OSError:
            self.reset()
            raise

    def _connected(self, deadline: float) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                sock.connect(self.address)
            except OSError:
                sock.close()
                raise
            self.sock, self.buffer = sock, b""
        return self.sock

    def _line(self, sock: socket.socket, deadline: float) -> bytes:
        while b"\r\n" not in self.buffer:
            if time.monotonic() >= deadline:
                raise TimeoutError("store: no answer before the write's deadline")
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("store: connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def reset(self) -> None:
        if self.sock is not None:
            self.sock.close()  # SO_LINGER 0: a reset, unsent bytes dropped
            self.sock = None


def service(node: str, agent_socket: str, store_host: str, instance: str) -> int:
    """Serve writes until SIGTERM (see the module docstring). `agent_socket` "-": no arbiter, token 0.

    A write is sent to the store only with a token, and must be answered while the token is valid (`valid_s` of
    the agent's answer, at most `STORE_TIMEOUT`); it is never retried: a write that may arrive later than its
    token is the late write fencing tokens exist for."""
    lock = threading.Lock()  # one connection to the store, one write at a time
    store = Store(store_host, STORE_PORT)

    def handle(value: str) -> str:
        token, valid = 0, STORE_TIMEOUT
        if agent_socket != "-":
            asked, valid, why = _ask_token(agent_socket, instance)
            if asked is None:
                return f"NO {node} {why}"
            token = asked
        with lock:
            deadline = time.monotonic() + min(STORE_TIMEOUT, valid)
            try:
                store.eval(STORE_SCRIPT, [TOKEN_KEY, STORE_KEY], [str(token), f"{value} {node} {token}"], deadline)
            except (OSError, StoreError) as exc:
                return f"NO {node} store: {str(exc)[:80]}"
        return f"OK {node} {token}"

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for raw in self.rfile:
                words = raw.decode("ascii", "replace").split()
                if len(words) != 2 or words[0] != "W" or not words[1].isdigit():
                    self.wfile.write(f"NO {node} bad request\n".encode())
                    continue
                self.wfile.write((handle(words[1]) + "\n").encode())

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("0.0.0.0", SERVICE_PORT), Handler) as server:
        stop = threading.Event()
        _stop_on_sigterm(stop)
        threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
        stop.wait()
        server.shutdown()
    return 0


def client(vip: str, interval: float, out: str) -> int:
    """Write to the VIP every `interval` s until SIGTERM (see the module docstring)."""
    log = _Log(out)
    stop = threading.Event()
    _stop_on_sigterm(stop)
    sock: socket.socket | None = None
    value = 0
    while not stop.is_set():
        began = time.monotonic()
        value += 1
        sent = time.time()
        record: dict[str, Any] = {"v": value, "t": round(sent, 6)}
        try:
            if sock is None:
                sock = socket.create_connection((vip, SERVICE_PORT), timeout=REPLY_TIMEOUT)
            sock.settimeout(REPLY_TIMEOUT)
            sock.sendall(f"W {value}\n".encode())
            reply = _read_line(sock)
            words = reply.split(None, 2)
            if len(words) >= 2 and words[0] == "OK":
                record.update(r="ok", node=words[1], token=int(words[2]) if len(words) > 2 else None)
            elif len(words) >= 2 and words[0] == "NO":
                record.update(r="no", node=words[1], why=words[2] if len(words) > 2 else "")
            else:
                raise OSError(f"bad reply {reply[:40]!r}")
        except OSError as exc:
            record.update(r="err", why=str(exc)[:80])
            if sock is not None:
                sock.close()
                sock = None
        log.add(record)
        stop.wait(max(0.0, interval - (time.monotonic() - began)))
    log.close()
    return 0


def _read_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(256)
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data.decode("ascii", "replace").strip()


def leases(cluster: str, instances: Sequence[str], out: str, sentinel: int | None = None) -> int:
    """Log every change of the witness's leases until SIGTERM (see the module docstring). With `sentinel` (a
    sentinel's port), read the Redis that sentinel names master at each poll, as the agents follow it.

    Every call is tried once (redis-py's default retries blocked a poll for seconds on a dead master, and the old
    answer stood for all that time). A poll answered later than `SLOW_POLL` after it began leaves its stretch
    unknown: `up` False from its start, then the answer."""
    import redis  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.retry import Retry  # noqa: PLC0415

    log = _Log(out)
    stop = threading.Event()
    _stop_on_sigterm(stop)
    options: dict[str, Any] = {
        "socket_timeout": 0.2,
        "socket_connect_timeout": 0.2,
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 0),
    }
    servers: dict[int, Any] = {}
    asker = None if sentinel is None else redis.Redis(port=sentinel, **options)
    keys = [k for name in instances for k in lease_keys(cluster, name)]
    last: dict[str, tuple[str, int | None, bool, int | None]] = {}

    def unknown(since: float) -> None:
        for name in instances:
            if last.get(name, ("", None, True, None))[2]:
                last[name] = ("", None, False, None)
                log.add({"t": round(since, 6), "instance": name, "up": False})

    while not stop.wait(LEASE_POLL):
        began = time.time()
        try:
            port = 6379
            if asker is not None:
                found = asker.sentinel_get_master_addr_by_name("arbiter")
                if not isinstance(found, tuple):
                    raise ValueError(f"no master from the sentinel: {found!r}")
                port = int(found[1])
            if port not in servers:
                servers[port] = redis.Redis(port=port, **options).register_script(LEASE_SCRIPT)
            answer = servers[port](keys=keys)
        except (redis.RedisError, TypeError, IndexError, ValueError):
            unknown(began)
            continue
        at = time.time()
        if at - began > SLOW_POLL:
            unknown(began)
        for i, name in enumerate(instances):
            holder, token, issued = answer[3 * i : 3 * i + 3]
            now = (holder, _int(token), True, _int(issued))
            if last.get(name) != now:
                last[name] = now
                log.add(
                    {
                        "t": round(at, 6),
                        "instance": name,
                        "holder": holder,
                        "token": now[1],
                        "up": True,
                        "issued": now[3],
                    }
                )
    log.close()
    return 0


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def main(argv: Sequence[str]) -> int:
    role, *args = argv
    if role == "service" and len(args) == 4:
        return service(*args)
    if role == "client" and len(args) == 3:
        return client(args[0], float(args[1]), args[2])
    if role == "leases" and len(args) >= 4:
        return leases(args[0], args[3:], args[1], None if args[2] == "-" else int(args[2]))
    print(
        "usage: workload service NODE AGENT_SOCKET|- STORE_HOST INSTANCE | client VIP INTERVAL OUT | "
        "leases CLUSTER OUT SENTINEL_PORT|- INSTANCE...",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
