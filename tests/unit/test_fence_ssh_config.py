"""The "ssh" entry of a fence config becomes an `SshFencer` through the registry; no network is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbiter.config import SshFence
from arbiter.model import Power
from fencers import registry
from fencers.base import FenceError, Fencer
from fencers.ssh import SshFencer


def _device(tmp_path: Path) -> SshFence:
    return SshFence(
        driver="ssh",
        host="10.0.9.12",
        port=2222,
        key_file=tmp_path / "fence_ed25519",
        known_hosts=tmp_path / "known_hosts",
    )


def test_registry_builds_an_ssh_fencer_from_an_ssh_fence_config(tmp_path: Path) -> None:
    fencer = registry.build(_device(tmp_path), 3.0)
    assert isinstance(fencer, SshFencer) and isinstance(fencer, Fencer)
    assert (fencer.driver, fencer.device, fencer.observes_power) == ("ssh", "ssh root@10.0.9.12:2222", False)
    assert fencer.command == "echo o > /proc/sysrq-trigger"
    assert fencer.timeout == 3.0
    assert (fencer.key_file, fencer.known_hosts) == (tmp_path / "fence_ed25519", tmp_path / "known_hosts")


def test_status_is_unknown_and_power_on_is_refused_without_the_network(tmp_path: Path) -> None:
    fencer = registry.build(_device(tmp_path), 3.0)
    assert fencer.status("node-b") is Power.UNKNOWN
    with pytest.raises(FenceError, match="cannot power a node on"):
        fencer.power_on("node-b")


def test_a_missing_key_file_is_named_before_any_connection(tmp_path: Path) -> None:
    with pytest.raises(FenceError, match=r"cannot load key file .*fence_ed25519"):
        registry.build(_device(tmp_path), 3.0).power_off("node-b")
