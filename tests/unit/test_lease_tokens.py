"""The token state file of arbiter.evidence.lease: parsing, atomic writes, refusal of anything doubtful."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from arbiter.evidence.lease import (
    MAX_TOKEN,
    TokenFile,
    TokenFileError,
    _view,
    _without_credentials,
    dump_tokens,
    parse_tokens,
)
from arbiter.model import LeaseStatus, LeaseView


def test_dump_and_parse_round_trip() -> None:
    tokens = {"VI_2": 7, "VI_1": MAX_TOKEN, "db": 0}
    text = dump_tokens(tokens)
    assert json.loads(text) == {"version": 1, "tokens": {"VI_1": MAX_TOKEN, "VI_2": 7, "db": 0}}
    assert parse_tokens(text, "x") == tokens


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not valid JSON"),
        ('{"version": 1, "tokens": {"VI_1": 4', "not valid JSON"),
        ("[]", "expected"),
        ('{"tokens": {}}', "expected"),
        ('{"version": 2, "tokens": {}}', "expected"),
        ('{"version": 1, "tokens": []}', "expected"),
        ('{"version": 1, "tokens": {"VI_1": "41"}}', r"tokens\.VI_1: not a token"),
        ('{"version": 1, "tokens": {"VI_1": true}}', r"tokens\.VI_1: not a token"),
        ('{"version": 1, "tokens": {"VI_1": 4.5}}', r"tokens\.VI_1: not a token"),
        ('{"version": 1, "tokens": {"VI_1": -1}}', r"tokens\.VI_1: not a token"),
        (f'{{"version": 1, "tokens": {{"VI_1": {MAX_TOKEN + 1}}}}}', r"tokens\.VI_1: not a token"),
    ],
)
def test_anything_doubtful_is_refused_naming_the_file(text: str, why: str) -> None:
    with pytest.raises(TokenFileError, match=rf"^/var/lib/x/tokens\.json: .*{why}"):
        parse_tokens(text, "/var/lib/x/tokens.json")


def test_a_missing_file_is_a_first_start(tmp_path: Path) -> None:
    assert TokenFile(tmp_path / "none" / "tokens.json").highest("VI_1") == 0


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tokens.json").mkdir()
    with pytest.raises(TokenFileError, match="cannot read"):
        TokenFile(tmp_path / "tokens.json")


def test_record_keeps_only_higher_tokens_and_writes_atomically(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tokens.json"
    tokens = TokenFile(path)

    async def record() -> None:
        await tokens.record("VI_1", 40)
        await tokens.record("VI_1", 39)  # lower: ignored
        await asyncio.gather(*(tokens.record(f"VI_{i}", i) for i in range(2, 20)))
        await tokens.record("VI_1", 41)

    asyncio.run(record())
    again = TokenFile(path)
    assert again.highest("VI_1") == 41
    assert [again.highest(f"VI_{i}") for i in range(2, 20)] == list(range(2, 20))
    assert [p.name for p in path.parent.iterdir()] == ["tokens.json"]


def test_script_replies_become_views() -> None:
    assert _view(["mine", "node-a", "42", 3000], 100.0) == LeaseView(LeaseStatus.MINE, "node-a", 42, 103.0)
    assert _view(["peer", "node-b", "43", 1500], 100.0) == LeaseView(LeaseStatus.PEER, "node-b", 43, 101.5)
    assert _view(["free", None, "43", -2], 100.0) == LeaseView(LeaseStatus.FREE, None, 43, None)
    assert _view(["free", None, None, -2], 100.0) == LeaseView(LeaseStatus.FREE)
    with pytest.raises(ValueError, match="unexpected reply"):
        _view(["held", "x", "1", 1], 0.0)


def test_the_store_is_named_without_credentials() -> None:
    url = "rediss://user:pw@10.0.9.1:6380/0?ssl_ca_certs=/etc/ca.pem"
    assert _without_credentials(url) == "rediss://10.0.9.1:6380/0"
