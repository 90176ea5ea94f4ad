"""Shared e2e fixtures: every test must leave no lab namespace behind; a running two-node lab (keepalived alone)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from arbiter.lab import netns
from arbiter.lab.lab import Lab
from arbiter.lab.topology import LabSpec


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    before = set(netns.list_namespaces())
    yield
    left = set(netns.list_namespaces()) - before
    assert not left, f"lab namespaces left behind: {sorted(left)}"


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(LabSpec()) as running:
        running.wait_holders("10.0.0.100", ["a"], 10)
        yield running
