"""The command line: --help lists only commands that work; policy explain fills in this config's timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arbiter.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "arbiter.toml.example"


def test_help_lists_exactly_the_working_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    # Command rows are indented by four spaces; wrapped help text is indented further.
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ") and line[4] != " "}
    assert listed == {
        "check-config",
        "check-keepalived",
        "status",
        "pause",
        "resume",
        "policy",
        "run",
        "fence",
        "token",
        "lab",
    }


def test_policy_explain_fills_in_the_timings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", "-c", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    # advert_int 1 s, priority 150, VRRPv2: 3 × 1 + (256 − 150)/256 = 3.414 s.
    assert "keepalived master-down interval: 3.414s" in out
    assert "adverts missing 1.500s while a heartbeat says MASTER" in out
    assert "self-demotion 2.5s after the last renewal was sent" in out
    assert "no-lease fence after 3s of silence" in out
    for rule in ("S0", "Q1", "L1", "V1", "D1", "H1", "H5", "B2"):
        assert f"  {rule}  " in out


def test_policy_explain_refuses_a_broken_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "a.toml"
    broken.write_text(EXAMPLE.read_text().replace("ttl_ms = 3000", "ttl_ms = 1000"))
    assert main(["policy", "explain", "-c", str(broken)]) == 2
    assert capsys.readouterr().err.startswith("lease.ttl_ms: must exceed renew_ms + 2 × timeout_ms")


def test_console_script_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "arbiter", "policy", "explain", "-c", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "rules (first match wins):" in done.stdout


def test_fence_off_needs_yes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fence", "-c", str(EXAMPLE), "node-b", "off"]) == 1
    assert "refusing to power off node-b without --yes" in capsys.readouterr().err


def test_fence_on_needs_yes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fence", "-c", str(EXAMPLE), "node-b", "on"]) == 1
    assert "refusing to power on node-b without --yes" in capsys.readouterr().err


def test_fence_unknown_node_lists_the_fenceable_ones(capsys: pytest.CaptureFixture[str]) -> None:
    # The example's password files do not exist here: drivers are built lazily enough to name the node first.
    code = main(["fence", "-c", str(EXAMPLE), "node-z", "status"])
    err = capsys.readouterr().err
    assert code == 1
    assert "unknown node 'node-z'; fenceable: node-b" in err


def test_fence_with_a_broken_config_is_an_error_not_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "a.toml"
    broken.write_text(EXAMPLE.read_text().replace("ttl_ms = 3000", "ttl_ms = 1000"))
    # Exit 2 would mean "off" in fence-agents' vocabulary: a config error must be 1.
    assert main(["fence", "-c", str(broken), "node-b", "status"]) == 1
    assert "lease.ttl_ms: must exceed" in capsys.readouterr().err


def test_run_refuses_a_config_that_does_not_fit_this_node(capsys: pytest.CaptureFixture[str]) -> None:
    # The example names key files and interfaces this test machine does not have: refused before any IO.
    assert main(["run", "-c", str(EXAMPLE)]) == 2
    err = capsys.readouterr().err
    assert "heartbeat.key_file: cannot read '/etc/keepalived-arbiter/heartbeat.key'" in err


def test_run_refuses_an_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "a.toml"
    broken.write_text(EXAMPLE.read_text().replace("deadtime_ms = 1000", "deadtime_ms = 300"))
    assert main(["run", "-c", str(broken)]) == 2
    assert "heartbeat.deadtime_ms: must exceed 2 × interval_ms = 400 (got 300)" in capsys.readouterr().err
