"""The "ssh" fence driver against a real OpenSSH sshd on 127.0.0.1 and an ephemeral port.

The module's sshd gets a generated host key and authorized user keys (ed25519, ecdsa, rsa) in a tmp dir, and is
stopped by its PID. Power-off commands here write marker files, fail, hang, or kill their own session process;
none touches the machine's power. Needs root (sshd switches to the login user and uses privilege separation).
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from arbiter.config import SshFence
from arbiter.model import Power
from fencers import ssh
from fencers.base import FenceError

pytestmark = pytest.mark.integration

SSHD = Path("/usr/sbin/sshd")
USER = pwd.getpwuid(os.geteuid()).pw_name
SLACK = 1.5  # seconds beyond a call's timeout that thread start-up and a loaded machine may take


def _keygen(path: Path, kind: str) -> Path:
    extra = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    """A process with this PID exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[1][:1] != "Z"


@dataclass
class Sshd:
    dir: Path
    port: int
    host_key: Path
    user_keys: dict[str, Path]  # key type → private key file, all authorized
    stranger_key: Path  # a key sshd does not know
    known_hosts: Path  # pins the host key under "[127.0.0.1]:PORT"
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 - handed to the child, closed below
        argv = [str(SSHD), "-D", "-e", "-f", str(self.dir / "sshd_config")]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not come up: {(self.dir / 'sshd.log').read_text()[-2000:]}")

    def ensure(self) -> None:
        """Restart sshd if a test took the listener down (it should not: only sessions are killed)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # by PID: the listener only; its sessions end with it
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if os.geteuid() != 0:
        pytest.skip("needs root: sshd switches users and uses privilege separation")
    if not SSHD.exists():
        pytest.skip("sshd not installed (Debian package openssh-server)")
    d = tmp_path_factory.mktemp("sshd")
    port = _free_port()
    host_key = _keygen(d / "ssh_host_ed25519_key", "ed25519")
    user_keys = {kind: _keygen(d / f"fence_{kind}", kind) for kind in ("ed25519", "ecdsa", "rsa")}
    stranger = _keygen(d / "stranger_ed25519", "ed25519")
    (d / "authorized_keys").write_text("".join(k.with_suffix(".pub").read_text() for k in user_keys.values()))
    pub = host_key.with_suffix(".pub").read_text().split()
    known_hosts = d / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    (d / "sshd_config").write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"Port {port}",
                f"HostKey {host_key}",
                f"PidFile {d}/sshd.pid",
                f"AuthorizedKeysFile {d}/authorized_keys",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "",
            ]
        )
    )
    sshd = Sshd(d, port, host_key, user_keys, stranger, known_hosts)
    try:
        sshd.start()
        yield sshd
    finally:
        sshd.stop()
    assert sshd.proc is not None and not _alive(sshd.proc.pid)


@pytest.fixture
def sshd(server: Sshd) -> Sshd:
    server.ensure()
    return server


def fencer(
    sshd: Sshd,
    command: str = "true",
    *,
    timeout: float = 5.0,
    key: Path | None = None,
    known_hosts: Path | None = None,
    port: int | None = None,
) -> ssh.SshFencer:
    device = SshFence(
        driver="ssh",
        host="127.0.0.1",
        port=port or sshd.port,
        user=USER,
        key_file=key or sshd.user_keys["ed25519"],
        known_hosts=known_hosts or sshd.known_hosts,
        command=command,
    )
    return ssh.from_config(device, timeout)


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_check_logs_in_with_each_key_type_and_names_the_host(sshd: Sshd, kind: str) -> None:
    summary = fencer(sshd, key=sshd.user_keys[kind]).check("node-b")
    assert "logged in" in summary
    assert os.uname().nodename in summary  # `uname -n` ran on the node
    assert "ssh-ed25519" in summary and str(sshd.known_hosts) in summary


def test_power_off_runs_the_command_and_exit_0_is_dispatched(sshd: Sshd, tmp_path: Path) -> None:
    marker = tmp_path / "fenced"
    fencer(sshd, f"echo fenced > {marker}").power_off("node-b")
    assert marker.read_text() == "fenced\n"


def test_a_command_that_kills_its_own_session_counts_as_dispatched(sshd: Sshd, tmp_path: Path) -> None:
    # $PPID of the command's shell is this login's sshd session process, never the listener.
    marker = tmp_path / "session-pid"
    assert sshd.proc is not None
    listener, starts = sshd.proc.pid, sshd.starts
    t0 = time.monotonic()
    fencer(sshd, f"echo $PPID > {marker}; kill -9 $PPID", timeout=5.0).power_off("node-b")
    assert time.monotonic() - t0 < 5.0 + SLACK
    session_pid = int(marker.read_text())
    assert session_pid != listener
    assert not _alive(session_pid)
    assert sshd.proc.poll() is None and sshd.starts == starts  # the listener survived
    assert "logged in" in fencer(sshd).check("node-b")


def test_a_command_still_running_at_the_timeout_counts_as_dispatched(sshd: Sshd, tmp_path: Path) -> None:
    marker, pid_file = tmp_path / "sent", tmp_path / "sleeper.pid"
    timeout = 2.0
    t0 = time.monotonic()
    try:
        fencer(sshd, f"touch {marker}; echo $$ > {pid_file}; exec sleep 60", timeout=timeout).power_off("node-b")
        elapsed = time.monotonic() - t0
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the remote sleeper, by its PID
    assert marker.exists()
    assert timeout / 2 < elapsed < timeout + SLACK


def test_a_failing_command_is_a_fence_error_with_its_stderr(sshd: Sshd) -> None:
    with pytest.raises(FenceError) as err:
        fencer(sshd, "echo 'sysrq: permission denied' >&2; exit 3").power_off("node-b")
    assert "exit status 3" in str(err.value)
    assert "sysrq: permission denied" in str(err.value)


def test_a_missing_command_is_a_fence_error(sshd: Sshd) -> None:
    with pytest.raises(FenceError, match="exit status 127"):
        fencer(sshd, "no-such-poweroff-tool").power_off("node-b")


@pytest.mark.parametrize("pinned", ["ed25519", "ecdsa"])  # same type as the host's key, and another type
def test_a_changed_host_key_is_refused_and_nothing_runs(sshd: Sshd, tmp_path: Path, pinned: str) -> None:
    other = _keygen(tmp_path / "other_host_key", pinned).with_suffix(".pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    marker = tmp_path / "ran"
    with pytest.raises(FenceError) as err:
        fencer(sshd, f"touch {marker}", known_hosts=known).power_off("node-b")
    message = str(err.value)
    assert "host key refused" in message and "offered ssh-ed25519" in message and str(known) in message
    assert f"pins {other[0]}" in message and f"[127.0.0.1]:{sshd.port}" in message
    assert not marker.exists()


def test_a_host_missing_from_known_hosts_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    pub = sshd.host_key.with_suffix(".pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port + 1} {pub[0]} {pub[1]}\n")  # the right key under another name
    with pytest.raises(FenceError) as err:
        fencer(sshd, known_hosts=known).check("node-b")
    message = str(err.value)
    assert "host key refused" in message and "offered ssh-ed25519" in message and str(known) in message
    assert f"no ssh-ed25519 key for '[127.0.0.1]:{sshd.port}'" in message


def test_a_missing_known_hosts_file_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(FenceError, match="cannot read known_hosts"):
        fencer(sshd, known_hosts=tmp_path / "absent").power_off("node-b")


def test_an_unknown_user_key_is_an_authentication_failure(sshd: Sshd) -> None:
    with pytest.raises(FenceError) as err:
        fencer(sshd, key=sshd.stranger_key).power_off("node-b")
    message = str(err.value)
    assert "authentication failed" in message and str(sshd.stranger_key) in message and USER in message


def test_nothing_listening_is_a_fence_error_within_the_timeout(sshd: Sshd) -> None:
    timeout = 2.0
    t0 = time.monotonic()
    with pytest.raises(FenceError, match="cannot connect"):
        fencer(sshd, port=_free_port(), timeout=timeout).power_off("node-b")
    assert time.monotonic() - t0 < timeout + SLACK


def test_a_listener_that_never_speaks_ssh_is_a_fence_error_within_the_timeout(sshd: Sshd) -> None:
    timeout = 1.5
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the TCP handshake; nobody ever sends a banner
        port = silent.getsockname()[1]
        for call in ("power_off", "check"):
            t0 = time.monotonic()
            with pytest.raises(FenceError):
                getattr(fencer(sshd, port=port, timeout=timeout), call)("node-b")
            assert time.monotonic() - t0 < timeout + SLACK


def test_status_is_unknown_and_never_raises(sshd: Sshd, tmp_path: Path) -> None:
    assert fencer(sshd).status("node-b") is Power.UNKNOWN
    broken = fencer(sshd, port=_free_port(), key=tmp_path / "absent", known_hosts=tmp_path / "absent")
    assert broken.status("node-b") is Power.UNKNOWN


def test_power_on_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(FenceError, match="SSH cannot power a node on; use an IPMI or fence-agent level"):
        fencer(sshd).power_on("node-b")
