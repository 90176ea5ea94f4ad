"""`lab bench --case KEY`: the scenario bench runs only the cases named (e.g. power-off at VRRPv3/0.1 s)."""

from __future__ import annotations

import pytest

from arbiter.lab.bench import scenarios as bench
from arbiter.lab.netns import LabError


def test_every_case_without_a_selection() -> None:
    keys = [c.key for c in bench.cases(5)]
    assert "power-off v3/0.1s" in keys and "vrrp-cut v2/1s" in keys
    assert [c.runs for c in bench.cases(7) if c.scenario == "power-off"] == [7, 7]


def test_only_the_named_cases_with_their_runs() -> None:
    chosen = bench.cases(6, ["power-off v3/0.1s"])
    assert [(c.scenario, c.advert_int, c.vrrp_version, c.runs) for c in chosen] == [("power-off", 0.1, 3, 6)]


def test_an_unknown_case_names_the_known_ones() -> None:
    with pytest.raises(LabError, match=r"unknown case 'power-off v3/0\.2s'; known: .*power-off v3/0\.1s"):
        bench.cases(5, ["power-off v3/0.2s"])
