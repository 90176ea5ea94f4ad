"""The Redis lease of each VRRP instance, its fencing token, and the state file of the highest token seen.

This module owns the key layout in Redis, the Lua scripts that acquire, renew, release and read a lease
atomically, the client's timeouts (every call answers within `lease.timeout_ms`; any error or silence is
`LeaseStatus.UNKNOWN`), and `tokens.json` in the node's state directory.

Tokens never go backwards: a fresh acquisition issues `max(counter, seed, Redis TIME in ms) + 1`, where the
seed is the highest token this node has seen (its own, a peer's, or the persisted one). The counter covers a
Redis that kept its data, TIME a Redis restarted empty whose newest token no node saw, and the seed a Redis
restarted empty whose clock is behind the tokens the nodes saw.

Keys of one instance share a hash tag (one Cluster slot): `keepalived-arbiter:{CLUSTER:INSTANCE}:lease`
(holder, PX ttl), `…:lease-token` (its token, same PX) and `…:token` (the highest token issued, never
expires). `LeaseStore.renew_many` renews several instances in one script call, so the store is one Redis
(or a Sentinel-managed master), never a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from arbiter.config import Config
from arbiter.model import LeaseStatus, LeaseView

log = logging.getLogger(__name__)

# Lua numbers are doubles: larger tokens would lose their last digits inside the scripts.
MAX_TOKEN = 2**53 - 1
TOKEN_FILE_NAME = "tokens.json"
TOKEN_FILE_VERSION = 1
# RESP2 explicitly: redis-py 8 defaults to RESP3, and the scripts' replies read the same under both anyway.
PROTOCOL = 2
# Connections to a plain Redis: enough for renewals of many instances in flight at once.
CONNECTIONS = 8

# Every script answers {status, holder, token, pttl}; for "free" the token is the highest one issued so far,
# so a node reading a free lease still learns the seed it must exceed.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {'mine', holder, redis.call('GET', KEYS[2]), tonumber(ARGV[2])}
end
if holder then
  return {'peer', holder, redis.call('GET', KEYS[2]), redis.call('PTTL', KEYS[1])}
end
local now = redis.call('TIME')
local clock = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local counter = tonumber(redis.call('GET', KEYS[3]) or '0')
if counter == nil then
  return redis.error_reply('ARBITER token counter ' .. KEYS[3] .. ' is not a number')
end
local issued = string.format('%d', math.max(counter, tonumber(ARGV[3]), clock) + 1)
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
redis.call('SET', KEYS[2], issued, 'PX', ARGV[2])
redis.call('SET', KEYS[3], issued)
return {'mine', ARGV[1], issued, tonumber(ARGV[2])}
"""

# Renews every lease whose three keys are passed (one reply per lease): the agent renews the instances that
# are due in the same tick with one call, so 10,000 instances cost far fewer round trips than renewals.
_RENEW = """
local replies = {}
for i = 1, #KEYS, 3 do
  local holder = redis.call('GET', KEYS[i])
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[2])
    replies[#replies + 1] = {'mine', holder, redis.call('GET', KEYS[i + 1]), tonumber(ARGV[2])}
  elseif holder then
    replies[#replies + 1] = {'peer', holder, redis.call('GET', KEYS[i + 1]), redis.call('PTTL', KEYS[i])}
  else
    replies[#replies + 1] = {'free', false, redis.call('GET', KEYS[i + 2]), -2}
  end
end
return replies
"""

_RELEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {'free', false, redis.call('GET', KEYS[3]), -2}
end
if holder then
  return {'peer', holder, redis.call('GET', KEYS[2]), redis.call('PTTL', KEYS[1])}
end
return {'free', false, redis.call('GET', KEYS[3]), -2}
"""

_READ = """
local holder = redis.call('GET', KEYS[1])
if holder then
  local status = 'peer'
  if holder == ARGV[1] then status = 'mine' end
  return {status, holder, redis.call('GET', KEYS[2]), redis.call('PTTL', KEYS[1])}
