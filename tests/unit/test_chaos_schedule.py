"""The chaos schedule model (arbiter/lab/chaos/schedule.py): seeded draws, their rules, JSON, describe()."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.lab.chaos.schedule import (
    BOOT_HOLD,
    CATALOGUE,
    NODE_NAMES,
    NOT_YET,
    RESTART_HOLD,
    Event,
    Fault,
    Schedule,
    ScheduleError,
    draw,
    injectable,
)


def _powered_off_windows(schedule: Schedule) -> list[tuple[str, float, float]]:
    return [
        (str(e.fault.node), e.start, e.start + e.duration + BOOT_HOLD)
        for e in schedule.events
        if e.fault.kind == "power-off"
    ]


def _assert_rules(schedule: Schedule) -> None:
    """The module's rules, written again here from the docstring rather than through problems()."""
    end = schedule.duration - schedule.quiet
    starts = [e.start for e in schedule.events]
    assert starts == sorted(starts)
    for e in schedule.events:
        instant = CATALOGUE[e.fault.kind].instant
        assert e.start >= 0
        assert e.duration == 0 if instant else e.duration >= 0.5
        assert e.start + (RESTART_HOLD if instant else e.duration) <= end + 1e-9, e
        if e.fault.node not in (None, "witness"):
            assert e.fault.node in NODE_NAMES[: schedule.nodes]
    windows = _powered_off_windows(schedule)
    for node, start, stop in windows:
        # at least one node powered: count the other nodes off at this power-off's start
        assert sum(1 for _, s, t in windows if s <= start < t) < schedule.nodes
        assert sum(1 for n, s, t in windows if n == node and s < stop and start < t) == 1  # no double power-off
        for e in schedule.events:
            if e.fault.kind in ("power-off", "serial-cut", "redis-stop", "redis-restart-empty"):
                continue
            busy = e.start + (RESTART_HOLD if CATALOGUE[e.fault.kind].instant else e.duration)
            aimed = e.fault.node in (node, None) or (e.fault.peer == node and e.fault.kind == "bridge")
            if aimed and "node" in "".join(CATALOGUE[e.fault.kind].args):
                assert not (e.start < stop and start < busy), (node, start, e)


@pytest.mark.parametrize("nodes", [2, 3])
def test_the_same_seed_draws_the_same_schedule_byte_for_byte(nodes: int) -> None:
    for seed in (0, 1, 42, 2**40):
        assert draw(seed, 90, nodes).to_json() == draw(seed, 90, nodes).to_json()


def test_different_seeds_draw_different_schedules() -> None:
    drawn = {draw(seed, 60, 2).to_json() for seed in range(30)}
    assert len(drawn) == 30


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    duration=st.floats(min_value=14, max_value=200).map(lambda d: round(d, 1)),
    nodes=st.sampled_from([2, 3]),
)
def test_every_drawn_schedule_keeps_the_rules(seed: int, duration: float, nodes: int) -> None:
    schedule = draw(seed, duration, nodes)
    assert schedule.problems() == []
    _assert_rules(schedule)
    assert schedule.events
    assert all(injectable(e.fault) is None for e in schedule.events), "a kind the lab cannot inject was drawn"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), nodes=st.sampled_from([2, 3]))
def test_every_kind_asked_for_keeps_the_rules(seed: int, nodes: int) -> None:
    schedule = draw(seed, 100, nodes, kinds=tuple(CATALOGUE), mean_gap=2.0)
    assert schedule.problems() == []
    _assert_rules(schedule)
    assert Schedule.from_json(schedule.to_json()) == schedule


def test_power_offs_never_leave_every_node_off() -> None:
    """Many power-offs on 2 nodes: some overlap with each other's boot, none with the other node's power-off."""
    seen_off = 0
    for seed in range(20):
        schedule = draw(seed, 100, 2, kinds=("power-off",), mean_gap=3.0)
        windows = _powered_off_windows(schedule)
        seen_off += len(windows)
        for _, start, _ in windows:
            assert sum(1 for _, s, t in windows if s <= start < t) == 1
    assert seen_off > 60  # the draws did try hard


