"""What the agent refuses at start and what it runs with (issue 12 item 9).

A heartbeat medium missing at this moment (serial device, NIC) is a warning for check-config and never stops
`run`; a config the agent cannot understand stops `run`, and then every gate the file names is left closed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from arbiter import cli, config
from tests.unit.test_config import node_config, write


def gate_file(tmp_path: Path, data: dict[str, Any], content: str = "0\n") -> Path:
    """The instance's gate as `init_file 0` (or an earlier run) left it: open."""
    gate = Path(data["instance"][0]["track_file"])
    gate.write_text(content, encoding="ascii")
    return gate


def test_check_config_warns_about_a_serial_device_missing_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = node_config(tmp_path)
    data["heartbeat"]["serial"][0]["device"] = str(tmp_path / "ttyUSB0")
    code = cli.main(["check-config", "-c", str(write(tmp_path, data))])
    out, err = capsys.readouterr()
    assert code == 0
    assert err == (
        f"warning: heartbeat.serial[0].device: no such device '{tmp_path / 'ttyUSB0'}': "
        "that medium stays down until it appears\n"
    )
    assert "valid (1 heartbeat medium(s) missing now: the agent runs with them down)" in out


def test_check_config_warns_about_a_heartbeat_nic_missing_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = node_config(tmp_path)
    data["heartbeat"]["udp"] = [{"interface": "lo"}, {"interface": "nosuch7"}]
    code = cli.main(["check-config", "-c", str(write(tmp_path, data))])
    _, err = capsys.readouterr()
    assert code == 0
    assert err.startswith("warning: heartbeat.udp[1].interface: no such network interface on this node ('nosuch7')")
    cfg = config.load(write(tmp_path, data))
    assert config.check(cfg, offline=False) == []  # nothing `run` would refuse
    assert [p.path for p in config.media_warnings(cfg)] == ["heartbeat.udp[1].interface"]


def test_what_can_never_work_is_still_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = node_config(tmp_path)
    data["instance"][0]["track_file"] = str(tmp_path / "no-dir" / "VI_1.gate")
    assert cli.main(["check-config", "-c", str(write(tmp_path, data))]) == 2
    assert capsys.readouterr().err.startswith("instance[0].track_file: directory ")


def test_run_with_an_invalid_config_leaves_the_gate_closed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = node_config(tmp_path)
    data["lease"]["ttl_ms"] = 1000  # below renew_ms + 2 × timeout_ms: a config the agent cannot run with
    gate = gate_file(tmp_path, data)
    assert cli.main(["run", "-c", str(write(tmp_path, data))]) == cli.EXIT_INVALID
    err = capsys.readouterr().err
    assert err.startswith("lease.ttl_ms: must exceed renew_ms + 2 × timeout_ms")
    assert f"gate {gate} closed" in err
    assert gate.read_text(encoding="ascii") == "1\n"


def test_run_with_a_config_that_does_not_validate_closes_every_gate_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = node_config(tmp_path)
    second = dict(data["instance"][0], name="VI_2", virtual_router_id=52, track_file=str(tmp_path / "VI_2.gate"))
    second["bogus"] = 1  # an unknown key: pydantic refuses the whole file
    data["instance"].append(second)
    gates = [gate_file(tmp_path, data), Path(second["track_file"])]
    gates[1].write_text("0\n", encoding="ascii")
    assert cli.main(["run", "-c", str(write(tmp_path, data))]) == cli.EXIT_INVALID
    assert "instance[1].bogus: unknown key" in capsys.readouterr().err
    assert [g.read_text(encoding="ascii") for g in gates] == ["1\n", "1\n"]


def test_run_with_a_file_that_is_not_toml_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "arbiter.toml"
    path.write_text("[node\nname = ", encoding="utf-8")
    assert cli.main(["run", "-c", str(path)]) == cli.EXIT_INVALID
    assert "not valid TOML" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arbiter.toml"]


def test_run_that_fails_while_starting_leaves_the_gate_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = node_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / "tokens.json").write_text("{ not json", encoding="utf-8")  # the agent refuses a corrupt token file
    data["node"]["state_dir"] = str(state)
    gate = gate_file(tmp_path, data)
    assert cli.main(["run", "-c", str(write(tmp_path, data))]) == 1
    err = capsys.readouterr().err
    assert "TokenFileError" in err
    assert gate.read_text(encoding="ascii") == "1\n"