end
return {'free', false, redis.call('GET', KEYS[3]), -2}
"""


class LeaseError(Exception):
    """A lease store that cannot be set up as configured; the message names the file or key at fault."""


class TokenFileError(LeaseError):
    pass


# --- the state file --------------------------------------------------------------------------------------


def parse_tokens(text: str, source: str) -> dict[str, int]:
    """`{"version": 1, "tokens": {"VI_1": 41}}` → `{"VI_1": 41}`; anything else is refused, naming `source`.

    Refused rather than read as 0: a forgotten highest token could let a token go backwards.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TokenFileError(f"{source}: not valid JSON ({exc}); fix or restore it, never delete it") from exc
    if (
        not isinstance(data, dict)
        or data.get("version") != TOKEN_FILE_VERSION
        or not isinstance(data.get("tokens"), dict)
    ):
        raise TokenFileError(f'{source}: expected {{"version": {TOKEN_FILE_VERSION}, "tokens": {{...}}}}')
    tokens: dict[str, int] = {}
    for instance, token in data["tokens"].items():
        # bool is an int in Python; `true` is not a token.
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token <= MAX_TOKEN:
            raise TokenFileError(f"{source}: tokens.{instance}: not a token between 0 and {MAX_TOKEN} (got {token!r})")
        tokens[instance] = token
    return tokens


def dump_tokens(tokens: Mapping[str, int]) -> str:
    return json.dumps({"version": TOKEN_FILE_VERSION, "tokens": dict(sorted(tokens.items()))}, indent=1) + "\n"


