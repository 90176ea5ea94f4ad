"""The chaos workload's store script against a real redis-server: it keeps the README recipe's rule (a token below
the highest accepted is refused) and records every accepted write with the store's clock, as the checker reads it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from arbiter.lab.chaos.workload import STORE_KEY, STORE_SCRIPT, TOKEN_KEY, parse_stored
from tests.integration.redis_servers import Servers, servers_in

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    yield from servers_in(tmp_path / "servers")


def test_the_store_refuses_a_lower_token_and_records_what_it_accepts(servers: Servers) -> None:
    client = servers.redis("store").client()
    write = client.register_script(STORE_SCRIPT)
    before = time.time()
    assert write(keys=[TOKEN_KEY, STORE_KEY], args=[7, "1 a 7"]) in (b"OK", "OK")
    assert write(keys=[TOKEN_KEY, STORE_KEY], args=[9, "2 b 9"]) in (b"OK", "OK")
    with pytest.raises(redis.ResponseError, match="stale token 7 < 9"):
        write(keys=[TOKEN_KEY, STORE_KEY], args=[7, "3 a 7"])
    assert write(keys=[TOKEN_KEY, STORE_KEY], args=[9, "4 b 9"]) in (b"OK", "OK")
    entries = [e.decode() if isinstance(e, bytes) else e for e in client.lrange(STORE_KEY, 0, -1)]
    found = parse_stored(entries)
    assert [(s.value, s.node, s.token) for s in found] == [(1, "a", 7), (2, "b", 9), (4, "b", 9)]
    assert all(before - 1 <= s.t <= time.time() + 1 for s in found)
    assert found[0].t <= found[1].t <= found[2].t


def test_without_a_token_every_write_is_accepted(servers: Servers) -> None:
    client = servers.redis("store").client()
    write = client.register_script(STORE_SCRIPT)
    for value in (1, 2, 3):
        write(keys=[TOKEN_KEY, STORE_KEY], args=[0, f"{value} a 0"])
    assert client.llen(STORE_KEY) == 3
