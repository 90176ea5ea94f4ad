"""Reference quorum: k-of-n with rise/fall hysteresis, driven by a fake pinger and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from arbiter.config import ReferenceConfig
from arbiter.evidence.reference import Change, Hysteresis, ReferenceQuorum


def test_first_round_decides_without_hysteresis() -> None:
    assert Hysteresis(quorum=2, rise=3, fall=3).observe(2) is Change.GAINED
    h = Hysteresis(quorum=2, rise=3, fall=3)
    assert h.observe(1) is Change.LOST
    assert h.quorate is False


def test_fall_needs_consecutive_bad_rounds() -> None:
    h = Hysteresis(quorum=1, rise=2, fall=3)
    h.observe(1)
    assert [h.observe(0), h.observe(0)] == [None, None]
    assert h.quorate is True
    assert h.observe(0) is Change.LOST
    assert h.quorate is False


def test_a_good_round_resets_the_fall_streak() -> None:
    h = Hysteresis(quorum=1, rise=2, fall=2)
    h.observe(1)
    assert [h.observe(0), h.observe(1), h.observe(0)] == [None, None, None]
    assert h.quorate is True


def test_rise_needs_consecutive_good_rounds() -> None:
    h = Hysteresis(quorum=2, rise=2, fall=1)
    h.observe(0)
    assert h.observe(2) is None
    assert h.observe(3) is Change.GAINED


class FakePinger:
    """Replies as scripted per round; records what it was asked."""

    def __init__(self, rounds: list[Mapping[str, bool] | Exception]) -> None:
        self.rounds = rounds
        self.calls: list[tuple[tuple[str, ...], float]] = []

    async def __call__(self, addresses: Sequence[str], timeout: float) -> Mapping[str, bool]:
        self.calls.append((tuple(addresses), timeout))
        answer = self.rounds.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _quorum(pinger: FakePinger, **kw: int) -> ReferenceQuorum:
    cfg = ReferenceConfig.model_validate(
        {"addresses": ["192.0.2.1", "192.0.2.2", "192.0.2.3"], "quorum": 2, "rise": 1, "fall": 1, **kw}
    )
    return ReferenceQuorum.from_config(cfg, pinger=pinger)


def test_k_of_n_counts_replies() -> None:
    pinger = FakePinger([{"192.0.2.1": True, "192.0.2.2": True, "192.0.2.3": False}, {"192.0.2.1": True}])
    ref = _quorum(pinger)
    first, change = asyncio.run(ref.round())
    assert (first.replied, change, ref.quorate) == (2, Change.GAINED, True)
    second, change = asyncio.run(ref.round())
    assert (second.replied, change, ref.quorate) == (1, Change.LOST, False)
    assert pinger.calls[0] == (("192.0.2.1", "192.0.2.2", "192.0.2.3"), 0.5)
    assert ref.replies_total == {"192.0.2.1": 2, "192.0.2.2": 1, "192.0.2.3": 0}


def test_unknown_addresses_in_an_answer_do_not_count() -> None:
    ref = _quorum(FakePinger([{"198.51.100.7": True, "198.51.100.8": True, "192.0.2.1": True}]))
    done, _ = asyncio.run(ref.round())
    assert done.replied == 1
    assert ref.quorate is False


def test_a_failing_pinger_is_a_silent_round_with_the_reason() -> None:
    ref = _quorum(FakePinger([PermissionError(1, "Operation not permitted")]))
    done, change = asyncio.run(ref.round())
    assert done.replied == 0
    assert change is Change.LOST
    assert "PermissionError" in done.error


def test_a_hanging_pinger_is_cut_at_the_timeout() -> None:
    async def hang(addresses: Sequence[str], timeout: float) -> Mapping[str, bool]:
        await asyncio.sleep(3600)
        return {}

    cfg = ReferenceConfig.model_validate({"addresses": ["192.0.2.1"], "interval_ms": 100, "timeout_ms": 20})
    ref = ReferenceQuorum.from_config(cfg, pinger=hang)
    done, _ = asyncio.run(ref.round())
    assert done.replied == 0
    assert "longer than" in done.error


def test_constructor_refuses_an_impossible_quorum() -> None:
    with pytest.raises(ValueError, match="quorum must be between 1 and 1"):
        ReferenceQuorum(["192.0.2.1"], quorum=2, interval=1, timeout=0.5)
    with pytest.raises(ValueError, match="at least one address"):
        ReferenceQuorum([], quorum=1, interval=1, timeout=0.5)


def test_run_reports_changes_until_cancelled() -> None:
    answers: list[Mapping[str, bool] | Exception] = [{"192.0.2.1": True}] * 2 + [{}] * 2 + [{"192.0.2.1": True}] * 50
    pinger = FakePinger(answers)
    cfg = ReferenceConfig.model_validate(
        {"addresses": ["192.0.2.1"], "interval_ms": 10, "timeout_ms": 5, "rise": 1, "fall": 2}
    )
    ref = ReferenceQuorum.from_config(cfg, pinger=pinger)
    seen: list[Change] = []

    async def main() -> None:
        task = asyncio.create_task(ref.run(lambda _r, c: seen.append(c)))
        while len(pinger.calls) < 6:
            await asyncio.sleep(0.005)
        task.cancel()

    asyncio.run(main())
    assert seen == [Change.GAINED, Change.LOST, Change.GAINED]