def test_kinds_the_lab_cannot_inject_are_drawn_only_when_asked() -> None:
    assert set(NOT_YET) == {"clock-step"}
    default = {e.fault.kind for seed in range(50) for e in draw(seed, 120, 3).events}
    assert not default & {"clock-step", "sentinel-failover"}
    assert default >= {"vrrp-cut", "hb-cut", "power-off", "pause", "kill", "agent-restart", "redis-restart-empty"}
    assert default >= {"vrrp-loss", "bridge"}  # injectable since faults.vrrp_loss and faults.bridge
    asked = {e.fault.kind for seed in range(10) for e in draw(seed, 120, 3, kinds=("clock-step", "bridge")).events}
    assert asked == {"clock-step", "bridge"}


def test_default_draws_cut_the_heartbeat_per_nic_too() -> None:
    media = {e.fault.medium for seed in range(50) for e in draw(seed, 120, 2).events if e.fault.kind == "hb-cut"}
    assert media == {"ethernet", "lan", "hb"}


def test_a_bridge_and_a_serial_cut_of_its_cable_never_overlap() -> None:
    """A bridge cuts its pair's serial cable: a serial cut of that cable healed inside the bridge would start a
    second socat on the same ptys at the bridge's heal."""
    bridge = Event(1.0, 5.0, Fault("bridge", node="a", peer="b"))
    same = Schedule(1, 60, 3, events=(bridge, Event(2.0, 1.0, Fault("serial-cut", node="a", peer="b"))))
    assert same.problems() == ["events[1]: overlaps events[0] (bridge node=a peer=b) on the same thing"]
    other = Schedule(1, 60, 3, events=(bridge, Event(2.0, 1.0, Fault("serial-cut", node="a", peer="c"))))
    assert other.problems() == []


def test_bridge_needs_three_nodes() -> None:
    with pytest.raises(ScheduleError, match="bridge"):
        draw(1, 60, 2, kinds=("bridge",))
    bad = Schedule(1, 60, 2, events=(Event(1.0, 5.0, Fault("bridge", node="a", peer="b")),))
    assert bad.problems() == ["events[0].fault.kind: bridge needs 3 nodes (the schedule has 2)"]


@pytest.mark.parametrize(
    ("events", "want"),
    [
        # both nodes off at once
        (
            (Event(1.0, 5.0, Fault("power-off", node="a")), Event(2.0, 5.0, Fault("power-off", node="b"))),
            "events[1]: every node powered off at 2 s",
        ),
        # a's keepalived paused while a boots after its power-on
        (
            (Event(1.0, 5.0, Fault("power-off", node="a")), Event(8.0, 2.0, Fault("pause", node="a", process="agent"))),
            "events[1]: touches node a while it is powered off or booting",
        ),
        # VRRP cut at every node while a is off
        (
            (Event(1.0, 5.0, Fault("power-off", node="a")), Event(2.0, 2.0, Fault("vrrp-cut", direction="in"))),
            "events[1]: touches node a",
        ),
        (
            (
                Event(1.0, 5.0, Fault("pause", node="b", process="keepalived")),
                Event(2.0, 0.0, Fault("keepalived-restart", node="b")),
            ),
            "events[1]: overlaps events[0] (pause node=b process=keepalived) on the same thing",
        ),
        (
            (Event(1.0, 5.0, Fault("isolate", node="a")), Event(2.0, 1.0, Fault("serial-cut", node="a", peer="b"))),
            "events[1]: overlaps events[0]",
        ),
        ((Event(1.0, 0.0, Fault("redis-stop")),), "events[0].duration: at least 0.5 s"),
        ((Event(1.0, 2.0, Fault("agent-restart", node="a")),), "events[0].duration: agent-restart is instant"),
        ((Event(45.0, 10.0, Fault("redis-stop")),), "events[0]: busy until 55 s, after the quiet end begins (50 s"),
        ((Event(48.0, 0.0, Fault("redis-restart-empty")),), "events[0]: busy until 51 s"),  # RESTART_HOLD = 3
        (
            (Event(5.0, 1.0, Fault("redis-stop")), Event(4.0, 1.0, Fault("redis-stop"))),
            "events[1].start: 4.0 is before",
        ),
        ((Event(1.0, 1.0, Fault("link-down", node="c", link="lan")),), "events[0].fault.node: one of a, b (got 'c')"),
    ],
)
def test_a_schedule_that_breaks_a_rule_is_refused_naming_the_event(events: tuple[Event, ...], want: str) -> None:
    schedule = Schedule(seed=3, duration=60, nodes=2, quiet=10, events=events)
    assert any(want in p for p in schedule.problems()), schedule.problems()
    with pytest.raises(ScheduleError, match="schedule: events"):
        Schedule.from_json(schedule.to_json())


