"""The chaos runner's `inject` on a fake lab: every kind a schedule can draw reaches a lab verb with its arguments
(a drawn `hb-cut medium=lan` once cut every medium: the medium was dropped on the way), and a fault on the agent
in a run of keepalived alone acts on nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest

from arbiter.lab.chaos.runner import inject
from arbiter.lab.chaos.schedule import CATALOGUE, NOT_YET, Fault, draw
from arbiter.lab.events import NOTE, Timeline
from arbiter.lab.lab import Lab


@dataclass
class FakeFaults:
    """The lab's fault verbs (arbiter/lab/faults.py), recording each call and returning a heal that records too."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def _verb(self, *call: Any) -> Any:
        self.calls.append(call)
        return lambda: self.calls.append(("heal", *call))

    def vrrp_cut(self, node: str | None, direction: str) -> Any:
        return self._verb("vrrp_cut", node, direction)

    def heartbeat_cut(self, node: str | None, medium: str = "ethernet") -> Any:
        return self._verb("heartbeat_cut", node, medium)

    def vrrp_loss(self, node: str | None, percent: int) -> Any:
        return self._verb("vrrp_loss", node, percent)

    def bridge(self, node: str, peer: str) -> Any:
        return self._verb("bridge", node, peer)

    def link_down(self, node: str, link: str) -> Any:
        return self._verb("link_down", node, link)

    def serial_cut(self, node: str | None, peer: str | None) -> Any:
        return self._verb("serial_cut", node, peer)

    def isolate(self, node: str) -> Any:
        return self._verb("isolate", node)

    def redis_stop(self) -> Any:
        return self._verb("redis_stop")

    def redis_restart_empty(self) -> None:
        self.calls.append(("redis_restart_empty",))

    def redis_partition(self, node: str) -> Any:
        return self._verb("redis_partition", node)

    def reference_lost(self, node: str) -> Any:
        return self._verb("reference_lost", node)

    def pause(self, node: str, process: str) -> Any:
        return self._verb("pause", node, process)

    def kill(self, node: str, process: str) -> None:
        self.calls.append(("kill", node, process))

    def sentinel_failover(self) -> None:
        self.calls.append(("sentinel_failover",))


class FakeLab:
    """What `inject` uses of a Lab: its fault verbs, restarts, the BMC's power and the timeline."""

    def __init__(self, arbiter: bool) -> None:
        self.faults = FakeFaults()
        self.plan = SimpleNamespace(spec=SimpleNamespace(arbiter=arbiter), node=lambda name: SimpleNamespace(name=name))
        self.timeline = Timeline()

    def restart_keepalived(self, node: str) -> None:
        self.faults.calls.append(("restart_keepalived", node))

    def restart_agent(self, node: str) -> None:
        self.faults.calls.append(("restart_agent", node))

    def power(self, node: str, state: str) -> None:
        self.faults.calls.append(("power", node, state))


def injected(fault: Fault, arbiter: bool = True) -> tuple[FakeLab, Any]:
    lab = FakeLab(arbiter)
    return lab, inject(cast(Lab, lab), fault)


@pytest.mark.parametrize(
    ("fault", "call"),
    [
        (Fault("hb-cut", node="a", medium="lan"), ("heartbeat_cut", "a", "lan")),
        (Fault("hb-cut", medium="ethernet"), ("heartbeat_cut", None, "ethernet")),
        (Fault("vrrp-loss", node="b", percent=20), ("vrrp_loss", "b", 20)),
        (Fault("bridge", node="a", peer="c"), ("bridge", "a", "c")),
        (Fault("vrrp-cut", direction="in"), ("vrrp_cut", None, "in")),
        (Fault("link-down", node="b", link="mgmt"), ("link_down", "b", "mgmt")),
        (Fault("pause", node="a", process="keepalived"), ("pause", "a", "keepalived")),
        (Fault("power-off", node="b"), ("power", "b", "off")),
    ],
)
def test_a_fault_reaches_its_lab_verb_with_its_arguments_and_its_heal_undoes_it(
    fault: Fault, call: tuple[Any, ...]
) -> None:
    lab, heal = injected(fault)
    assert lab.faults.calls == [call]
    heal()
    undo = ("power", "b", "on") if fault.kind == "power-off" else ("heal", *call)
    assert lab.faults.calls[-1] == undo


def test_every_kind_a_schedule_can_draw_is_injected() -> None:
    drawn = {e.fault.kind: e.fault for seed in range(40) for n in (2, 3) for e in draw(seed, 120, n).events}
    drawn.update({e.fault.kind: e.fault for e in draw(7, 120, 2, witness="sentinel").events})
    assert set(drawn) == set(CATALOGUE) - set(NOT_YET)
    for fault in drawn.values():
        lab, _ = injected(fault)
        assert lab.faults.calls, fault.describe()


def test_with_keepalived_alone_a_fault_on_the_agent_acts_on_nothing() -> None:
    for fault in (Fault("agent-restart", node="a"), Fault("kill", node="b", process="agent")):
        lab, heal = injected(fault, arbiter=False)
        assert heal is None and lab.faults.calls == []
        assert [e.kind for e in lab.timeline.sorted()] == [NOTE]
