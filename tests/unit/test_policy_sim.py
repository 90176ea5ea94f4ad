"""Hypothesis state machine: two and three nodes, each deciding on its own view, under random faults.

After every step the world checks the safety rules (see policy_sim.World._check and the Violation raises).
At the end every fault is healed and liveness is asserted: exactly one node holds the VIP, with its gate
open, within the bound below, and keeps it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings, target
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from arbiter.policy import decide, may_resume
from tests.unit.policy_sim import DEADTIME, POWER_TIMEOUT, TICK, TTL, Edges, World, master_down

# Keepalived's own master-down plus one lease lifetime, one fence timeout and a heartbeat deadtime — twice,
# because a failed fence is retried only after the power timeout.
LIVENESS_BOUND = 2 * (master_down(50) + TTL + POWER_TIMEOUT + DEADTIME)
STABLE_TICKS = 5


class Cluster(RuleBasedStateMachine):
    names: tuple[str, ...] = ("a", "b")
    edges = Edges()
    decide_fn = staticmethod(decide)  # the mutation check (policy_mutations.py) swaps in a broken rule
    resume_fn = staticmethod(may_resume)

    def __init__(self) -> None:
        super().__init__()
        self.world = World(list(self.names), edges=self.edges, decide_fn=self.decide_fn, resume_fn=self.resume_fn)
        self.operator_off: set[str] = set()

    @initialize(nopreempt=st.booleans(), warmup=st.integers(min_value=0, max_value=40))
    def boot(self, nopreempt: bool, warmup: int) -> None:
        self.world = World(
            list(self.names), nopreempt=nopreempt, edges=self.edges, decide_fn=self.decide_fn, resume_fn=self.resume_fn
        )
        self.world.run(warmup)

    def _node(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(self.names))

    def _pair(self, data: st.DataObject) -> tuple[str, str]:
        src = data.draw(st.sampled_from(self.names))
        dst = data.draw(st.sampled_from([n for n in self.names if n != src]))
        return src, dst

    @rule(ticks=st.integers(min_value=1, max_value=40))
    def advance(self, ticks: int) -> None:
        self.world.run(ticks)

    @rule(data=st.data(), both=st.booleans())
    def cut_vrrp(self, data: st.DataObject, both: bool) -> None:
        src, dst = self._pair(data)
        self.world.vrrp_cut.add((src, dst))
        if both:
            self.world.vrrp_cut.add((dst, src))

    @rule(data=st.data(), both=st.booleans())
    def cut_heartbeat(self, data: st.DataObject, both: bool) -> None:
        src, dst = self._pair(data)
        self.world.hb_cut.add((src, dst))
        if both:
            self.world.hb_cut.add((dst, src))

    @rule(data=st.data())
    def isolate(self, data: st.DataObject) -> None:
        node = self._node(data)
        for other in self.names:
            if other != node:
                self.world.vrrp_cut |= {(node, other), (other, node)}
                self.world.hb_cut |= {(node, other), (other, node)}
        self.world.redis_cut.add(node)

    @rule(data=st.data())
    def redis_partition(self, data: st.DataObject) -> None:
        self.world.redis_cut.add(self._node(data))

    @rule()
    def redis_stop(self) -> None:
        self.world.store.alive = False

    @rule(skew=st.sampled_from([0.0, -3.0]))
    def redis_restart_empty(self, skew: float) -> None:
        self.world.restart_store_empty(skew)

    @rule()
    def redis_readonly(self) -> None:
        self.world.store.readonly = True

    @rule(
        data=st.data(),
        lease_delay=st.sampled_from([0.0, TICK, 3 * TICK, 6 * TICK]),
        reference_delay=st.sampled_from([0.0, 2 * TICK]),
    )
    def restart_agent(self, data: st.DataObject, lease_delay: float, reference_delay: float) -> None:
        """A crash (or an upgrade) and a start; the lease store may answer after the heartbeats."""
        self.world.restart_agent(self._node(data), lease_delay, reference_delay)

    @rule(data=st.data())
    def cut_pair(self, data: st.DataObject) -> None:
        src, dst = self._pair(data)
        self.world.vrrp_cut |= {(src, dst), (dst, src)}
        self.world.hb_cut |= {(src, dst), (dst, src)}

    @rule(data=st.data())
    def heal_heartbeat(self, data: st.DataObject) -> None:
        src, dst = self._pair(data)
        self.world.hb_cut -= {(src, dst), (dst, src)}

    @rule(data=st.data())
    def reference_lost(self, data: st.DataObject) -> None:
        self.world.reference_lost.add(self._node(data))

    @rule(data=st.data())
    def pause_agent(self, data: st.DataObject) -> None:
        self.world.nodes[self._node(data)].paused = True

    @rule(data=st.data())
    def resume_agent(self, data: st.DataObject) -> None:
        self.world.nodes[self._node(data)].paused = False

    @rule(data=st.data())
    def crash_keepalived(self, data: st.DataObject) -> None:
        self.world.nodes[self._node(data)].ka_crashed = True

    @rule(data=st.data())
    def break_bmc(self, data: st.DataObject) -> None:
        self.world.bmc_broken.add(self._node(data))

    @precondition(lambda self: len(self.operator_off) < len(self.names) - 1)
    @rule(data=st.data())
    def power_off(self, data: st.DataObject) -> None:
        node = self._node(data)
        if self.world.nodes[node].powered:
            self.world.power_off(node)
            self.operator_off.add(node)

    @rule(data=st.data())
    def power_on(self, data: st.DataObject) -> None:
        node = self._node(data)
        self.world.power_on(node)
        self.operator_off.discard(node)

    @rule(data=st.data(), ticks=st.integers(min_value=10, max_value=60))
    def many_faults_at_once(self, data: st.DataObject, ticks: int) -> None:
        """Several faults drawn together, then time: multi-fault states that single steps rarely reach."""
        world = self.world
        pairs = [(s, d) for s in self.names for d in self.names if s != d]
        world.vrrp_cut |= {p for p in pairs if data.draw(st.booleans(), label=f"vrrp {p}")}
        world.hb_cut |= {p for p in pairs if data.draw(st.booleans(), label=f"hb {p}")}
        world.redis_cut |= {n for n in self.names if data.draw(st.booleans(), label=f"redis cut {n}")}
        for name in self.names:
            if data.draw(st.integers(0, 3), label=f"pause {name}") == 0:
                world.nodes[name].paused = True
        store = data.draw(st.sampled_from(["up", "up", "down", "readonly", "restart"]), label="store")
        if store == "down":
            world.store.alive = False
        elif store == "readonly":
            world.store.readonly = True
        elif store == "restart":
            world.restart_store_empty()
        world.run(ticks)

    @rule()
    def heal_links(self) -> None:
        self.world.heal()

    def teardown(self) -> None:
        world = self.world
        world.heal()
        for name in self.operator_off:
            world.power_on(name)
        if not any(n.powered for n in world.nodes.values()):
            world.power_on(self.names[0])
        start, stable = world.now, 0
        bound = LIVENESS_BOUND + 2 * (world.max_ttl - TTL)
        while world.now - start <= bound:
            world.step()
            stable = stable + 1 if world.settled_holder() is not None else 0
            if stable >= STABLE_TICKS:
                target(world.now - start - STABLE_TICKS * TICK, label="settle seconds after heal")
                break
        holders = [(n.name, n.kstate.value, n.gate.value, n.last_rule) for n in world.nodes.values()]
        assert stable >= STABLE_TICKS, f"no single holder {bound:.1f}s after healing: {holders}"
        target(world.max_dual_alone, label="dual master seconds while cut off")


class ThreeNodeCluster(Cluster):
    names = ("a", "b", "c")


# In CI (CI=true) the examples are derived from the test itself, not drawn at random: a submission is judged on the
# same schedules every run, and a hole found by a random run elsewhere is pinned as a fixed test
# (tests/unit/test_policy_simfix.py) instead of failing some later, unrelated submission by chance.
common = settings(
    derandomize=os.environ.get("CI") == "true",
    max_examples=2000,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestTwoNodes = Cluster.TestCase
TestTwoNodes.settings = common
TestThreeNodes = ThreeNodeCluster.TestCase
TestThreeNodes.settings = settings(common, max_examples=1000)


# --- the harsher edges, one at a time (so a failure names the edge), then all together -------------------


class HookCluster(Cluster):
    """keepalived's state reaches the agent through notify hooks that may be late and out of order."""

    edges = Edges(hooks=True)

    @rule(data=st.data(), delay=st.sampled_from([TICK, 2 * TICK]), reorder=st.booleans())
    def hooks_late(self, data: st.DataObject, delay: float, reorder: bool) -> None:
        node = self.world.nodes[self._node(data)]
        node.hook_delay, node.hook_reorder = delay, reorder