def test_power_off_and_faults_elsewhere_overlap_freely() -> None:
    fine = Schedule(
        seed=3,
        duration=60,
        nodes=2,
        events=(
            Event(1.0, 5.0, Fault("power-off", node="a")),
            Event(2.0, 5.0, Fault("pause", node="b", process="agent")),
            Event(3.0, 5.0, Fault("serial-cut", node="a", peer="b")),
            Event(3.5, 5.0, Fault("redis-stop")),
            Event(4.0, 5.0, Fault("vrrp-cut", node="b", direction="in")),
            Event(4.0, 5.0, Fault("vrrp-cut", node="b", direction="out")),
            Event(12.0, 1.0, Fault("pause", node="a", process="agent")),  # after a's boot hold
        ),
    )
    assert fine.problems() == []


def test_json_round_trip_keeps_everything() -> None:
    for seed in range(20):
        schedule = draw(seed, 150, 3, kinds=tuple(CATALOGUE), vrrp_version=3, advert_int=0.1)
        text = schedule.to_json()
        assert Schedule.from_json(text) == schedule
        assert Schedule.from_json(text).to_json() == text
        assert json.loads(text)["schema"] == 1
        assert (Schedule.from_json(text).vrrp_version, Schedule.from_json(text).advert_int) == (3, 0.1)


def test_the_keepalived_settings_do_not_change_the_faults_drawn() -> None:
    assert draw(3, 60, 2, vrrp_version=3, advert_int=0.1).events == draw(3, 60, 2).events


def _good() -> dict[str, object]:
    return {
        "schema": 1,
        "seed": 7,
        "duration": 60,
        "nodes": 2,
        "quiet": 10,
        "vrrp_version": 3,
        "advert_int": 0.1,
        "events": [
            {"start": 1, "duration": 4, "fault": {"kind": "vrrp-cut", "node": "a", "direction": "in"}},
            {"start": 2.5, "duration": 3, "fault": {"kind": "pause", "node": "b", "process": "agent"}},
        ],
    }


