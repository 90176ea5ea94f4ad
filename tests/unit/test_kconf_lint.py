"""check-keepalived: the good pair lints clean; each planted mistake is found with its code at its file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arbiter import config
from arbiter.cli import main
from arbiter.kconf.lint import CODES, Finding, check_node, lint, vrrp_fingerprint
from arbiter.kconf.parser import KconfError, load
from tests.unit.kconf_data import ARBITER, DATA, NODE_A, NODE_B, line_of

# (node A, node B or None, arbiter config or None, code, file the finding must name, that line's text)
CASES = [
    ("vrid-mismatch.conf", NODE_B, None, "vrid-mismatch", "vrid-mismatch.conf", "virtual_router_id 52"),
    ("advert-mismatch.conf", NODE_B, None, "advert-mismatch", "advert-mismatch.conf", "advert_int 2"),
    ("version-mismatch.conf", NODE_B, None, "version-mismatch", "version-mismatch.conf", "version 3"),
    ("auth-mismatch.conf", NODE_B, None, "auth-mismatch", "auth-mismatch.conf", "auth_pass Other123"),
    ("vip-mismatch.conf", NODE_B, None, "vip-mismatch", "vip-mismatch.conf", "10.0.0.101/24 dev eth0"),
    ("instance-missing.conf", NODE_B, None, "instance-missing", "instance-missing.conf", "vrrp_instance VI_2 {"),
    ("unicast-peer-missing.conf", NODE_B, None, "unicast-peer-missing", "unicast-peer-missing.conf", "unicast_peer {"),
    ("unicast-mismatch.conf", NODE_B, None, "unicast-mismatch", "unicast-mismatch.conf", "vrrp_instance VI_1 {"),
    # node-a sets no unicast_src_ip: it is node-b's peer list that cannot be checked.
    ("unicast-src-unknown.conf", NODE_B, None, "unicast-src-unknown", "good-node-b.conf", "unicast_peer { 10.0.0.1 }"),
    # The mistake is inside an included file: the finding names that file and its line.
    ("vrid-duplicate.conf", None, None, "vrid-duplicate", "include.d/vi2-same-vrid.conf", "virtual_router_id 51"),
    ("duplicate-name.conf", None, None, "duplicate-name", "duplicate.d/vi1-again.conf", "vrrp_instance VI_1 {"),
    ("nopreempt-master.conf", None, None, "nopreempt-master", "nopreempt-master.conf", "nopreempt"),
    ("script-security.conf", None, None, "script-security", "script-security.conf", "global_defs {"),
    ("vrid-missing.conf", None, None, "vrid-missing", "vrid-missing.conf", "vrrp_instance VI_1 {"),
    ("bad-value.conf", None, None, "bad-value", "bad-value.conf", "virtual_router_id 256"),
    ("track-file-unknown.conf", None, None, "track-file-unknown", "track-file-unknown.conf", "arbiter_VI_X weight 0"),
    ("include-empty.conf", None, None, "include-empty", "include-empty.conf", "include nothing.d/*.conf"),
    ("gate-missing.conf", None, ARBITER, "gate-missing", "gate-missing.conf", "vrrp_instance VI_1 {"),
    ("gate-weight.conf", None, ARBITER, "gate-weight", "gate-weight.conf", "arbiter_VI_1 weight 2"),
    ("gate-weight-default.conf", None, ARBITER, "gate-weight", "gate-weight-default.conf", "arbiter_VI_1"),
    # keepalived started without the agent must take no VIP: init_file 0 opens the gate, and 1 without overwrite
    # keeps whatever a previous agent left (open).
    ("gate-init.conf", None, ARBITER, "gate-init", "gate-init.conf", "init_file 0 overwrite"),
    ("gate-init-keep.conf", None, ARBITER, "gate-init", "gate-init-keep.conf", "init_file 1"),
    ("notify-missing.conf", None, ARBITER, "notify-missing", "notify-missing.conf", "vrrp_instance VI_1 {"),
    # The FIFO alone is not enough when the agent is not configured to read it.
    ("notify-fifo.conf", None, ARBITER, "notify-missing", "notify-fifo.conf", "vrrp_instance VI_1 {"),
    ("arbiter-unnamed.conf", None, ARBITER, "arbiter-unnamed", "arbiter-unnamed.conf", "vrrp_instance VI_2 {"),
    ("arbiter-mirror.conf", None, ARBITER, "arbiter-mirror", "arbiter-mirror.conf", "priority 200"),
    ("arbiter-mirror-nopreempt.conf", None, ARBITER, "arbiter-mirror", "arbiter-mirror-nopreempt.conf", "nopreempt"),
    ("arbiter-mirror-vip.conf", None, ARBITER, "arbiter-mirror", "arbiter-mirror-vip.conf", "10.0.0.150/24 dev eth0"),
    (NODE_A, None, DATA / "arbiter-two.toml", "arbiter-instance-missing", "arbiter-two.toml", 'name = "VI_2"'),
]


def _run(a: Path | str, b: Path | None, arbiter: Path | None) -> list[Finding]:
    cfg = config.load(arbiter) if arbiter is not None else None
    return lint(load(DATA / a), load(b) if b is not None else None, cfg, arbiter_source=arbiter)


@pytest.mark.parametrize(
    ("a", "b", "arbiter", "code", "expect_file", "planted"), CASES, ids=[f"{c[3]}:{Path(c[0]).name}" for c in CASES]
)
def test_each_planted_mistake_is_found_with_its_code_at_its_line(
    a: Path | str, b: Path | None, arbiter: Path | None, code: str, expect_file: str, planted: str
) -> None:
    findings = _run(a, b, arbiter)
    assert {f.code for f in findings} == {code}, "\n".join(map(str, findings))
    path = DATA / expect_file
    line = line_of(path, planted)
    assert any(f.file == path and f.line == line for f in findings), "\n".join(map(str, findings))


def test_every_code_has_a_planted_mistake() -> None:
    assert {case[3] for case in CASES} == set(CODES)


@pytest.mark.parametrize(
    ("a", "b", "arbiter"),
    [
        (NODE_A, NODE_B, ARBITER),
        (NODE_B, NODE_A, None),  # node-b's own arbiter config would say priority 100; none given here
        (NODE_A, None, ARBITER),
        (DATA / "notify-fifo.conf", None, DATA / "arbiter-fifo.toml"),  # the FIFO instead of the notify hook
    ],
    ids=["pair", "pair-reversed", "node-a-alone", "notify-fifo"],
)
def test_the_good_configs_lint_clean(a: Path, b: Path | None, arbiter: Path | None) -> None:
    assert _run(a, b, arbiter) == []


def test_check_node_is_the_single_node_and_wiring_check() -> None:
    cfg = config.load(ARBITER)
    assert check_node(NODE_A, cfg) == []
    assert [f.code for f in check_node(DATA / "gate-weight.conf", cfg)] == ["gate-weight"]
    with pytest.raises(KconfError, match=r"no-such\.conf: cannot read"):
        check_node(DATA / "no-such.conf", cfg)


def test_the_example_arbiter_config_documents_the_drift_check() -> None:
    cfg = config.load(ARBITER)
    assert cfg.keepalived.config == Path("/etc/keepalived/keepalived.conf")
    assert cfg.keepalived.check_interval_ms == 300000


def test_fingerprints_agree_across_the_good_pair_and_hide_the_password() -> None:
    a = vrrp_fingerprint(load(NODE_A), "VI_1")
    assert a == vrrp_fingerprint(load(NODE_B), "VI_1")
    assert a["virtual_router_id"] == 51
    assert a["vips"] == ["10.0.0.100/24"]
    assert "Ch4ngeMe" not in json.dumps(a)
    assert a != vrrp_fingerprint(load(DATA / "auth-mismatch.conf"), "VI_1")
    with pytest.raises(KeyError, match="VI_9"):
        vrrp_fingerprint(load(NODE_A), "VI_9")


def test_findings_print_gcc_style_sorted_by_file_and_line() -> None:
    findings = _run("unicast-src-unknown.conf", NODE_B, None) + _run("vrid-mismatch.conf", NODE_B, None)
    shown = [str(f) for f in findings]
    b_line = line_of(NODE_B, "unicast_peer { 10.0.0.1 }")
    assert shown[0].startswith(f"{NODE_B}:{b_line}: warning: [unicast-src-unknown] instance VI_1: ")
    a = DATA / "vrid-mismatch.conf"
    assert shown[1].startswith(f"{a}:{line_of(a, 'virtual_router_id 52')}: error: [vrid-mismatch] ")
    assert shown[1].endswith(f"(see {NODE_B}:{line_of(NODE_B, 'virtual_router_id 51')})")


# --- the command ----------------------------------------------------------------------------------------------


def test_cli_exits_0_on_the_good_pair(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-keepalived", str(NODE_A), str(NODE_B), "-c", str(ARBITER)]) == 0
    assert capsys.readouterr().out == ""


def test_cli_exits_1_on_findings_and_prints_them(capsys: pytest.CaptureFixture[str]) -> None:
    a = DATA / "vrid-mismatch.conf"
    assert main(["check-keepalived", str(a), str(NODE_B)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{a}:{line_of(a, 'virtual_router_id 52')}: error: [vrid-mismatch] ")


def test_cli_exits_1_on_warnings_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-keepalived", str(DATA / "script-security.conf")]) == 1
    assert "warning: [script-security]" in capsys.readouterr().out


def test_cli_json_lists_findings_with_stable_keys(capsys: pytest.CaptureFixture[str]) -> None:
    a = DATA / "gate-weight.conf"
    assert main(["check-keepalived", str(a), "-c", str(ARBITER), "--json"]) == 1
    (finding,) = json.loads(capsys.readouterr().out)
    assert finding == {
        "severity": "error",
        "code": "gate-weight",
        "message": finding["message"],
        "file": str(a),
        "line": line_of(a, "arbiter_VI_1 weight 2"),
        "other_file": None,
        "other_line": None,
    }
    assert "weight 2" in finding["message"]


def test_cli_json_prints_an_empty_list_when_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-keepalived", str(NODE_A), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    ("name", "where_file", "planted"),
    [
        ("unbalanced-open.conf", "unbalanced-open.conf", "vrrp_instance VI_1 {"),
        ("missing-include.conf", "missing-include.conf", "include no-such-file.conf"),
        ("cycle/top.conf", "cycle/middle.conf", "include top.conf"),
        ("no-such-file.conf", "no-such-file.conf", None),
    ],
)
def test_cli_exits_2_when_a_file_is_unusable(
    name: str, where_file: str, planted: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-keepalived", str(NODE_A), str(DATA / name)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    path = DATA / where_file
    where = f"{path}: cannot read" if planted is None else f"{path}:{line_of(path, planted)}: "
    assert captured.err.startswith(f"check-keepalived: {where}")


def test_cli_exits_2_on_a_bad_arbiter_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "arbiter.toml"
    broken.write_text(ARBITER.read_text().replace("priority = 150", "priority = 300"))
    assert main(["check-keepalived", str(NODE_A), "-c", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken}: instance[0].priority:" in err
