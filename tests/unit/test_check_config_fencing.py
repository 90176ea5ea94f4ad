"""`check-config` warns when a peer can only be fenced over SSH, which cannot power off a dead or hung host
(issue 13, item 4); a level that reads power (IPMI, a fence agent) silences the warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbiter import cli, config

EXAMPLE_TEXT = (Path(__file__).resolve().parents[2] / "deploy" / "arbiter.toml.example").read_text(encoding="utf-8")
IPMI_LINE = (
    '    { driver = "ipmi", level = 1, host = "10.0.9.12", username = "admin", '
    'password_file = "/etc/keepalived-arbiter/ipmi-node-b.pass" },\n'
)
AGENT_LINE = (
    '    { driver = "agent", level = 1, agent = "fence_ipmilan", options = { ip = "10.0.9.12" }, '
    'password_file = "/etc/keepalived-arbiter/ipmi-node-b.pass" },\n'
)


def check_config(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "arbiter.toml"
    path.write_text(text, encoding="utf-8")
    code = cli.main(["check-config", "--offline", "-c", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_ssh_only_peer_is_valid_but_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert EXAMPLE_TEXT.count(IPMI_LINE) == 1
    code, out, err = check_config(tmp_path, EXAMPLE_TEXT.replace(IPMI_LINE, ""), capsys)

    assert code == 0
    assert "1 peer(s) fenced only over SSH" in out
    (line,) = err.splitlines()
    assert line.startswith("warning: peer[0].fence: every fence level of node-b is SSH, which cannot read power")
    assert "a dead or hung node-b cannot be powered off" in line
    assert "silence alone (every medium silent for fencing.confirm_ms 5000 ms)" in line


@pytest.mark.parametrize("power_level", [IPMI_LINE, AGENT_LINE], ids=["ipmi", "agent"])
def test_a_level_that_reads_power_silences_the_warning(
    power_level: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check_config(tmp_path, EXAMPLE_TEXT.replace(IPMI_LINE, power_level), capsys)
    assert (code, err) == (0, "")
    assert "SSH" not in out


def test_a_peer_without_fence_levels_is_not_warned_about() -> None:
    cfg = config.parse(EXAMPLE_TEXT)
    unfenced = cfg.model_copy(update={"peer": (cfg.peer[0].model_copy(update={"fence": ()}),)})
    assert config.fencing_warnings(unfenced) == []