@pytest.mark.parametrize(
    ("path", "value", "want"),
    [
        (("schema",), 2, "schema: 1 expected (got 2)"),
        (("seed",), "7", "seed: int expected (got '7')"),
        (("nodes",), 4, "nodes: 2 or 3 (got 4)"),
        (("duration",), True, "duration: a number expected (got True)"),
        (("events",), {}, "events: list expected"),
        (("vrrp_version",), 1, "vrrp_version: 2 or 3 (got 1)"),
        (("advert_int",), 0, "advert_int: must be > 0 (got 0.0)"),
        (("events", 0, "start"), "1", "events[0].start: a number expected (got '1')"),
        (("events", 1, "fault", "kind"), "freeze", "events[1].fault.kind: one of vrrp-cut, hb-cut"),
        (("events", 0, "fault", "direction"), "up", "events[0].fault.direction: one of in, out, both (got 'up')"),
        (("events", 1, "fault", "process"), "sshd", "events[1].fault.process: one of agent, keepalived"),
        (("events", 1, "fault", "link"), "lan", "events[1].fault.link: pause takes no link"),
        (("events", 0, "fault", "colour"), "red", "events[0].fault.colour: unknown field"),
        (("events", 0, "fault", "percent"), 1.5, "events[0].fault.percent: int expected"),
        (("events", 1), "pause b", "events[1]: an object expected (got str)"),
        (("events", 0, "duration"), 60, "events[0]: busy until 61 s"),
    ],
)
def test_bad_json_names_the_field(path: tuple[str | int, ...], value: object, want: str) -> None:
    doc = _good()
    assert Schedule.from_json(json.dumps(doc)).events[1].fault.process == "agent"
    target: object = doc
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    with pytest.raises(ScheduleError) as caught:
        Schedule.from_json(json.dumps(doc))
    assert want in str(caught.value)


@pytest.mark.parametrize(
    ("text", "want"),
    [("{", "schedule: not JSON"), ("[]", "a JSON object expected"), ('{"schema": 1}', "events: missing")],
)
def test_not_a_schedule_says_so(text: str, want: str) -> None:
    with pytest.raises(ScheduleError, match=want):
        Schedule.from_json(text)


def test_missing_required_argument_is_named() -> None:
    doc = _good()
    del doc["events"][1]["fault"]["node"]  # type: ignore[index]
    with pytest.raises(ScheduleError, match=r"events\[1\]\.fault\.node: required by pause"):
        Schedule.from_json(json.dumps(doc))


def test_describe_prints_one_line_per_event() -> None:
    schedule = draw(11, 60, 3)
    lines = schedule.describe().splitlines()
    assert lines[0] == (
        f"seed 11: 60 s on 3 nodes (VRRPv2, advert_int 1 s, witness redis), {len(schedule.events)} faults, "
        "the last 10 s quiet"
    )
    assert len(lines) == 1 + len(schedule.events)
    for line, event in zip(lines[1:], schedule.events, strict=True):
        assert line.endswith(event.fault.describe())
        assert f"{event.start:.1f} s" in line
    assert Fault("vrrp-cut", direction="in").describe() == "vrrp-cut node=every direction=in"
    assert Fault("redis-restart-empty").describe() == "redis-restart-empty"


def test_draw_refuses_what_it_cannot_draw() -> None:
    with pytest.raises(ScheduleError, match="duration: 12 s leaves 2 s for faults"):
        draw(1, 12, 2)
    with pytest.raises(ScheduleError, match="nodes: 2 or 3"):
        draw(1, 60, 4)
    with pytest.raises(ScheduleError, match="kinds: one of"):
        draw(1, 60, 2, kinds=("meteor",))


def test_a_sentinel_failover_is_drawn_only_for_a_sentinel_witness_and_needs_one() -> None:
    drawn = [draw(seed, 120, 2, witness="sentinel") for seed in range(30)]
    assert any(e.fault.kind == "sentinel-failover" for d in drawn for e in d.events)
    assert all(d.witness == "sentinel" and Schedule.from_json(d.to_json()) == d for d in drawn)
    bad = Schedule(1, 60, 2, events=(Event(1.0, 0.0, Fault("sentinel-failover")),))
    assert bad.problems() == ["events[0].fault.kind: sentinel-failover needs witness sentinel (got 'redis')"]
    doc = json.loads(draw(1, 60, 2).to_json())
    del doc["witness"]  # a file written before the field: one Redis
    assert Schedule.from_json(json.dumps(doc)).witness == "redis"
    doc["witness"] = "etcd"
    with pytest.raises(ScheduleError, match="witness: one of redis, sentinel"):
        Schedule.from_json(json.dumps(doc))
