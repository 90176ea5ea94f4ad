"""deploy/systemd: the properties of the unit that the agent's safety depends on, and systemd's own verdict."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from arbiter import config as config_mod

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "systemd" / "keepalived-arbiter.service"
DROP_IN = DEPLOY / "systemd" / "keepalived.service.d" / "arbiter.conf"
RUN_DIR = Path("/run/keepalived-arbiter")

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """systemd's syntax as far as these files use it: a key may repeat (DeviceAllow=, After=) and an empty
    value resets the list. configparser cannot keep repeated keys, hence this."""
    sections: Unit = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {raw!r}"
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key, [])
    assert len(values) == 1, f"{key}= set {len(values)} times: {values}"
    return values[0]


def words(section: dict[str, list[str]], key: str) -> list[str]:
    return [w for value in section.get(key, []) for w in value.split()]


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "min": 60.0}
    for suffix, factor in units.items():
        if text.endswith(suffix) and text[: -len(suffix)].isdigit():
            return int(text[: -len(suffix)]) * factor
    return float(text)


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT)


def test_notify_type_with_a_watchdog(unit: Unit) -> None:
    service = unit["Service"]
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert 0 < seconds(one(service, "WatchdogSec")) <= 30
    assert one(service, "Restart") in ("on-failure", "always")  # both restart after a watchdog timeout
    assert seconds(one(service, "RestartSec")) > 0
    assert seconds(one(service, "TimeoutStopSec")) == 15
    assert "TimeoutStartSec" in service
    assert one(service, "KillMode") == "mixed"


def test_exec_lines(unit: Unit) -> None:
    service = unit["Service"]
    start = one(service, "ExecStart").split()
    assert start == ["/usr/local/bin/keepalived-arbiter", "run", "-c", str(config_mod.DEFAULT_PATH)]
    # install.sh links exactly this path to the venv's console script.
    assert (
        'ln -sfn "$VENV/bin/keepalived-arbiter" "$DESTDIR/usr/local/bin/keepalived-arbiter"'
        in (DEPLOY / "install.sh").read_text()
    )
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"


def test_runtime_directory_outlives_the_agent(unit: Unit) -> None:
    service = unit["Service"]
    assert one(service, "RuntimeDirectory") == "keepalived-arbiter"
    assert one(service, "RuntimeDirectoryPreserve") == "yes"
    assert one(service, "RuntimeDirectoryMode") == "0755"
    assert one(service, "StateDirectory") == "keepalived-arbiter"
    assert one(service, "StateDirectoryMode") == "0700"


def test_the_example_config_writes_only_where_the_unit_lets_it(unit: Unit) -> None:
    """ProtectSystem=strict: every gate and the state dir of the shipped example must be writable."""
    service = unit["Service"]
    assert one(service, "ProtectSystem") == "strict"
    cfg = config_mod.parse((DEPLOY / "arbiter.toml.example").read_text())
    writable = [Path(p.lstrip("-")) for p in words(service, "ReadWritePaths")]
    writable += [Path("/run") / d for d in words(service, "RuntimeDirectory")]
    writable += [Path("/var/lib") / d for d in words(service, "StateDirectory")]
    wanted = [inst.track_file.parent for inst in cfg.instance] + [Path(cfg.node.state_dir), cfg.api.socket.parent]
    for path in wanted:
        assert any(path == w or w in path.parents for w in writable), f"{path} is read-only under the unit"
    assert RUN_DIR in writable


def test_sockets_capabilities_and_devices_the_agent_needs(unit: Unit) -> None:
    service = unit["Service"]
    families = words(service, "RestrictAddressFamilies")
    assert {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"} == set(families)
    caps = words(service, "CapabilityBoundingSet")
    assert "CAP_NET_RAW" in caps  # raw VRRP/ICMP sockets, AF_PACKET, SO_BINDTODEVICE
    assert "CAP_NET_ADMIN" in caps  # SO_RCVBUFFORCE on the netlink socket
    assert service.get("AmbientCapabilities") == []
    assert one(service, "DevicePolicy") == "closed"
    devices = service["DeviceAllow"]
    assert "char-ttyS rw" in devices
    assert "char-ttyUSB rw" in devices
    assert "MemoryDenyWriteExecute" not in service
    assert "PrivateDevices" not in service  # it would hide /dev/ttyS*
    assert "PrivateNetwork" not in service
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictNamespaces", "RestrictSUIDSGID"):
        assert one(service, key) == "yes", key


def test_ordering_before_keepalived_without_a_hard_redis_dependency(unit: Unit) -> None:
    section = unit["Unit"]
    assert "keepalived.service" in words(section, "Before")
    assert "network-online.target" in words(section, "Wants")
    assert "network-online.target" in words(section, "After")
    assert "redis-server.service" in words(section, "After")
    for key in ("Wants", "Requires", "Requisite", "BindsTo"):
        assert not [u for u in words(section, key) if u.startswith("redis")], key
    assert words(unit["Install"], "WantedBy") == ["multi-user.target"]


def test_keepalived_drop_in_orders_keepalived_after_the_agent() -> None:
    drop_in = parse_unit(DROP_IN)["Unit"]
    assert words(drop_in, "After") == ["keepalived-arbiter.service"]
    assert words(drop_in, "Wants") == ["keepalived-arbiter.service"]
    assert "Requires" not in drop_in  # keepalived still starts when the agent cannot


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    """`systemd-analyze verify` works without systemd running; it needs ExecStart's binary to exist, so the
    copy points at an executable that does (the real path is pinned by test_exec_lines)."""
    text = UNIT.read_text().replace("ExecStart=/usr/local/bin/keepalived-arbiter ", "ExecStart=/bin/true ")
    assert "ExecStart=/bin/true run" in text
    (tmp_path / UNIT.name).write_text(text)
    shutil.copytree(DROP_IN.parent, tmp_path / DROP_IN.parent.name)
    args = ["systemd-analyze", "verify", str(tmp_path / UNIT.name)]
    # keepalived's own unit (Debian's package) with the drop-in applied, when keepalived is installed.
    if any(Path(d, "keepalived.service").exists() for d in ("/lib/systemd/system", "/usr/lib/systemd/system")):
        args.append("keepalived.service")
    # The trailing colon appends systemd's default search path (network-online.target, keepalived.service).
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:", "SYSTEMD_LOG_COLOR": "0"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)
    # verify exits 0 even for unknown keys; it only warns. Any output at all is a finding.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
