"""Shared e2e fixtures: a running two-node lab (keepalived alone) that must leave no namespace behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from arbiter.lab import netns
from arbiter.lab.lab import Lab
from arbiter.lab.topology import LabSpec


@pytest.fixture
def lab() -> Iterator[Lab]:
    before = set(netns.list_namespaces())
    with Lab(LabSpec()) as running:
        running.wait_holders("10.0.0.100", ["a"], 10)
        yield running
    assert set(netns.list_namespaces()) - before == set()
