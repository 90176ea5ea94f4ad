"""`lab bench loss` (arbiter/lab/bench/loss.py): what it runs, and its summary and goals, without a lab."""

from __future__ import annotations

from typing import Any

from arbiter.lab.bench import TARGETS, loss


class FakeScenarios:
    """A `run_scenario` stand-in: records each call and answers the figures given per (scenario, arbiter)."""

    def __init__(self, figures: dict[tuple[str, bool], list[dict[str, Any]]]) -> None:
        self.figures = {k: list(v) for k, v in figures.items()}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, scenario: str, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((scenario, kwargs))
        figures = self.figures[(scenario, kwargs["arbiter"])].pop(0)
        return {"seed": kwargs["seed"], "violations": [], "phases": [], "timeline": [], **figures}


def _loss(events: int, ms: float, moves: int, seconds: float = 60.0) -> dict[str, Any]:
    figures = {"percent": 10, "seconds": seconds, "dual_events": events, "dual_master_ms": ms, "vip_moves": moves}
    return {"loss": {**figures, "dual_ms_per_min": ms * 60 / seconds}, "dual_master_ms": ms}


def _power_off(failover: float, settled: float) -> dict[str, Any]:
    return {"failover_ms": failover, "settled_ms": settled, "dual_master_ms": 0.0, "holders_at_end": ["b"]}


def test_it_runs_both_scenarios_at_vrrpv3_0_05_on_both_sides_with_the_loss_length_given() -> None:
    fake = FakeScenarios(
        {
            ("vrrp-loss", False): [_loss(3, 450.0, 6, 20.0)],
            ("vrrp-loss", True): [_loss(0, 0.0, 0, 20.0)],
            ("power-off", False): [_power_off(180.0, 150.0), _power_off(200.0, 160.0)],
            ("power-off", True): [_power_off(190.0, 155.0), _power_off(210.0, 170.0)],
        }
    )
    result = loss.measure(20.0, 1, 2, fake, lambda line: None)
    assert [(s, kw["arbiter"], kw["seed"]) for s, kw in fake.calls] == [
        ("vrrp-loss", False, 1),
        ("vrrp-loss", True, 1),
        ("power-off", False, 1),
        ("power-off", False, 2),
        ("power-off", True, 1),
        ("power-off", True, 2),
    ]
    assert all(kw["vrrp_version"] == 3 and kw["advert_int"] == 0.05 for _, kw in fake.calls)
    assert [kw.get("hold") for _, kw in fake.calls] == [20.0, 20.0, None, None, None, None]
    assert result["loss"]["alone"]["dual_events"] == 3
    assert result["loss"]["alone"]["dual_ms_per_min"] == 1350.0  # 450 ms in 20 s
    assert result["power_off"]["alone"]["failover_ms"] == 190.0  # median of 180 and 200
    assert result["failover_ratio"] == round(200.0 / 190.0, 3)
    met = {g["case"]: g["met"] for g in result["goals"]}
    assert met == {"vrrp-loss v3/0.05s": True, "power-off v3/0.05s": True}
    text = loss.render(result)
    assert "MISSED" not in text and "vrrp-loss" in text and "1350" in text


def test_a_dual_master_with_the_arbiter_or_a_slow_failover_misses_its_goal() -> None:
    loss_rows = {
        "alone": loss.summarise_loss([{"seed": 1, **_loss(2, 300.0, 4)["loss"], "gate_closes": 0}]),
        "arbiter": loss.summarise_loss([{"seed": 1, **_loss(1, 12.0, 2)["loss"], "gate_closes": 40}]),
    }
    power_off = {
        "alone": loss.summarise_power_off([{"seed": 1, **_power_off(200.0, 150.0)}]),
        "arbiter": loss.summarise_power_off([{"seed": 1, **_power_off(230.0, 160.0)}]),
    }
    judged = {g.case: g for g in loss.goals(loss_rows, power_off)}
    assert judged["vrrp-loss v3/0.05s"].met is False
    assert "1 events, 12.0 ms" in judged["vrrp-loss v3/0.05s"].figure
    assert judged["power-off v3/0.05s"].met is False  # 230 / 200 = 1.15


def test_no_run_means_not_measured_not_met() -> None:
    empty = {side: loss.summarise_loss([], ["seed 1: lab failed"]) for side in loss.SIDES}
    none = {side: loss.summarise_power_off([]) for side in loss.SIDES}
    assert [g.met for g in loss.goals(empty, none)] == [None, None]


def test_the_bench_is_registered() -> None:
    assert "loss" in TARGETS


def test_gate_closes_count_only_closes_from_the_start_of_the_loss() -> None:
    timeline = [
        {"t": 1.0, "kind": "gate", "node": "b", "detail": "VI_1 closed S0: start-up"},  # before the loss
        {"t": 5.0, "kind": "fault", "node": "", "detail": "vrrp-loss 10%"},
        {"t": 6.0, "kind": "gate", "node": "b", "detail": "VI_1 closed V1: adverts stopped"},
        {"t": 6.1, "kind": "gate", "node": "b", "detail": "VI_1 open B2: backup"},
        {"t": 6.2, "kind": "decision", "node": "b", "detail": "VI_1 closed L3: lease renewed"},  # no gate change
        {"t": 7.0, "kind": "gate", "node": "a", "detail": "VI_1 closed H2: self-demotion"},
    ]
    result = {
        "seed": 1,
        "violations": [],
        "phases": [{"phase": "steady", "from_s": 2.0}, {"phase": "fault", "from_s": 5.0}],
        "timeline": timeline,
        **_loss(0, 0.0, 0, 30.0),
    }
    reduced = loss.reduce_loss(result)
    assert reduced["gate_closes"] == 2
    assert loss.summarise_loss([reduced])["gate_closes_per_min"] == 4.0  # 2 in 30 s
