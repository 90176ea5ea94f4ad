"""Shared e2e fixtures: every test must leave no lab namespace behind; a running two-node lab (keepalived alone)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from arbiter.lab import netns
from arbiter.lab.lab import Lab
from arbiter.lab.topology import LAB_ROOT, PREFIX_TAG, LabSpec


def _ours(ns: str) -> bool:
    """A namespace of a lab this test process built (other sessions on the machine build labs too)."""
    prefix = ns.split("-", 1)[0]
    if "-" not in ns or len(prefix) != len(PREFIX_TAG) + 4:
        return False  # not named as this lab names its namespaces (kal<4 hex>-<part>)
    owner = netns.read_pid(str(LAB_ROOT / prefix / "owner.pid"))
    return owner is None or owner == os.getpid()


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    before = set(netns.list_namespaces())
    yield
    left = {ns for ns in set(netns.list_namespaces()) - before if ns.startswith(PREFIX_TAG) and _ours(ns)}
    assert not left, f"lab namespaces left behind: {sorted(left)}"


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(LabSpec()) as running:
        running.wait_holders("10.0.0.100", ["a"], 10)
        yield running
