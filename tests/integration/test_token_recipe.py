"""The README's recipe for carrying the fencing token into Redis ("Carrying the token into your data"), run as
written against a real redis-server: a write with a token lower than the highest accepted is refused."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.redis_servers import Servers, servers_in

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    yield from servers_in(tmp_path / "servers")


def recipe() -> str:
    section = README.read_text().split("### Carrying the token into your data", 1)[1]
    found = re.search(r"```lua\n(.*?)```", section, re.S)
    assert found is not None, "the README's Lua recipe is missing"
    return found.group(1)


def test_the_readme_redis_script_refuses_a_stale_token(servers: Servers) -> None:
    client = servers.redis("store").client()
    write = client.register_script(recipe())
    assert write(keys=["orders:token", "orders"], args=[5, "from a, token 5"]) == "OK"
    assert write(keys=["orders:token", "orders"], args=[7, "from b, token 7"]) == "OK"
    with pytest.raises(redis.ResponseError, match="stale token 5 < 7"):
        write(keys=["orders:token", "orders"], args=[5, "late write from a"])
    assert client.get("orders") == "from b, token 7"
    assert write(keys=["orders:token", "orders"], args=[7, "b again"]) == "OK"  # the holder keeps writing
