"""arbiter.config and `keepalived-arbiter check-config`: what an operator sees for good and broken files."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from arbiter import cli, config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "arbiter.toml.example"
EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")


def replace_once(old: str, new: str) -> Callable[[str], str]:
    """An edit of the example text; refuses to silently do nothing if the example changes."""

    def edit(text: str) -> str:
        assert text.count(old) == 1, f"{old!r} must occur exactly once in the example"
        return text.replace(old, new)

    return edit


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def toml_dumps(data: dict[str, Any]) -> str:
    """Just enough TOML for a config: top-level tables, arrays of tables, everything below them inline."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict | list)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]", *(f"{k} = {toml_value(v)}" for k, v in value.items())]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines += ["", f"[[{key}]]", *(f"{k} = {toml_value(v)}" for k, v in item.items())]
        elif isinstance(value, list):
            lines.insert(0, f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def example_data() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE_TEXT)


def check_config(path: Path, capsys: pytest.CaptureFixture[str], offline: bool = True) -> tuple[int, str, str]:
    code = cli.main(["check-config", "-c", str(path), *(["--offline"] if offline else [])])
    out, err = capsys.readouterr()
    return code, out, err


# --- the example ----------------------------------------------------------------------------------------------


def test_example_is_valid_offline(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check_config(EXAMPLE, capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"{EXAMPLE}: valid (offline: node checks skipped); node node-a")


def test_example_is_valid_offline_as_a_real_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "arbiter", "check-config", "--offline", "-c", str(EXAMPLE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_a_broken_file_exits_2_as_a_real_command(tmp_path: Path) -> None:
    path = tmp_path / "arbiter.toml"
    path.write_text(EXAMPLE_TEXT.replace("ttl_ms = 3000", "ttl_ms = 1500"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "arbiter", "check-config", "--offline", "-c", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("lease.ttl_ms: must exceed renew_ms + 2 × timeout_ms")


def test_round_trip_through_the_test_writer_keeps_the_example_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "arbiter.toml"
    path.write_text(toml_dumps(example_data()), encoding="utf-8")
    assert tomllib.loads(path.read_text(encoding="utf-8")) == example_data()
    assert check_config(path, capsys)[0] == 0


# --- broken variants: each exits 2 with exactly one line, naming the key ---------------------------------------

TWO_INSTANCES = """[[instance]]
name = "VI_2"
vip = ["10.0.0.101/24"]
interface = "eth0"
track_file = "/run/keepalived-arbiter/VI_2.gate"

[reference]"""

BROKEN: list[tuple[str, Callable[[str], str], str]] = [
    ("unknown top-level key", lambda t: "colour = 'blue'\n" + t, "colour: unknown key"),
    ("unknown top-level table", lambda t: t + "\n[metrics]\nport = 1\n", "metrics: unknown key"),
    ("unknown key in lease", replace_once("ttl_ms = 3000", "ttl_ms = 3000\nbogus = 1"), "lease.bogus: unknown key"),
    (
        "bad reference address",
        replace_once('addresses = ["10.0.0.254"]', 'addresses = ["10.0.0.256"]'),
        "reference.addresses[0]: ",
    ),
    ("no reference address", replace_once('addresses = ["10.0.0.254"]', "addresses = []"), "reference.addresses: "),
    (
        "bad fence host",
        replace_once('host = "10.0.9.12"', 'host = "10.0.0.300"'),
        "peer[0].fence[0].host: not an IP address or host name (got '10.0.0.300')",
    ),
    (
        "unknown fence driver",
        replace_once('driver = "ipmi"', 'driver = "telnet"'),
        "peer[0].fence[0].driver: must be one of 'ssh', 'ipmi', 'agent' (got 'telnet')",
    ),
    ("fence driver missing", replace_once('driver = "ipmi", ', ""), "peer[0].fence[0].driver: required key"),
    (
        "fence key unknown",
        replace_once('level = 2, host = "10.0.0.2"', 'level = 2, colour = "red", host = "10.0.0.2"'),
        "peer[0].fence[1].colour: unknown key",
    ),
    (
        "ttl too small",
        replace_once("ttl_ms = 3000", "ttl_ms = 1600"),
        "lease.ttl_ms: must exceed renew_ms + 2 × timeout_ms",
    ),
    ("safety below timeout", replace_once("safety_ms = 500", "safety_ms = 200"), "lease.safety_ms: "),
    ("renewal after self-demotion", replace_once("safety_ms = 500", "safety_ms = 1800"), "lease.safety_ms: "),
    (
        "deadtime too short",
        replace_once("deadtime_ms = 1000", "deadtime_ms = 400"),
        "heartbeat.deadtime_ms: must exceed 2 × interval_ms",
    ),
    (
        "no heartbeat medium",
        lambda t: t.replace('udp = [{ interface = "eth0" }, { interface = "eth1" }]\n', "").replace(
            'serial = [{ device = "/dev/ttyS0", baud = 115200 }]\n', ""
        ),
        "heartbeat.udp: ",
    ),
    ("bad baud", replace_once("baud = 115200", "baud = 115201"), "heartbeat.serial[0].baud: "),
    (
        "reference timeout not below interval",
        replace_once("timeout_ms = 500", "timeout_ms = 1000"),
        "reference.timeout_ms: ",
    ),
    ("quorum above addresses", replace_once("quorum = 1", "quorum = 2"), "reference.quorum: "),
    (
        "VRRPv2 advert not whole seconds",
        replace_once("advert_int_ms = 1000", "advert_int_ms = 1500"),
        "instance[0].advert_int_ms: ",
    ),
    (
        "VRRPv3 advert not centiseconds",
        lambda t: replace_once("vrrp_version = 2", "vrrp_version = 3")(
            replace_once("advert_int_ms = 1000", "advert_int_ms = 1005")(t)
        ),
        "instance[0].advert_int_ms: ",
    ),
    ("vrrp version 4", replace_once("vrrp_version = 2", "vrrp_version = 4"), "instance[0].vrrp_version: "),
    (
        "relative track_file",
        replace_once('"/run/keepalived-arbiter/VI_1.gate"', '"VI_1.gate"'),
        "instance[0].track_file: ",
    ),
    (
        "interface with a slash",
        replace_once('interface = "eth0"\ntrack', 'interface = "eth0/1"\ntrack'),
        "instance[0].interface: ",
    ),
    ("bad VIP", replace_once('vip = ["10.0.0.100/24"]', 'vip = ["10.0.0.100/33"]'), "instance[0].vip[0]: "),
    (
        "duplicate instance names",
        replace_once("[reference]", TWO_INSTANCES.replace('"VI_2"', '"VI_1"', 1)),
        "instance[1].name: already used by instance[0]",
    ),
    (
        "shared track_file",
        replace_once("[reference]", TWO_INSTANCES.replace("VI_2.gate", "VI_1.gate")),
        "instance[1].track_file: already used by instance[0]",
    ),
    (
        "peer named like the node",
        replace_once('name = "node-b"', 'name = "node-a"'),
        "peer[0].name: must differ from node.name",
    ),
    ("bad peer name", replace_once('name = "node-b"', 'name = "node b"'), "peer[0].name: "),
    (
        "redis_url and sentinel",
        replace_once(
            'redis_url = "redis://10.0.9.1:6379/0"',
            'redis_url = "redis://10.0.9.1:6379/0"\nsentinel = { addresses = ["10.0.9.1"], service = "main" }',
        ),
        "lease.redis_url: give exactly one",
    ),
    (
        "neither redis_url nor sentinel",
        replace_once('redis_url = "redis://10.0.9.1:6379/0"\n', ""),
        "lease.redis_url: give exactly one",
    ),
    (
        "bad redis_url scheme",
        replace_once("redis://10.0.9.1", "http://10.0.9.1"),
        "lease.redis_url: must be a redis://",
    ),
    (
        "bad redis_url port",
        replace_once("redis://10.0.9.1:6379/0", "redis://10.0.9.1:63x9/0"),
        "lease.redis_url: not a port",
    ),
    (
        "bad sentinel address",
        replace_once(
            'redis_url = "redis://10.0.9.1:6379/0"',
            'sentinel = { addresses = ["10.0.9.1", "10.0.9.999:26379"], service = "main" }',
        ),
        "lease.sentinel.addresses[1]: ",
    ),
    ("missing node.name", replace_once('name = "node-a"\n', ""), "node.name: required key is missing"),
    (
        "missing [lease]",
        lambda t: t[: t.index("[lease]")] + t[t.index("[heartbeat]") :],
        "lease: required key is missing",
    ),
    (
        "heartbeat too slow for VRRP cut rule",
        lambda t: replace_once("interval_ms = 200", "interval_ms = 2000")(
            replace_once("deadtime_ms = 1000", "deadtime_ms = 4100")(t)
        ),
        "heartbeat.interval_ms: too slow for instance 'VI_1'",
    ),
    (
        "confirm not above deadtime",
        replace_once("confirm_ms = 5000", "confirm_ms = 1000"),
        "fencing.confirm_ms: must exceed heartbeat.deadtime_ms",
    ),
    (
        "confirm not below power timeout",
        replace_once("power_timeout_ms = 20000", "power_timeout_ms = 5000"),
        "fencing.confirm_ms: must be below fencing.power_timeout_ms 5000",
    ),
    ("on_failure unknown", replace_once('on_failure = "close"', 'on_failure = "open"'), "fencing.on_failure: "),
    (
        "webhook not http",
        replace_once("https://alerts.example.com/hook", "ftp://alerts.example.com/hook"),
        "alerts.webhooks[0].url: ",
    ),
    ("bad metrics address", replace_once('metrics = "127.0.0.1:9687"', 'metrics = "127.0.0.1:99999"'), "api.metrics: "),
    (
        "priority given as a boolean",
        replace_once("priority = 150", "priority = true"),
        "instance[0].priority: Input should be a valid integer (got true)",
    ),
    ("ttl given as a string", replace_once("ttl_ms = 3000", 'ttl_ms = "3000"'), "lease.ttl_ms: "),
    ("ttl given as a float", replace_once("ttl_ms = 3000", "ttl_ms = 3000.0"), "lease.ttl_ms: "),
    ("nopreempt given as a string", replace_once("nopreempt = false", 'nopreempt = "no"'), "instance[0].nopreempt: "),
]


@pytest.mark.parametrize(("edit", "expected"), [(e, x) for _, e, x in BROKEN], ids=[n for n, _, _ in BROKEN])
def test_broken_variant_is_refused_naming_the_key(
    edit: Callable[[str], str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "arbiter.toml"
    path.write_text(edit(EXAMPLE_TEXT), encoding="utf-8")
    code, out, err = check_config(path, capsys)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(expected), err


def test_values_are_quoted_once_in_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "arbiter.toml"
    path.write_text(EXAMPLE_TEXT.replace("redis://10.0.9.1", "http://10.0.9.1"), encoding="utf-8")
    _, _, err = check_config(path, capsys)
    assert err.count("(got ") == 1, err


def test_not_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "arbiter.toml"
    path.write_text("[node\nname = 'node-a'\n", encoding="utf-8")
    code, out, err = check_config(path, capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"{path}: not valid TOML: ")
    assert len(err.splitlines()) == 1


def test_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "arbiter.toml"
    path.write_bytes(b"[node]\nname = '\xff'\n")
    code, _, err = check_config(path, capsys)
    assert code == 2
    assert err.startswith(f"{path}: not UTF-8 text")


@pytest.mark.parametrize("name", ["missing.toml", ""])
def test_unreadable_path(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name  # a file that does not exist, or a directory
    code, out, err = check_config(path, capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"{path}: cannot read: ")
    assert len(err.splitlines()) == 1


def test_several_problems_are_all_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = EXAMPLE_TEXT.replace("ttl_ms = 3000", "ttl_ms = 3000\nbogus = 1")
    text = text.replace('addresses = ["10.0.0.254"]', 'addresses = ["10.0.0.256"]')
    text = text.replace('host = "10.0.9.12"', 'host = "10.0.0.300"')
    text = text.replace("priority = 150", "priority = 0")
    path = tmp_path / "arbiter.toml"
    path.write_text(text, encoding="utf-8")
    code, _, err = check_config(path, capsys)
    assert code == 2
    assert sorted(line.partition(": ")[0] for line in err.splitlines()) == [
        "instance[0].priority",
        "lease.bogus",
        "peer[0].fence[0].host",
        "reference.addresses[0]",
    ]


def test_several_timing_problems_are_all_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = EXAMPLE_TEXT.replace("interval_ms = 200", "interval_ms = 2000").replace(
        "deadtime_ms = 1000", "deadtime_ms = 5000"
    )
    path = tmp_path / "arbiter.toml"
    path.write_text(text, encoding="utf-8")
    code, _, err = check_config(path, capsys)
    assert code == 2
    assert [line.partition(": ")[0] for line in err.splitlines()] == ["heartbeat.interval_ms", "fencing.confirm_ms"]


# --- node checks (without --offline) ---------------------------------------------------------------------------


def node_config(tmp_path: Path) -> dict[str, Any]:
    """The example, made true on this machine: secrets in tmp_path (mode 0600), interface lo, gate dir tmp_path."""
    data = example_data()
    secrets = tmp_path / "secrets"
    secrets.mkdir()

    def secret(name: str, mode: int = 0o600) -> str:
        path = secrets / name
        path.write_text("s3cret\n", encoding="utf-8")
        path.chmod(mode)
        return str(path)

    data["peer"][0]["fence"][0]["password_file"] = secret("ipmi.pass")
    data["peer"][0]["fence"][1]["key_file"] = secret("fence_ed25519")
    data["peer"][0]["fence"][1]["known_hosts"] = secret("known_hosts", 0o644)  # public: may be world-readable
    data["heartbeat"]["key_file"] = secret("heartbeat.key")
    data["alerts"]["webhooks"][0]["secret_file"] = secret("webhook.secret")
    data["instance"][0]["interface"] = "lo"
    data["instance"][0]["track_file"] = str(tmp_path / "VI_1.gate")
    data["heartbeat"]["udp"] = [{"interface": "lo"}]
    tty = tmp_path / "ttyS0"
    tty.touch()
    data["heartbeat"]["serial"] = [{"device": str(tty), "baud": 115200}]
    return data


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "arbiter.toml"
    path.write_text(toml_dumps(data), encoding="utf-8")
    return path


def test_node_checks_pass_on_a_prepared_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, node_config(tmp_path))
    code, out, err = check_config(path, capsys, offline=False)
    assert (code, err) == (0, "")
    assert "valid;" in out
    assert "offline" not in out


def test_node_checks_refuse_a_group_readable_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = node_config(tmp_path)
    Path(data["heartbeat"]["key_file"]).chmod(0o644)
    code, _, err = check_config(write(tmp_path, data), capsys, offline=False)
    assert code == 2
    assert err.startswith("heartbeat.key_file: ")
    assert "readable by group or others (mode 644)" in err
    assert len(err.splitlines()) == 1


def test_node_checks_name_a_missing_password_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = node_config(tmp_path)
    Path(data["peer"][0]["fence"][0]["password_file"]).unlink()
    code, _, err = check_config(write(tmp_path, data), capsys, offline=False)
    assert code == 2
    assert err.startswith("peer[0].fence[0].password_file: cannot read ")
    assert "No such file or directory" in err


def test_node_checks_name_a_missing_interface(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = node_config(tmp_path)
    data["instance"][0]["interface"] = "nosuch0"
    code, _, err = check_config(write(tmp_path, data), capsys, offline=False)
    assert code == 2
    assert err == "instance[0].interface: no such network interface on this node ('nosuch0')\n"


def test_offline_skips_the_node_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = node_config(tmp_path)
    data["instance"][0]["interface"] = "nosuch0"
    assert check_config(write(tmp_path, data), capsys, offline=True)[0] == 0


def test_node_checks_report_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = node_config(tmp_path)
    Path(data["heartbeat"]["key_file"]).chmod(0o640)
    Path(data["peer"][0]["fence"][0]["password_file"]).unlink()
    data["instance"][0]["interface"] = "nosuch0"
    data["instance"][0]["track_file"] = str(tmp_path / "no-dir" / "VI_1.gate")
    data["heartbeat"]["serial"][0]["device"] = str(tmp_path / "ttyNOPE")  # a warning only (media_warnings)
    code, _, err = check_config(write(tmp_path, data), capsys, offline=False)
    assert code == 2
    assert [line.partition(": ")[0] for line in err.splitlines()] == [
        "heartbeat.key_file",
        "peer[0].fence[0].password_file",
        "instance[0].interface",
        "instance[0].track_file",
    ]


# --- the loaded value -------------------------------------------------------------------------------------------


def test_config_models_are_frozen() -> None:
    cfg = config.load(EXAMPLE)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.node.name = "node-z"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        cfg.lease.ttl_ms = 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        cfg.peer[0].fence[0].host = "10.9.9.9"  # type: ignore[misc]
    # Arrays load as tuples: nothing can be appended to a loaded config either.
    assert isinstance(cfg.instance, tuple)
    assert isinstance(cfg.peer[0].fence, tuple)
    assert isinstance(cfg.heartbeat.udp, tuple)


def test_loaded_values() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.node.name == "node-a"
    assert [type(d).__name__ for d in cfg.peer[0].fence] == ["IpmiFence", "SshFence"]
    assert cfg.instance[0].master_down_ms == pytest.approx(3000 + (256 - 150) / 256 * 1000)
    assert cfg.api.metrics == "127.0.0.1:9687"
    assert config.check(cfg, offline=True) == []


def test_parse_raises_config_error_with_one_line_per_problem() -> None:
    text = EXAMPLE_TEXT.replace("quorum = 1", "quorum = 0").replace("port = 6941", "port = 0")
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text)
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]
    assert [p.path for p in caught.value.problems] == ["reference.quorum", "heartbeat.port"]


def test_check_refuses_instances_whose_heartbeat_frame_would_not_fit_one_datagram() -> None:
    text = EXAMPLE_TEXT
    base = config.parse(text)
    assert config.frame_problems(base) == []
    many = text.split("[[instance]]")
    block = "[[instance]]" + many[1].split("\n[", 1)[0]
    extra = "".join(
        block.replace('name = "VI_1"', f'name = "VI_{"x" * 40}{n:02d}"').replace("VI_1.gate", f"g{n}.gate")
        for n in range(16)
    )
    problems = config.frame_problems(config.parse(text + "\n" + extra))
    assert len(problems) == 1 and problems[0].path == "instance"
    assert "17 instance(s) with these names make a heartbeat frame of up to" in problems[0].message
    assert "over the 1400-byte limit" in problems[0].message
