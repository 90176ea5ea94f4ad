"""Real redis-server and redis-sentinel processes for integration tests, on ephemeral loopback ports.

Each process runs from its own directory under a pytest tmp dir, without persistence, and is stopped by its
PID (SIGTERM, then SIGKILL) even when a test fails; nothing is ever killed by name or pattern. Also here: a
throw-away CA and server certificate for TLS, and a TCP listener that never answers (a blackholed Redis).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port nothing listens on right now (the kernel's pick for an ephemeral bind)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{what}: not within {seconds} s")


@dataclass
class Tls:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> Tls:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it (EC P-256, valid one day)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arbiter test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    tls.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    tls.key.chmod(0o600)
    return tls


@dataclass
class Process:
    """One redis-server or redis-sentinel; `start` again after `kill` restarts it on the same port, empty."""

    name: str
    directory: Path
    port: int
    argv_tail: list[str]
    program: str = "redis-server"
    password: str | None = None
    tls: Tls | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def client(self, timeout: float = 2.0) -> redis.Redis:
        kwargs: dict[str, object] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if self.tls is not None:
            kwargs |= {"ssl": True, "ssl_ca_certs": str(self.tls.ca)}
        return redis.Redis(host=HOST, port=self.port, password=self.password, decode_responses=True, **kwargs)  # type: ignore[arg-type]

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.program, *self.argv_tail], cwd=self.directory, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(self._answers, 10, f"{self.name} on port {self.port} to answer PING")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.directory / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{log}")
        with self.client(0.5) as client:
            return bool(client.ping())

    def kill(self) -> None:
        """SIGKILL by PID and reap: with persistence off, the next `start` is a Redis that lost every key."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


class Servers:
    """Starts processes under one directory and stops every one of them, by PID, in `stop_all`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Process] = []

    def redis(self, name: str, *extra: str, password: str | None = None, tls: Tls | None = None) -> Process:
        port = free_port()
        d = self.directory / name
        listen = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
        argv = [
            *listen,
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(d),
            *extra,
        ]
        if password is not None:
            argv += ["--requirepass", password, "--masterauth", password]
        if tls is not None:
            argv += [
                "--tls-cert-file",
                str(tls.cert),
                "--tls-key-file",
                str(tls.key),
                "--tls-ca-cert-file",
                str(tls.ca),
                "--tls-auth-clients",
                "no",
            ]
        return self._start(Process(name, d, port, argv, password=password, tls=tls))

    def sentinel(self, name: str, service: str, master: Process, quorum: int = 2) -> Process:
        port = free_port()
        d = self.directory / name
        d.mkdir(parents=True, exist_ok=True)
        conf = d / "sentinel.conf"
        # Sentinel rewrites its config file, so it gets one of its own; small timers keep a failover to seconds.
        conf.write_text(
            f"port {port}\nbind {HOST}\ndir {d}\n"
            f"sentinel monitor {service} {HOST} {master.port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 2000\n"
            f"sentinel parallel-syncs {service} 1\n"
        )
        return self._start(Process(name, d, port, [str(conf)], program="redis-sentinel"))

    def _start(self, process: Process) -> Process:
        self.started.append(process)
        process.start()
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


def servers_in(directory: Path) -> Iterator[Servers]:
    """For a fixture: yields a `Servers` and stops everything it started, whatever happened."""
    servers = Servers(directory)
    try:
        yield servers
    finally:
        servers.stop_all()


class Blackhole:
    """A TCP port that completes handshakes (kernel backlog) but never accepts or answers: a hung Redis host.

    With `full=True` the backlog is filled first, so new connection attempts get no SYN-ACK at all.
    """

    def __init__(self, full: bool = False) -> None:
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(0)
        self.port: int = self.listener.getsockname()[1]
        self.fillers: list[socket.socket] = []
        if full:
            # Linux queues backlog + 1 completed connections; a few more make sure the queue is full.
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect((HOST, self.port))
                self.fillers.append(filler)
            time.sleep(0.1)

    def close(self) -> None:
        for sock in [*self.fillers, self.listener]:
            sock.close()