class TokenFile:
    """The highest fencing token this node has seen, per instance, kept on disk across restarts of the agent.

    Loaded once at construction (a missing file is a first start; a corrupt one raises `TokenFileError`);
    `record` keeps the in-memory value current at once and writes the file atomically (tmp + fsync + rename).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokens: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._changes = 0  # count of values recorded since load
        self._written = 0  # the count the file on disk reflects
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"{path}: cannot read: {exc}") from exc
        self._tokens = parse_tokens(text, str(path))

    def highest(self, instance: str) -> int:
        return self._tokens.get(instance, 0)

    async def record(self, instance: str, token: int) -> None:
        """Returns once a file holding `token` (or a higher one) is on disk."""
        if token <= self.highest(instance):
            return
        self._tokens[instance] = token
        self._changes += 1
        wanted = self._changes
        # One write at a time, each with every value recorded so far: callers that queued behind a write which
        # already carried their token return without writing (10,000 acquisitions cost a few writes, not 10,000).
        async with self._lock:
            if self._written >= wanted:
                return
            changes = self._changes
            # The fsync runs off the event loop.
            await asyncio.to_thread(self._write, dump_tokens(self._tokens))
            self._written = changes

    def _write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        # The rename is durable only once the directory entry is.
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- connecting ------------------------------------------------------------------------------------------


def read_secret(path: Path | None, key: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise LeaseError(f"{key}: cannot read {str(path)!r}: {exc}") from exc


def _timeouts(timeout_ms: int) -> dict[str, Any]:
    seconds = timeout_ms / 1000
    return {
        "socket_timeout": seconds,
        "socket_connect_timeout": seconds,
        # One immediate retry: a pooled connection found dead after a Redis restart or a failover gets a fresh
        # one within the same call; the call's hard deadline still bounds both attempts.
        "retry": Retry(NoBackoff(), 1),
        "protocol": PROTOCOL,
        "decode_responses": True,
    }


def connect_url(url: str, *, timeout_ms: int, password: str | None = None, connections: int = CONNECTIONS) -> Redis:
    """A client for `redis://`, `rediss://` or `unix://`; TLS options come from the URL's query
    (`rediss://host:6380/0?ssl_ca_certs=/etc/ssl/redis-ca.pem`, optionally `ssl_certfile`, `ssl_keyfile`)."""
    scheme = url.partition("://")[0]
    if scheme not in ("redis", "rediss", "unix"):
        raise LeaseError(f"lease.redis_url: must be a redis://, rediss:// or unix:// URL (got {url!r})")
    if connections < 1:
        raise ValueError(f"connections: must be at least 1 (got {connections})")
    kwargs = _timeouts(timeout_ms)
    if password is not None:
        if "@" in url.partition("://")[2].partition("/")[0]:
            raise LeaseError("lease.password_file: the redis_url carries a password too; give only one")
        kwargs["password"] = password
    try:
        # Blocking: many instances renewing at once queue for a connection (within each call's deadline)
        # instead of opening one socket per instance or failing with "Too many connections".
        pool = BlockingConnectionPool.from_url(url, max_connections=connections, timeout=timeout_ms / 1000, **kwargs)
    except ValueError as exc:
        raise LeaseError(f"lease.redis_url: {exc}") from exc
    return Redis.from_pool(pool)


def connect_sentinel(
    addresses: tuple[str, ...] | list[str],
    service: str,
    *,
    timeout_ms: int,
    password: str | None = None,
    sentinel_password: str | None = None,
) -> Redis:
    """A client for the master of `service`; each new connection asks the sentinels where the master is, so
    connections dropped by a failover come back on the new master."""
    hosts: list[tuple[str, int]] = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not port.isdigit() or not host:
            raise LeaseError(f"lease.sentinel.addresses: not HOST:PORT (got {address!r})")
        hosts.append((host.strip("[]"), int(port)))
    sentinel_kwargs = _timeouts(timeout_ms)
    sentinel_kwargs["retry"] = Retry(NoBackoff(), 0)  # discovery moves on to the next sentinel instead
    if sentinel_password is not None:
        sentinel_kwargs["password"] = sentinel_password
    kwargs = _timeouts(timeout_ms)
    if password is not None:
        kwargs["password"] = password
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **kwargs)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    client: Redis = sentinel.master_for(service)
    return client


# --- the store and its leases ----------------------------------------------------------------------------


class LeaseStore:
    """One Redis (or Sentinel-managed master) holding the leases of every instance of this node's cluster."""

    def __init__(
        self,
        client: Redis,
        *,
        node: str,
        cluster: str,
        ttl_ms: int,
        timeout_ms: int,
        tokens: TokenFile,
        where: str = "redis",
    ) -> None:
        if not node or not cluster:
            raise ValueError("node and cluster must be non-empty names")
        if ttl_ms <= 0 or timeout_ms <= 0:
            raise ValueError(f"ttl_ms and timeout_ms must be positive (got {ttl_ms}, {timeout_ms})")
        self.client = client
        self.node = node
        self.cluster = cluster
        self.ttl_ms = ttl_ms
        self.timeout_ms = timeout_ms
        self.tokens = tokens
        self.where = where  # names the store in messages: the URL without credentials, or the service
        self.acquire_script: AsyncScript = client.register_script(_ACQUIRE)
        self.renew_script: AsyncScript = client.register_script(_RENEW)
        self.release_script: AsyncScript = client.register_script(_RELEASE)
        self.read_script: AsyncScript = client.register_script(_READ)
        self._leases: dict[str, Lease] = {}

    @classmethod
    def from_config(cls, cfg: Config) -> LeaseStore:
        lease = cfg.lease
        password = read_secret(lease.password_file, "lease.password_file")
        if lease.sentinel is not None:
            client = connect_sentinel(
                lease.sentinel.addresses,
                lease.sentinel.service,
                timeout_ms=lease.timeout_ms,
                password=password,
                sentinel_password=read_secret(lease.sentinel.password_file, "lease.sentinel.password_file"),
            )
            where = f"sentinel service {lease.sentinel.service}"
        else:
            assert lease.redis_url is not None  # the config requires exactly one of the two
            client = connect_url(lease.redis_url, timeout_ms=lease.timeout_ms, password=password)
            where = _without_credentials(lease.redis_url)
        return cls(
            client,
            node=cfg.node.name,
            cluster=cfg.node.cluster,
            ttl_ms=lease.ttl_ms,
            timeout_ms=lease.timeout_ms,
            tokens=TokenFile(cfg.node.state_dir / TOKEN_FILE_NAME),
            where=where,
        )

    def lease(self, instance: str) -> Lease:
        if instance not in self._leases:
            self._leases[instance] = Lease(self, instance)
        return self._leases[instance]

    async def renew_many(self, leases: Sequence[Lease]) -> list[LeaseView]:
        """Renew several leases of this store in one script call (one view each, in order)."""
        if any(lease.store is not self for lease in leases):
            raise ValueError("renew_many: every lease must come from this store")
        return await self.exchange(self.renew_script, leases, (), batched=True)

    async def exchange(
        self, script: AsyncScript, leases: Sequence[Lease], extra: Sequence[str], *, batched: bool
    ) -> list[LeaseView]:
        """One script call for `leases`; any failure or silence makes every view UNKNOWN, never an exception."""
        if not leases:
            return []
        keys = [key for lease in leases for key in lease.keys]
        sent_at = time.monotonic()
        try:
            # redis-py's socket timeouts bound each read; this bounds the whole call (connect, retry, discovery).
            async with asyncio.timeout(self.timeout_ms / 1000):
                await self._follow_master()
                reply = await script(keys=keys, args=[self.node, str(self.ttl_ms), *extra])
            replies = reply if batched else [reply]
            if not isinstance(replies, list) or len(replies) != len(leases):
                raise ValueError(f"unexpected reply from the lease script: {reply!r}")
            views = [_view(one, sent_at) for one in replies]
        except TimeoutError:
            return [lease.unknown(f"no answer within {self.timeout_ms} ms") for lease in leases]
        except (RedisError, OSError, ValueError) as exc:
            return [lease.unknown(f"{type(exc).__name__}: {exc}") for lease in leases]
        return [await lease.settle(view) for lease, view in zip(leases, views, strict=True)]

    async def _follow_master(self) -> None:
        """With Sentinel, ask the sentinels which server is master before every call. After a failover the old
        master stays a writable master until Sentinel converts it (about 10 s), and redis-py asks the sentinels
        only when it opens a connection: a connection still open to the old master would renew a lease there that
        the new master, where every other node looks, lets run out. The pool's `get_master_address` closes its idle
        connections when the answer changed, so the call opens one to the new master. Sentinels that do not
        answer make the call fail (UNKNOWN): a lease renewed on a server nobody can tell is master is no lease."""
        pool = self.client.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            await pool.get_master_address()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    async def close(self) -> None:
        await self.client.aclose()


