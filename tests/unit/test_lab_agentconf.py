"""The arbiter configs the lab writes are what `check-config` accepts, for every lab shape."""

from __future__ import annotations

import pytest

from arbiter import config
from arbiter.lab import agentconf
from arbiter.lab.topology import LabSpec, make_plan


@pytest.mark.parametrize(
    "spec",
    [
        LabSpec(),
        LabSpec(vrrp_version=3, advert_int=0.1),
        LabSpec(nodes=3),
        LabSpec(instances=2, nopreempt=True),
    ],
    ids=["v2-1s", "v3-0.1s", "three-nodes", "dual-instance-nopreempt"],
)
def test_lab_configs_are_valid_with_their_timing_rules(spec: LabSpec) -> None:
    plan = make_plan(spec, prefix="kal0000")
    for node in plan.nodes:
        cfg = config.parse(agentconf.arbiter_config(plan, node))
        assert config.timing_problems(cfg) == []
        assert cfg.node.name == f"node-{node.name}"
        peers = [p.name for p in cfg.peer]
        assert peers == [f"node-{n.name}" for n in plan.nodes if n is not node]
        for peer in cfg.peer:
            assert [[d.driver for d in level] for level in peer.fence_levels()] == [["ipmi"], ["ssh"]]
        assert len(cfg.heartbeat.serial) == len(plan.nodes) - 1
        assert [i.name for i in cfg.instance] == [f"VI_{k + 1}" for k in range(spec.instances)]
        assert all(i.nopreempt is spec.nopreempt for i in cfg.instance)


def test_the_ipmi_level_points_at_the_peers_bmc() -> None:
    plan = make_plan(LabSpec(), prefix="kal0000")
    a, b = plan.nodes
    cfg = config.parse(agentconf.arbiter_config(plan, a))
    ipmi, ssh = cfg.peer[0].fence
    assert (ipmi.driver, getattr(ipmi, "host", None)) == ("ipmi", b.bmc_ip)
    assert (ssh.driver, getattr(ssh, "host", None)) == ("ssh", b.mgmt_ip)
    assert cfg.fencing.delay_ms < config.parse(agentconf.arbiter_config(plan, b)).fencing.delay_ms
