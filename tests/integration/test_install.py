"""deploy/install.sh into a staging root (DESTDIR): files, modes, idempotence, the installed command runs.

The venv is real (python3 -m venv, a wheel built from this tree, pip install of it); only the dependencies come
from the test interpreter's environment (--deps-from) instead of PyPI, to stay offline and under a minute.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"
VENV = "opt/keepalived-arbiter"


def install(dest: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESTDIR": str(dest)}
    env.pop("KEEPALIVED_ARBITER_CONFIG", None)
    done = subprocess.run(
        ["sh", str(INSTALL), "--no-systemctl", "--deps-from", sys.executable],
        capture_output=True,
        text=True,
        env=env,
        cwd=dest,  # not the source tree: nothing may be imported from it by accident
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    dest = tmp_path_factory.mktemp("root")
    return dest, install(dest)


def test_layout_and_modes(staged: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    dest, _ = staged
    conf_dir = dest / "etc/keepalived-arbiter"
    assert mode(conf_dir) == 0o700
    assert mode(conf_dir / "arbiter.toml") == 0o600
    assert (conf_dir / "arbiter.toml").read_text() == (ROOT / "deploy/arbiter.toml.example").read_text()
    key = conf_dir / "heartbeat.key"
    assert mode(key) == 0o600
    text = key.read_text().strip()
    assert len(text) == 64
    int(text, 16)  # 32 random bytes, hex

    units = dest / "etc/systemd/system"
    assert (units / "keepalived-arbiter.service").read_text() == (
        ROOT / "deploy/systemd/keepalived-arbiter.service"
    ).read_text()
    assert (units / "keepalived.service.d/arbiter.conf").read_text() == (
        ROOT / "deploy/systemd/keepalived.service.d/arbiter.conf"
    ).read_text()
    assert mode(units / "keepalived-arbiter.service") == 0o644

    for name in ("keepalived-arbiter", "keepalived-arbiter-notify"):
        link = dest / "usr/local/bin" / name
        assert link.is_symlink()
        # The link names the final path (/opt/...), not the staging root.
        assert os.readlink(link) == f"/{VENV}/bin/{name}"
        assert (dest / VENV / "bin" / name).exists()


def test_installed_command_runs_from_the_staged_venv(
    staged: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    dest, _ = staged
    venv = dest / VENV
    done = subprocess.run(
        [str(venv / "bin/keepalived-arbiter"), "--help"], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert "check-config" in done.stdout
    where = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import arbiter.agent.sdnotify, arbiter.lab, fencers, hooks; print(arbiter.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not the source tree


def test_check_config_ran_and_nothing_was_started(staged: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    dest, done = staged
    assert "keepalived-arbiter check-config --offline -c /etc/keepalived-arbiter/arbiter.toml" in done.stdout
    assert f"{dest}/etc/keepalived-arbiter/arbiter.toml: valid (offline" in done.stdout
    assert "systemctl enable --now keepalived-arbiter" in done.stdout  # told, not done
    assert not (dest / "etc/systemd/system/multi-user.target.wants").exists()


def test_second_run_keeps_the_operators_config_and_key(tmp_path: Path) -> None:
    install(tmp_path)
    conf = tmp_path / "etc/keepalived-arbiter/arbiter.toml"
    key = tmp_path / "etc/keepalived-arbiter/heartbeat.key"
    edited = conf.read_text().replace('name = "node-a"', 'name = "node-x"')
    conf.write_text(edited)
    key_before = key.read_bytes()

    done = install(tmp_path)
    assert conf.read_text() == edited
    assert key.read_bytes() == key_before
    assert mode(conf) == 0o600 and mode(key) == 0o600
    assert "keeping /etc/keepalived-arbiter/arbiter.toml" in done.stdout
    assert "node node-x" in done.stdout  # check-config read the operator's file
