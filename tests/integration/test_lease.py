"""arbiter.evidence.lease against real redis-server and redis-sentinel processes on loopback.

Covers the lease life cycle, fencing tokens that never go backwards (also across a Redis restarted empty),
the token state file, bounded answers from a stopped, refusing or blackholed Redis, AUTH, TLS, and a Sentinel
failover. Every process is stopped by PID (see `redis_servers`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import shutil
import time
import tomllib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from arbiter.config import Config
from arbiter.evidence.lease import (
    TOKEN_FILE_NAME,
    LeaseError,
    LeaseStore,
    TokenFile,
    TokenFileError,
    connect_sentinel,
    connect_url,
)
from arbiter.model import LeaseStatus, LeaseView
from tests.integration.redis_servers import HOST, Blackhole, Process, Servers, free_port, make_tls, servers_in, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("redis-server") is None or shutil.which("redis-sentinel") is None,
        reason="redis-server and redis-sentinel not installed (Debian packages redis-server, redis-sentinel)",
    ),
]

T = TypeVar("T")
TIMEOUT_MS = 300
# A behavioural bound (the call must not hang for seconds), not a benchmark: scheduling noise stays well below.
SLACK = 0.25
EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "arbiter.toml.example"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    yield from servers_in(tmp_path / "servers")


def store_for(
    url: str,
    state_dir: Path,
    node: str = "node-a",
    *,
    ttl_ms: int = 3000,
    timeout_ms: int = TIMEOUT_MS,
    password: str | None = None,
) -> LeaseStore:
    client = connect_url(url, timeout_ms=timeout_ms, password=password)
    tokens = TokenFile(state_dir / node / TOKEN_FILE_NAME)
    return LeaseStore(client, node=node, cluster="web", ttl_ms=ttl_ms, timeout_ms=timeout_ms, tokens=tokens)


def url_of(server: Process) -> str:
    return f"redis://{HOST}:{server.port}/0"


def config_for(state_dir: Path, **lease: Any) -> Config:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["node"]["state_dir"] = str(state_dir)
    data["lease"] = {k: v for k, v in data["lease"].items() if k != "redis_url"} | lease
    return Config.model_validate(data)


async def timed(call: Coroutine[Any, Any, LeaseView]) -> tuple[LeaseView, float]:
    started = time.monotonic()
    view = await call
    return view, time.monotonic() - started


# --- life cycle -----------------------------------------------------------------------------------------


def test_acquire_renew_release_and_what_the_peer_reads(servers: Servers, tmp_path: Path) -> None:
    server = servers.redis("redis")

    async def scenario() -> None:
        a = store_for(url_of(server), tmp_path, "node-a")
        b = store_for(url_of(server), tmp_path, "node-b")
        try:
            la, lb = a.lease("VI_1"), b.lease("VI_1")
            assert (await lb.read()).status is LeaseStatus.FREE
            before = time.monotonic()
            got = await la.acquire(seed=0)
            assert got.status is LeaseStatus.MINE and got.holder == "node-a" and got.token
            # The expiry is counted from the send time: not later than now + ttl.
            assert got.expires_at is not None and before <= got.expires_at - 3.0 <= time.monotonic()
            seen = await lb.read()
            assert (seen.status, seen.holder, seen.token) == (LeaseStatus.PEER, "node-a", got.token)
            assert (await lb.acquire(seed=0)).status is LeaseStatus.PEER
            renewed = await la.renew()
            assert (renewed.status, renewed.token) == (LeaseStatus.MINE, got.token)
            again = await la.acquire(seed=0)  # already mine: a renewal, not a new token
            assert (again.status, again.token) == (LeaseStatus.MINE, got.token)
            assert (await la.read()).status is LeaseStatus.MINE
            released = await la.release()
            assert released.status is LeaseStatus.FREE and released.holder is None
            assert released.token == got.token  # a free lease names the highest token issued: the next seed
            taken = await lb.acquire(seed=0)
            assert taken.status is LeaseStatus.MINE and taken.token is not None and taken.token > got.token
            # Other instances are other leases.
            assert (await a.lease("VI_2").acquire()).status is LeaseStatus.MINE
        finally:
            await a.close()
            await b.close()

    run(scenario())


def test_a_stale_holder_can_neither_renew_nor_release(servers: Servers, tmp_path: Path) -> None:
    server = servers.redis("redis")

    async def scenario() -> None:
        a = store_for(url_of(server), tmp_path, "node-a", ttl_ms=200, timeout_ms=100)
        b = store_for(url_of(server), tmp_path, "node-b", ttl_ms=3000)
        try:
            la, lb = a.lease("VI_1"), b.lease("VI_1")
            old = await la.acquire()
            assert old.status is LeaseStatus.MINE
            await asyncio.sleep(0.3)  # node-a's lease expires
            assert (await la.renew()).status is LeaseStatus.FREE
            new = await lb.acquire()
            assert new.status is LeaseStatus.MINE and new.token is not None and old.token is not None
            assert new.token > old.token
            for stale in (await la.renew(), await la.release(), await la.acquire()):
                assert (stale.status, stale.holder, stale.token) == (LeaseStatus.PEER, "node-b", new.token)
            assert (await lb.read()).status is LeaseStatus.MINE  # node-b still holds it
        finally:
            await a.close()
            await b.close()

    run(scenario())


def test_tokens_strictly_increase_across_acquisitions(servers: Servers, tmp_path: Path) -> None:
    server = servers.redis("redis")

    async def scenario() -> list[int]:
        stores = [store_for(url_of(server), tmp_path, name) for name in ("node-a", "node-b", "node-c")]
        tokens: list[int] = []
        try:
            for i in range(30):
                lease = stores[i % 3].lease("VI_1")
                view = await lease.acquire()
                assert view.status is LeaseStatus.MINE and view.token is not None
                tokens.append(view.token)
                assert (await lease.release()).status is LeaseStatus.FREE
        finally:
            for store in stores:
                await store.close()
        return tokens

    tokens = run(scenario())
    assert all(a < b for a, b in itertools.pairwise(tokens)), tokens


def test_renew_many_answers_each_lease_in_one_call(servers: Servers, tmp_path: Path) -> None:
    server = servers.redis("redis")

    async def scenario() -> None:
        a = store_for(url_of(server), tmp_path, "node-a")
        b = store_for(url_of(server), tmp_path, "node-b")
        try:
            mine = [await a.lease(f"VI_{i}").acquire() for i in range(3)]
            theirs = await b.lease("VI_3").acquire()
            views = await a.renew_many([a.lease(f"VI_{i}") for i in (0, 3, 1, 4, 2)])
            assert [(v.status, v.holder, v.token) for v in views] == [
                (LeaseStatus.MINE, "node-a", mine[0].token),
                (LeaseStatus.PEER, "node-b", theirs.token),
                (LeaseStatus.MINE, "node-a", mine[1].token),
                (LeaseStatus.FREE, None, None),
                (LeaseStatus.MINE, "node-a", mine[2].token),
            ]
            assert await a.renew_many([]) == []
            with pytest.raises(ValueError, match="this store"):
                await a.renew_many([b.lease("VI_0")])
            server.pause()
            try:
                views, took = await timed_many(a.renew_many([a.lease("VI_0"), a.lease("VI_1")]))
            finally:
                server.resume()
            assert views == [LeaseView(LeaseStatus.UNKNOWN)] * 2 and took < TIMEOUT_MS / 1000 + SLACK
            assert a.lease("VI_1").last_error == f"no answer within {TIMEOUT_MS} ms"
        finally:
            await a.close()
            await b.close()

    run(scenario())


async def timed_many(call: Coroutine[Any, Any, list[LeaseView]]) -> tuple[list[LeaseView], float]:
    started = time.monotonic()
    views = await call
    return views, time.monotonic() - started


# --- Redis restarted empty ------------------------------------------------------------------------------


def test_restart_empty_still_issues_a_larger_token_via_redis_time(servers: Servers, tmp_path: Path) -> None:
    server = servers.redis("redis")

    async def scenario() -> None:
        # Separate state dirs: node-b never saw node-a's token, so only Redis's clock can help.
        a = store_for(url_of(server), tmp_path / "a", "node-a")
        b = store_for(url_of(server), tmp_path / "b", "node-b")
        try:
            first = await a.lease("VI_1").acquire()
            assert first.token is not None
            server.kill()
            server.start()
            assert server.client().dbsize() == 0
            after = await b.lease("VI_1").acquire()
            if after.status is LeaseStatus.UNKNOWN:  # the pooled connection died with the server; one retry
                after = await b.lease("VI_1").acquire()
            assert after.status is LeaseStatus.MINE and after.token is not None
            assert after.token > first.token
        finally:
            await a.close()
            await b.close()

    run(scenario())


def test_restart_empty_respects_the_persisted_and_the_peer_seed(servers: Servers, tmp_path: Path) -> None:
    server = servers.redis("redis")
    # A counter far above Redis's clock (e.g. issued by a Redis whose clock ran ahead): TIME cannot help.
    high = int(time.time() * 1000) + 10**9
    server.client().set("keepalived-arbiter:{web:VI_1}:token", high)

    async def holder_sees_high() -> int:
        a = store_for(url_of(server), tmp_path / "a", "node-a")
        try:
            view = await a.lease("VI_1").acquire()
            assert view.token == high + 1
            assert (await a.lease("VI_1").release()).status is LeaseStatus.FREE
            return view.token
        finally:
            await a.close()

    seen = run(holder_sees_high())
    persisted = json.loads((tmp_path / "a" / "node-a" / TOKEN_FILE_NAME).read_text())
    assert persisted == {"version": 1, "tokens": {"VI_1": seen}}

    server.kill()
    server.start()

    async def after_restart() -> None:
        # Without any seed the restarted Redis would go backwards: this is what the seeds are for.
        stranger = store_for(url_of(server), tmp_path / "c", "node-c")
        # node-a restarted too: its new store loads the highest token from its state file.
        a = store_for(url_of(server), tmp_path / "a", "node-a")
        # node-b has no state file but heard node-a's highest token over a heartbeat.
        b = store_for(url_of(server), tmp_path / "b", "node-b")
        try:
            unseeded = await stranger.lease("VI_1").acquire()
            assert unseeded.token is not None and unseeded.token < seen
            await stranger.lease("VI_1").release()
            from_file = await a.lease("VI_1").acquire(seed=0)
            assert from_file.token is not None and from_file.token > seen
            await a.lease("VI_1").release()
            # Wipe the counter again so only node-b's seed stands between it and a backwards token.
            await b.client.delete("keepalived-arbiter:{web:VI_1}:token")
            from_peer = await b.lease("VI_1").acquire(seed=seen)
            assert from_peer.token is not None and from_peer.token == seen + 1
        finally:
            for store in (stranger, a, b):
                await store.close()

    run(after_restart())


# --- the state file -------------------------------------------------------------------------------------


def test_state_file_keeps_the_highest_token_per_instance(servers: Servers, tmp_path: Path) -> None:
    server = servers.redis("redis")
    path = tmp_path / "node-a" / TOKEN_FILE_NAME

    async def scenario() -> tuple[int, int]:
        a = store_for(url_of(server), tmp_path, "node-a")
        b = store_for(url_of(server), tmp_path / "other", "node-b")
        try:
            one = await a.lease("VI_1").acquire()
            two = await b.lease("VI_2").acquire()
            # Reading the peer's lease is seeing its token: persisted too.
            assert (await a.lease("VI_2").read()).token == two.token
            assert one.token is not None and two.token is not None
            return one.token, two.token
        finally:
            await a.close()
            await b.close()

    one, two = run(scenario())
    assert TokenFile(path).highest("VI_1") == one
    assert TokenFile(path).highest("VI_2") == two
    assert not [p for p in path.parent.iterdir() if p.name != TOKEN_FILE_NAME]  # no temp file left behind


def test_a_corrupt_state_file_refuses_to_start_naming_the_file(tmp_path: Path) -> None:
    cfg = config_for(tmp_path, redis_url=f"redis://{HOST}:{free_port()}/0")
    path = tmp_path / TOKEN_FILE_NAME
    path.write_text('{"version": 1, "tokens": {"VI_1": 41')
    with pytest.raises(TokenFileError, match=str(path)):
        LeaseStore.from_config(cfg)
    path.write_text('{"version": 1, "tokens": {"VI_1": -3}}')
    with pytest.raises(TokenFileError, match=r"tokens\.VI_1"):
        LeaseStore.from_config(cfg)


# --- a Redis that does not answer -----------------------------------------------------------------------


def test_a_stopped_redis_is_unknown_within_the_timeout(servers: Servers, tmp_path: Path) -> None:
    server = servers.redis("redis")

    async def scenario() -> None:
        a = store_for(url_of(server), tmp_path)
        fresh = store_for(url_of(server), tmp_path / "fresh", "node-b")
        try:
            lease = a.lease("VI_1")
            assert (await lease.acquire()).status is LeaseStatus.MINE
            server.pause()
            try:
                for call in (lease.renew(), lease.read(), fresh.lease("VI_1").read()):  # pooled and new connection
                    view, took = await timed(call)
                    assert view.status is LeaseStatus.UNKNOWN
                    assert took < TIMEOUT_MS / 1000 + SLACK, took
                assert lease.last_error == f"no answer within {TIMEOUT_MS} ms"
            finally:
                server.resume()
            # The first call after SIGCONT may meet the connection cancelled mid-reply; it recovers by the next.
            views = [await lease.renew() for _ in range(3)]
            assert views[-1].status is LeaseStatus.MINE
            assert lease.last_error is None
        finally:
            await a.close()
            await fresh.close()

    run(scenario())


def test_connection_refused_is_unknown_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = store_for(f"redis://{HOST}:{free_port()}/0", tmp_path)
        try:
            view, took = await timed(store.lease("VI_1").acquire())
            assert view == LeaseView(LeaseStatus.UNKNOWN)
            assert took < 0.1, took  # no backoff, no multi-second default retry
            assert "ConnectionError" in (store.lease("VI_1").last_error or "")
        finally:
            await store.close()

    run(scenario())


@pytest.mark.parametrize("full", [False, True], ids=["never-answers", "backlog-full"])
def test_a_blackholed_redis_is_unknown_within_the_timeout(tmp_path: Path, full: bool) -> None:
    hole = Blackhole(full=full)

    async def scenario() -> None:
        store = store_for(f"redis://{HOST}:{hole.port}/0", tmp_path)
        try:
            for _ in range(2):
                view, took = await timed(store.lease("VI_1").renew())
                assert view.status is LeaseStatus.UNKNOWN
                assert took < TIMEOUT_MS / 1000 + SLACK, took
        finally:
            await store.close()

    try:
        run(scenario())
    finally:
        hole.close()


# --- AUTH and TLS ---------------------------------------------------------------------------------------


def test_auth_with_a_password_file(servers: Servers, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = servers.redis("redis", password="s3cret pass")
    secret = tmp_path / "redis.pass"
    secret.write_text("s3cret pass\n")
    secret.chmod(0o600)
    cfg = config_for(tmp_path / "state", redis_url=url_of(server), password_file=str(secret))

    async def scenario() -> None:
        good = LeaseStore.from_config(cfg)
        wrong = store_for(url_of(server), tmp_path, "node-b", password="not it")
        none = store_for(url_of(server), tmp_path, "node-c")
        try:
            assert (await good.lease("VI_1").acquire()).status is LeaseStatus.MINE
            with caplog.at_level(logging.WARNING, logger="arbiter.evidence.lease"):
                assert (await wrong.lease("VI_1").read()).status is LeaseStatus.UNKNOWN
                assert (await none.lease("VI_1").read()).status is LeaseStatus.UNKNOWN
            assert "AuthenticationError" in (wrong.lease("VI_1").last_error or "")
            assert "Authentication" in (none.lease("VI_1").last_error or "")
            assert any("invalid username-password pair" in r.getMessage() for r in caplog.records)
            assert "s3cret" not in caplog.text
        finally:
            for store in (good, wrong, none):
                await store.close()

    run(scenario())


def test_a_password_in_the_url_and_in_a_file_is_refused() -> None:
    with pytest.raises(LeaseError, match="give only one"):
        connect_url("redis://:pw@127.0.0.1:6379/0", timeout_ms=300, password="pw")


def test_tls_via_rediss_url_with_a_ca(servers: Servers, tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    server = servers.redis("redis-tls", tls=tls)

    async def scenario() -> None:
        url = f"rediss://{HOST}:{server.port}/0?ssl_ca_certs={tls.ca}&ssl_cert_reqs=required"
        trusted = store_for(url, tmp_path, "node-a")
        untrusted = store_for(f"rediss://{HOST}:{server.port}/0", tmp_path, "node-b")
        plain = store_for(url_of(server), tmp_path, "node-c")
        try:
            view = await trusted.lease("VI_1").acquire()
            assert view.status is LeaseStatus.MINE
            # Without the CA the server's certificate is not trusted; plain text gets no answer it understands.
            assert (await untrusted.lease("VI_1").read()).status is LeaseStatus.UNKNOWN
            assert "certificate verify failed" in (untrusted.lease("VI_1").last_error or "")
            started = time.monotonic()
            assert (await plain.lease("VI_1").read()).status is LeaseStatus.UNKNOWN
            assert time.monotonic() - started < TIMEOUT_MS / 1000 + SLACK
        finally:
            for store in (trusted, untrusted, plain):
                await store.close()

    run(scenario())


# --- Sentinel -------------------------------------------------------------------------------------------


def _master_port(sentinel: Process, service: str) -> int:
    _host, port = sentinel.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)
    return int(port)


def _sentinel_set(servers: Servers) -> tuple[Process, Process, list[Process]]:
    """A master, its replica in sync, and three sentinels (service "arbiter") that know both and each other."""
    service = "arbiter"
    master = servers.redis("master")
    replica = servers.redis("replica", "--replicaof", HOST, str(master.port))
    wait_for(
        lambda: replica.client().info("replication").get("master_link_status") == "up",
        10,
        "replica to sync",
    )
    sentinels = [servers.sentinel(f"sentinel{i}", service, master) for i in range(3)]
    # Every sentinel knows the replica and the other sentinels before a failover is asked for.
    wait_for(
        lambda: all(
            len(s.client().execute_command("SENTINEL", "REPLICAS", service)) == 1
            and len(s.client().execute_command("SENTINEL", "SENTINELS", service)) == 2
            for s in sentinels
        ),
        15,
        "sentinels to discover the replica and each other",
    )
    return master, replica, sentinels


def test_the_lease_continues_on_the_new_master_after_a_sentinel_failover(servers: Servers, tmp_path: Path) -> None:
    service = "arbiter"
    master, replica, sentinels = _sentinel_set(servers)
    cfg = config_for(
        tmp_path / "state",
        sentinel={"addresses": [f"{HOST}:{s.port}" for s in sentinels], "service": service},
    )

    async def scenario() -> None:
        store = LeaseStore.from_config(cfg)
        as_b = cfg.model_copy(update={"node": cfg.node.model_copy(update={"name": "node-b"})})
        peer_store = LeaseStore.from_config(as_b)
        try:
            lease = store.lease("VI_1")
            first = await lease.acquire()
            assert first.status is LeaseStatus.MINE and first.token is not None
            # Let the replica have the lease before failing over (asynchronous replication).
            await asyncio.to_thread(master.client().execute_command, "WAIT", 1, 2000)
            await asyncio.to_thread(sentinels[0].client().execute_command, "SENTINEL", "FAILOVER", service)
            await asyncio.to_thread(
                wait_for, lambda: _master_port(sentinels[0], service) == replica.port, 15, "failover to the replica"
            )
            # The old master is demoted: a connection still open to it fails once, then follows the sentinels.
            deadline = time.monotonic() + 10
            renewed = await lease.renew()
            while renewed.status is not LeaseStatus.MINE and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                renewed = await lease.renew()
            assert (renewed.status, renewed.token) == (LeaseStatus.MINE, first.token)
            assert replica.client().get("keepalived-arbiter:{web:VI_1}:lease") == "node-a"
            assert (await peer_store.lease("VI_1").read()).holder == "node-a"
            assert (await lease.release()).status is LeaseStatus.FREE
            taken = await peer_store.lease("VI_1").acquire()
            assert taken.status is LeaseStatus.MINE and taken.token is not None and taken.token > first.token
        finally:
            await store.close()
            await peer_store.close()

    run(scenario())


def test_renewals_follow_the_new_master_while_the_old_one_is_still_writable(servers: Servers, tmp_path: Path) -> None:
    """After a Sentinel failover the old master stays a writable master until Sentinel converts it (about 10 s
    here). Renewals must go to the master the sentinels name, where every other node looks: renewed on the old one,
    the lease ran out on the new master after one TTL while this node still counted it its own (issue 14's chaos
    run with a Sentinel witness)."""
    service = "arbiter"
    master, replica, sentinels = _sentinel_set(servers)
    cfg = config_for(
        tmp_path / "state",
        sentinel={"addresses": [f"{HOST}:{s.port}" for s in sentinels], "service": service},
    )
    key = "keepalived-arbiter:{web:VI_1}:lease"

    async def scenario() -> None:
        store = LeaseStore.from_config(cfg)
        try:
            lease = store.lease("VI_1")
            first = await lease.acquire()
            assert first.status is LeaseStatus.MINE
            await asyncio.to_thread(master.client().execute_command, "WAIT", 1, 2000)
            await asyncio.to_thread(sentinels[0].client().execute_command, "SENTINEL", "FAILOVER", service)
            await asyncio.to_thread(
                wait_for, lambda: _master_port(sentinels[0], service) == replica.port, 15, "failover to the replica"
            )
            # Renew for longer than the TTL (3 s) while the old master is still writable.
            until = time.monotonic() + 4.0
            while time.monotonic() < until:
                view = await lease.renew()
                assert view.status in (LeaseStatus.MINE, LeaseStatus.UNKNOWN)
                await asyncio.sleep(0.5)
            assert master.client().execute_command("ROLE")[0] == "master"  # not demoted yet: the case at hand
            assert replica.client().get(key) == "node-a"
            assert replica.client().pttl(key) > 2000  # renewed there, not just replicated
            assert (await lease.renew()).status is LeaseStatus.MINE
        finally:
            await store.close()

    run(scenario())


def test_sentinel_gone_is_unknown_within_the_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        client = connect_sentinel([f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"], "arbiter", timeout_ms=TIMEOUT_MS)
        store = LeaseStore(
            client, node="node-a", cluster="web", ttl_ms=3000, timeout_ms=TIMEOUT_MS, tokens=TokenFile(tmp_path / "t")
        )
        try:
            view, took = await timed(store.lease("VI_1").read())
            assert view.status is LeaseStatus.UNKNOWN and took < TIMEOUT_MS / 1000 + SLACK
            assert "MasterNotFoundError" in (store.lease("VI_1").last_error or "")
        finally:
            await store.close()

    run(scenario())


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [-1, True, 2**53, "41", 1.5])
def test_a_bad_seed_is_refused(tmp_path: Path, seed: Any) -> None:
    async def scenario() -> None:
        store = store_for(f"redis://{HOST}:{free_port()}/0", tmp_path)
        try:
            with pytest.raises(ValueError, match="seed: must be an int"):
                await store.lease("VI_1").acquire(seed)
        finally:
            await store.close()

    run(scenario())


def test_bad_construction_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LeaseError, match="redis_url"):
        connect_url("http://127.0.0.1:6379", timeout_ms=300)
    with pytest.raises(LeaseError, match="not HOST:PORT"):
        connect_sentinel(["127.0.0.1"], "svc", timeout_ms=300)
    cfg = config_for(tmp_path, redis_url=f"redis://{HOST}:6379/0", password_file=str(tmp_path / "missing"))
    with pytest.raises(LeaseError, match=r"lease\.password_file: cannot read"):
        LeaseStore.from_config(cfg)
