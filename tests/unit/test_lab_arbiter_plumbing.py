"""The lab's arbiter plumbing without a lab: keepalived.conf, the on-boot script, agent logs on the timeline,
the checker's fence verdict, the bench's goals and `lab compare`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from arbiter.lab import agentconf, agentlog, topology
from arbiter.lab.bench import scenarios as bench
from arbiter.lab.checker import judge
from arbiter.lab.compare import compare
from arbiter.lab.events import DECISION, FAULT, FENCE, GATE, POWER, VIP_ADD, VIP_DEL, Event
from arbiter.lab.topology import LabSpec, make_plan

VIP = "10.0.0.100"


def test_keepalived_alone_has_no_gate_and_no_hook() -> None:
    plan = make_plan(LabSpec(), prefix="kal0000")
    conf = topology.keepalived_conf(plan, plan.nodes[0])
    assert "track_file" not in conf
    assert "notify " not in conf


def test_with_the_arbiter_each_instance_gets_its_gate_and_the_hook() -> None:
    plan = make_plan(LabSpec(arbiter=True, instances=2), prefix="kal0000")
    node = plan.nodes[1]
    conf = topology.keepalived_conf(plan, node)
    hook = Path(plan.python).parent / "keepalived-arbiter-notify"
    for name in ("VI_1", "VI_2"):
        gate = topology.gate_path(node, name)
        assert f'track_file arbiter_{name} {{\n    file "{gate}"\n    init_file 1 overwrite\n}}' in conf
        block = conf.split(f"vrrp_instance {name} {{", 1)[1].split("\n}\n", 1)[0]
        assert f"    track_file {{\n        arbiter_{name} weight 0\n    }}" in block
        assert f'    notify "{hook}"' in block
    # The gate paths keepalived watches are the ones the agent's config writes.
    gate = topology.gate_path(node, "VI_1")
    assert f'track_file = "{gate}"' in agentconf.arbiter_config(plan, node)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("keepalived") is None, reason="needs root and keepalived")
def test_keepalived_accepts_the_arbiter_config(tmp_path: Path) -> None:
    plan = make_plan(LabSpec(arbiter=True, instances=2), prefix="kal0000")
    node = plan.nodes[0]
    conf = tmp_path / "keepalived.conf"
    conf.write_text(topology.keepalived_conf(plan, node).replace(node.dir, str(tmp_path)))
    ns = f"kaltest{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth9"], check=True)
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "keepalived", "--config-test", "-f", str(conf)],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    assert done.returncode == 0, done.stderr + done.stdout


def test_on_boot_waits_for_the_gates_then_execs_the_agent_with_its_pid_file() -> None:
    plan = make_plan(LabSpec(arbiter=True, instances=2), prefix="kal0000")
    node = plan.nodes[0]
    script = agentconf.on_boot_script(plan, node)
    assert script.startswith("#!/bin/sh\n")
    gates = [topology.gate_path(node, name) for name in ("VI_1", "VI_2")]
    assert f"[ -s {gates[0]} ] && [ -s {gates[1]} ]" in script
    assert script.index("until") < script.index("echo $$ > agent.pid") < script.index("exec ")
    agent = Path(plan.python).parent / "keepalived-arbiter"
    assert f"exec chrt --rr --reset-on-fork 1 {agent} run -c {node.dir}/arbiter.toml >> agent.log 2>&1" in script


def test_on_boot_is_written_only_with_the_arbiter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology, "LAB_ROOT", tmp_path)
    for arbiter in (False, True):
        plan = make_plan(LabSpec(arbiter=arbiter), prefix=f"kal000{int(arbiter)}")
        for node in plan.nodes:
            Path(node.dir).mkdir(parents=True)
        agentconf.write_agent_files(plan)
        assert Path(plan.nodes[0].dir, topology.ON_BOOT).exists() is arbiter


# --- agent logs ---------------------------------------------------------------------------------------------


def line(**fields: Any) -> str:
    return json.dumps(fields)


def test_agent_log_lines_become_changes_on_the_timeline() -> None:
    text = "\n".join(
        [
            "starting keepalived-arbiter",  # not JSON: skipped
            line(mono=10.0, instance="VI_1", rule="S0", reason="first round pending", gate="closed"),
            line(mono=10.2, instance="VI_1", rule="S0", reason="first round pending", gate="closed"),
            line(mono=11.0, instance="VI_1", rule="B2", reason="backup", gate="open"),
            line(mono=11.2, instance="VI_1", rule="H1", reason="lease mine", gate="open"),
            line(mono=12.0, instance="VI_1", rule="H1", reason="fence", gate="open", actions=["Fence(peer='node-a')"]),
            line(mono=12.2, instance="VI_1", rule="H1", reason="fence", gate="open", actions=["Fence(peer='node-a')"]),
            line(mono=13.0, event="fence", peer="node-a", outcome="OFF", level=1),
            "[1, 2]",
            "{broken",
        ]
    )
    records = agentlog.parse_log(text, "b", wall_minus_mono=0.0)
    events = agentlog.timeline_events(records)
    assert [(e.t, e.kind, e.node) for e in events] == [
        (10.0, GATE, "b"),
        (11.0, GATE, "b"),
        (11.2, DECISION, "b"),
        (12.0, FENCE, "a"),
        (13.0, FENCE, "a"),
    ]
    assert events[0].detail == "VI_1 closed S0: first round pending"
    assert events[3].detail.startswith("by b: requested")
    assert events[4].detail.startswith("by b: confirmed")


# Lines as the daemon writes them (from a lab run's agent.log; the proofs shortened).
PROOF = "status OFF read from ipmi 10.0.9.21:623 before any power-off"
DAEMON_LOG = "\n".join(
    [
        line(ts=1795631777.873, mono=11401.4255, event="decision", node="node-b", instance="VI_1", rule="H1",
             gate="open", reason="holding the VIP with the lease (token 17)", state="MASTER", lease="mine",
             actions=["Fence"]),
        "INFO fencers.orchestration: fence node-a level 1 ipmi (ipmi 10.0.9.21:623): already-off in 0.018s",
        line(ts=1795631777.891, mono=11401.4436, event="fence-attempt", node="node-b", peer="node-a", level=1,
             driver="ipmi", device="ipmi 10.0.9.21:623", token=17, duration_ms=17.9, result="already-off",
             proof=PROOF, detail=""),
        line(ts=1795631777.891, mono=11401.4437, event="fence", node="node-b", peer="node-a", token=17,
             outcome="off", proof=PROOF, reason="node-a is off"),
        line(ts=1795631778.1, mono=11401.6, event="medium", node="node-b", peer="node-a", medium="udp:eth0", up=False),
    ]
)  # fmt: skip


def test_the_daemons_fence_lines() -> None:
    records = agentlog.parse_log(DAEMON_LOG, "b", wall_minus_mono=0.0)
    events = agentlog.timeline_events(records, ["a", "b"])
    fences = [(e.node, e.detail.split(" (")[0]) for e in events if e.kind == FENCE]
    assert fences == [("a", "by b: requested"), ("a", "by b: attempt"), ("a", "by b: confirmed")]
    assert "level 1 ipmi 10.0.9.21:623 already-off 17.9 ms" in events[2].detail
    assert events[0].t == 11401.4255  # the monotonic stamp, not the wall clock


def test_wall_clock_stamps_move_onto_the_monotonic_clock() -> None:
    epoch = line(time=1_700_000_010.5, instance="VI_1", rule="B2", reason="", gate="open")
    iso = line(ts="2023-11-14T22:13:30.500000+00:00", instance="VI_1", rule="B2", reason="", gate=1)
    a = agentlog.parse_line(epoch, "a", wall_minus_mono=1_700_000_000.0)
    b = agentlog.parse_line(iso, "a", wall_minus_mono=1_700_000_000.0)
    assert a is not None and a.t == pytest.approx(10.5)
    assert b is not None and b.t == pytest.approx(10.5) and b.gate == "closed"


def test_a_failed_fence_is_not_a_confirmation() -> None:
    r = agentlog.parse_line(line(mono=1.0, event="fence", peer="node-a", outcome="TIMEOUT"), "b", 0.0)
    assert r is not None and (r.fence_target, r.fence_state) == ("a", "failed")


# --- the checker's verdict on how the old master let go ---------------------------------------------------------


def fenced_history(fence_at: float) -> list[Event]:
    return [
        Event(1.0, VIP_ADD, "a", VIP),
        Event(5.0, FAULT, "a", "isolate"),
        Event(8.5, VIP_ADD, "b", VIP),
        Event(9.0, FENCE, "a", "by b: requested"),
        Event(9.4, VIP_DEL, "a", VIP),  # the BMC cut its power
        Event(fence_at, FENCE, "a", "by b: confirmed (outcome=OFF)"),
    ]


def test_fence_before_keep_when_the_overlap_ends_with_the_fence() -> None:
    v = judge(fenced_history(9.5), ["a", "b"], VIP, 5.0, None, 20.0, "a")
    assert (v.fence_before_keep, v.released_by, v.fence_at) == (True, "fence", 9.5)
    assert v.dual_master_ms == pytest.approx(900)


def test_a_power_off_without_a_fence_request_before_it() -> None:
    power_off = [Event(1.0, VIP_ADD, "a", VIP), Event(5.0, VIP_DEL, "a", VIP), Event(5.01, POWER, "a", "off")]
    v = judge([*power_off, Event(8.5, VIP_ADD, "b", VIP)], ["a", "b"], VIP, 4.9, None, 20.0, "a")
    assert v.released_by == "power-off"


def test_no_fence_before_keep_when_the_old_master_outlives_the_confirmation() -> None:
    history = [e for e in fenced_history(9.2) if e.kind != VIP_DEL] + [Event(12.0, VIP_DEL, "a", VIP)]
    v = judge(history, ["a", "b"], VIP, 5.0, None, 20.0, "a")
    assert v.fence_before_keep is False


def test_step_down_and_keepalived_alone() -> None:
    history = [
        Event(1.0, VIP_ADD, "a", VIP),
        Event(5.0, FAULT, "a", "isolate"),
        Event(7.5, GATE, "a", "VI_1 closed H2: lease expiring"),
        Event(7.51, VIP_DEL, "a", VIP),
        Event(8.5, VIP_ADD, "b", VIP),
    ]
    v = judge(history, ["a", "b"], VIP, 5.0, None, 20.0, "a")
    assert (v.released_by, v.fence_before_keep, v.dual_master_ms) == ("step-down", None, 0)
    alone = judge([e for e in history if e.kind != GATE], ["a", "b"], VIP, 5.0, None, 20.0, "a")
    assert (alone.released_by, alone.fence_before_keep) == ("keepalived", None)


# --- the bench's goals --------------------------------------------------------------------------------------


def run(
    holders: list[str], *, dual: float = 0, flaps: int = 0, failover: float | None = None, **kw: Any
) -> dict[str, Any]:
    return {
        "seed": 1,
        "dual_master_ms": dual,
        "arp_flaps": flaps,
        "failover_ms": failover,
        "settled_ms": failover,
        "holders_at_end": holders,
        "violations": [],
        "released_by": kw.get("released_by"),
        "fence_before_keep": kw.get("keep"),
        "fence_duration_ms": kw.get("fence_ms"),
        "transitions_after_fault": kw.get("transitions", 0),
        "tokens": kw.get("tokens"),
        "duration_s": 20.0,
    }


def row(alone: list[dict[str, Any]], arbiter: list[dict[str, Any]]) -> dict[str, Any]:
    return {"alone": bench.summarise(alone), "arbiter": bench.summarise(arbiter)}


def test_goals_are_judged_from_the_figures_and_the_agent_ones_are_not_measured() -> None:
    rows = {
        "vrrp-cut v2/1s": row([run(["a"], dual=5000, flaps=2)], [run(["a"])]),
        "hb-cut v2/1s": row([run(["a"], dual=5000, flaps=2)], [run(["a"], dual=12.0)]),
        "isolate v2/1s": row([run(["a", "b"], dual=9000)], [run(["b"], dual=800, released_by="step-down")]),
        "power-off v2/1s": row(
            [run(["b"], failover=f) for f in (3500, 3600, 3550)], [run(["b"], failover=f) for f in (3600, 3700, 3650)]
        ),
        "pause-agent-isolate v2/1s": row([run(["a", "b"])], [run(["b"], keep=True, released_by="fence")]),
        "reference-lost v2/1s": row([run(["a"])], [run(["b"], failover=5000)]),
        "redis-restart-empty v2/1s": row([run(["a"])], [run(["a"], tokens={"before": 3, "after": 9})]),
    }
    judged = {(g.case, g.goal): g.met for g in bench.goals(rows, master_down_ms=3600)}
    assert judged[("vrrp-cut", "dual_master_ms = 0 and arp_flaps = 0")] is True
    assert judged[("hb-cut", "dual_master_ms = 0 and arp_flaps = 0")] is False
    assert judged[("isolate", "the isolated node (a) ends without the VIP")] is True
    assert judged[("isolate", "a fence or step-down event with its proof")] is True
    assert judged[("power-off v2/1s", "failover ≤ 1.10 × keepalived alone (medians)")] is True
    assert judged[("power-off v3/0.1s", "failover ≤ 1.10 × keepalived alone (medians)")] is None
    assert judged[("pause-agent-isolate", "b fences a, and only then keeps the VIP")] is True
    assert judged[("reference-lost", "the backup holds the VIP within failover + lease TTL")] is True
    assert judged[("redis-restart-empty", "tokens still increasing")] is True
    agent = [g for g in bench.goals(rows, 3600) if g.case == "agent"]
    assert agent and all(g.met is None and "not measured" in g.figure for g in agent)
    measured = {
        "decision": {"samples": 100, "p50_ms": 0.8, "p99_ms": 2.5},
        "hook": {"hook_ms_median": 20.7, "pass_ms_median": 18.5, "ratio": 1.12, "rounds": 100},
    }
    judged_agent = [(g.met, g.figure) for g in bench.goals(rows, 3600, measured) if g.case == "agent"]
    assert [met for met, _ in judged_agent] == [True, False, True]
    assert judged_agent[1][1] == "p99 2.5 ms (100 VIP appearances on node b)"


def test_holders_text_counts_different_endings() -> None:
    assert bench.holders_text([run(["b"]), run(["b"])]) == "b"
    assert bench.holders_text([run(["b"]), run(["a", "b"]), run(["b"])]) == "b×2 a+b×1"


# --- lab compare ----------------------------------------------------------------------------------------------


def result(arbiter: bool, dual: float) -> dict[str, Any]:
    return {
        "scenario": "vrrp-cut",
        "arbiter": arbiter,
        "dual_master_ms": dual,
        "arp_flaps": 0,
        "failover_ms": None,
        "no_master_ms": 0.0,
        "holders_at_end": ["a"],
        "violations": ["dual master"] if dual else [],
        "timeline": [
            {"t": 1.0, "kind": "vip-add", "node": "a", "detail": VIP},
            {"t": 6.0, "kind": "fault", "node": "", "detail": "vrrp-cut both"},
        ],
    }


def test_compare_prints_both_runs_side_by_side(tmp_path: Path) -> None:
    for name, arbiter, dual in (("alone", False, 5014.9), ("arbiter", True, 0.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(result(arbiter, dual)))
    text = compare(tmp_path / "alone", tmp_path / "arbiter")
    assert "vrrp-cut: keepalived alone" in text and "vrrp-cut: with the arbiter" in text
    figures = next(x for x in text.splitlines() if x.startswith("dual master (ms)")).split()
    assert figures[-2:] == ["5014.9", "0"]
    assert any("  -5.000 vip-add" in x and x.count("vip-add") == 2 for x in text.splitlines())


def test_the_table_renders_every_case_and_goal() -> None:
    rows = {"vrrp-cut v2/1s": row([run(["a"], dual=5000, flaps=2)], [run(["a"])])}
    for figures in rows.values():
        figures["failover_ratio"] = figures["settled_ratio"] = None
    judged = bench.goals(rows, 3600)
    text = bench.render(
        {"runs_per_power_off": 5, "rows": rows, "goals": [g.as_dict() for g in judged], "duration_s": 1.0}
    )
    assert "vrrp-cut v2/1s" in text and "5000" in text
    assert "met          vrrp-cut" in text and "not measured agent" in text