def _without_credentials(url: str) -> str:
    scheme, _, rest = url.partition("://")
    hostpart, slash, path = rest.partition("/")
    return f"{scheme}://{hostpart.rpartition('@')[2]}{slash}{path.partition('?')[0]}"


class Lease:
    """The lease of one VRRP instance. Every call returns a `LeaseView` and never raises on a store failure:
    UNKNOWN then, with the reason in `last_error` (logged once per change)."""

    def __init__(self, store: LeaseStore, instance: str) -> None:
        if not instance:
            raise ValueError("instance must be a non-empty name")
        self.store = store
        self.instance = instance
        prefix = f"keepalived-arbiter:{{{store.cluster}:{instance}}}"
        self.keys = [f"{prefix}:lease", f"{prefix}:lease-token", f"{prefix}:token"]
        self.last_error: str | None = None

    async def acquire(self, seed: int = 0) -> LeaseView:
        """Take the lease if free (a new token above `seed` and the persisted token); renew it if mine."""
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_TOKEN:
            raise ValueError(f"seed: must be an int between 0 and {MAX_TOKEN - 1} (got {seed!r})")
        floor = max(seed, self.store.tokens.highest(self.instance))
        return await self._call(self.store.acquire_script, str(floor))

    async def renew(self) -> LeaseView:
        """Extend the lease if it is still mine; a stale holder gets PEER or FREE back, never an extension."""
        return (await self.store.renew_many([self]))[0]

    async def release(self) -> LeaseView:
        return await self._call(self.store.release_script)

    async def read(self) -> LeaseView:
        return await self._call(self.store.read_script)

    async def _call(self, script: AsyncScript, *extra: str) -> LeaseView:
        return (await self.store.exchange(script, [self], extra, batched=False))[0]

    async def settle(self, view: LeaseView) -> LeaseView:
        """Note an answer: clear the error, persist a higher token."""
        if self.last_error is not None:
            log.info("lease %s: %s answers again", self.instance, self.store.where)
            self.last_error = None
        if view.token is not None:
            tokens = self.store.tokens
            try:
                await tokens.record(self.instance, view.token)
            except OSError as exc:
                # The lease itself is as Redis says; hiding it would be wrong. The operator must fix the disk.
                log.error("lease %s: cannot persist token %d to %s: %s", self.instance, view.token, tokens.path, exc)
        return view

    def unknown(self, reason: str) -> LeaseView:
        if reason != self.last_error:
            log.warning("lease %s: %s: %s", self.instance, self.store.where, reason)
        self.last_error = reason
        return LeaseView(LeaseStatus.UNKNOWN)


_STATUS = {"mine": LeaseStatus.MINE, "peer": LeaseStatus.PEER, "free": LeaseStatus.FREE}


def _view(reply: Any, sent_at: float) -> LeaseView:
    """A script's `[status, holder, token, pttl]` as a view; the expiry counts from the request's send time,
    so it is never later than the store's own."""
    if not isinstance(reply, list) or len(reply) != 4 or reply[0] not in _STATUS:
        raise ValueError(f"unexpected reply from the lease script: {reply!r}")
    status, holder, token, pttl = reply
    expires_at = sent_at + int(pttl) / 1000 if status != "free" and int(pttl) > 0 else None
    return LeaseView(
        _STATUS[status],
        holder=holder if status != "free" else None,
        token=int(token) if token is not None else None,
        expires_at=expires_at,
    )