class LateAnswerCluster(Cluster):
    edges = Edges(late_answers=True)


class SkewCluster(Cluster):
    edges = Edges(prio0=True)


class NoAdvertCluster(Cluster):
    edges = Edges(no_advert_default=True)


class MixedTtlCluster(Cluster):
    edges = Edges(ttls=(3.0, 4.5))


class KeepalivedStartCluster(Cluster):
    """keepalived restarted (or a crashed one started again) writes its gate closed (init_file 1 overwrite)."""

    edges = Edges(keepalived_starts=True)

    @rule(data=st.data())
    def restart_keepalived(self, data: st.DataObject) -> None:
        self.world.restart_keepalived(self._node(data))


class RestartCluster(Cluster):
    """Issue 12 item 6: agent restarts at any moment, with late answers and keepalived's priority-0 handover."""

    edges = Edges(late_answers=True, prio0=True)


edge_settings = settings(common, max_examples=300)
TestHooks = HookCluster.TestCase
TestHooks.settings = edge_settings
TestLateAnswers = LateAnswerCluster.TestCase
TestLateAnswers.settings = edge_settings
TestPriorityZeroSkew = SkewCluster.TestCase
TestPriorityZeroSkew.settings = edge_settings
TestNoAdvertSinceStart = NoAdvertCluster.TestCase
# Found (08:38 UTC run): VRRP cut a→b before a became master at cold start; b never saw an advert of a (adverts_at
# None), so V1 could not fire and b took the VIP at master-down while hearing a hold it (VIP flash). Issue 12
# item 3 (V1/L3 count from listening_since) fixed it; the sim now reports listening_since as the listener does.
TestNoAdvertSinceStart.settings = settings(edge_settings, phases=[Phase.explicit, Phase.reuse, Phase.generate])
TestMixedTtl = MixedTtlCluster.TestCase
TestMixedTtl.settings = edge_settings
TestKeepalivedStarts = KeepalivedStartCluster.TestCase
# Found (09:15 UTC run, then in TestTwoNodes when heal restarted keepalived): both keepalived timers restarted
# together, both nodes become MASTER in one tick behind a one-way cut; b kept the VIP by L2 on a's last frame
# (BACKUP, 0.8 s old) while a held the lease. L2 now wants a recent frame (test_l2_handover_on_a_stale_frame).
TestKeepalivedStarts.settings = settings(edge_settings, phases=[Phase.explicit, Phase.reuse, Phase.generate])
TestRestarts = RestartCluster.TestCase
TestRestarts.settings = settings(common, max_examples=600)
