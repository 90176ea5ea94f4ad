"""The agent's configuration: one TOML file validated into frozen pydantic models.

This module owns the user interface of the config file (key names, defaults, the timing rules of DESIGN.md)
and the error messages an operator sees. Everything is refused, never silently adjusted. Checks that only make
sense on the node itself (secret files present, key files private, interfaces present) live in `node_problems`
and are skipped by `check-config --offline`. A heartbeat medium missing at this moment (serial device, NIC) is
not a problem but a warning (`media_warnings`): the agent runs with that medium down and keeps retrying it.
A peer fenced only over SSH is a warning too (`fencing_warnings`): valid, but it cannot power off a dead host.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyInterface,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_PATH = Path("/etc/keepalived-arbiter/arbiter.toml")


class _Model(BaseModel):
    # Frozen: a loaded config is a value (arrays load as tuples, so nothing inside can be appended to either);
    # unknown keys are a typo the operator must hear about.
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
# Numbers and booleans are strict: TOML has real types, so `priority = true` or `ttl_ms = "3000"` is a mistake
# to report, not a value to coerce.
Millis = Annotated[int, Field(strict=True, gt=0, le=3_600_000)]
Port = Annotated[int, Field(strict=True, gt=0, lt=65536)]
Level = Annotated[int | None, Field(strict=True, ge=1, le=9)]


def _count(least: int, most: int | None = None) -> AfterValidator:
    """Bounds on an array's length, checked only once its items are valid.

    (pydantic's own `min_length` on a tuple adds a second, misleading error whenever an item is invalid.)
    """

    def check(value: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(value) < least:
            raise ValueError(f"needs at least {least} entr{'y' if least == 1 else 'ies'} (got {len(value)})")
        if most is not None and len(value) > most:
            raise ValueError(f"allows at most {most} entr{'y' if most == 1 else 'ies'} (got {len(value)})")
        return value

    return AfterValidator(check)


def _host(value: str) -> str:
    """A host is an IP address or a DNS name; a malformed dotted quad is refused as an address."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    looks_numeric = all(part.isdigit() for part in value.split("."))
    if looks_numeric or not value or any(c.isspace() for c in value) or len(value) > 253:
        # The caller's error report appends the offending value as "(got ...)".
        raise ValueError("not an IP address or host name")
    return value


def _host_port(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or (host.count(":") and not (host.startswith("[") and host.endswith("]"))):
        host, port = value, str(default_port)
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a port number: {port!r}")
    return _host(host), int(port)


class NodeConfig(_Model):
    name: Name
    cluster: Name
    state_dir: Path = Path("/var/lib/keepalived-arbiter")


class SshFence(_Model):
    driver: Literal["ssh"]
    level: Level = None
    host: str
    port: Port = 22
    user: str = "root"
    key_file: Path
    known_hosts: Path
    command: str = "echo o > /proc/sysrq-trigger"

    _check_host = field_validator("host")(classmethod(lambda cls, v: _host(v)))


class IpmiFence(_Model):
    driver: Literal["ipmi"]
    level: Level = None
    host: str
    port: Port = 623
    username: str
    password_file: Path

    _check_host = field_validator("host")(classmethod(lambda cls, v: _host(v)))


class AgentFence(_Model):
    """Any installed ClusterLabs fence agent, driven through its stdin key=value protocol."""

    driver: Literal["agent"]
    level: Level = None
    agent: Annotated[str, Field(pattern=r"^fence_[a-z0-9_]+$")]
    options: dict[str, str] = Field(default_factory=dict)
    password_file: Path | None = None


FenceDevice = Annotated[SshFence | IpmiFence | AgentFence, Field(discriminator="driver")]


class PeerConfig(_Model):
    name: Name
    heartbeat_addresses: tuple[IPvAnyAddress, ...] = ()
    fence: tuple[FenceDevice, ...] = ()

    def fence_levels(self) -> list[list[SshFence | IpmiFence | AgentFence]]:
        """Devices grouped by level, in order; a device without `level` is a level of its own."""
        levels: dict[int, list[SshFence | IpmiFence | AgentFence]] = {}
        for position, device in enumerate(self.fence, start=1):
            levels.setdefault(device.level if device.level is not None else 100 + position, []).append(device)
        return [levels[k] for k in sorted(levels)]


class InstanceConfig(_Model):
    name: Name
    vip: Annotated[tuple[IPvAnyInterface, ...], _count(1)]
    interface: Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[^/\s]+$")]
    track_file: Path
    # Mirrors of this node's keepalived.conf, needed to know when keepalived's master-down timer fires.
    priority: int = Field(default=100, strict=True, ge=1, le=255)
    # keepalived's virtual_router_id: tells this instance's adverts from others' on a shared interface.
    virtual_router_id: int | None = Field(default=None, strict=True, ge=1, le=255)
    advert_int_ms: int = Field(default=1000, strict=True, ge=10, le=255_000)
    vrrp_version: Literal[2, 3] = 2
    nopreempt: bool = Field(default=False, strict=True)
    # keepalived's preempt_delay (0–1000 s): how long a returning higher-priority node may take to preempt.
    preempt_delay_ms: int = Field(default=0, strict=True, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _advert_fits_version(self) -> InstanceConfig:
        if self.vrrp_version == 2 and self.advert_int_ms % 1000:
            raise ValueError(f"advert_int_ms: VRRPv2 adverts are whole seconds (got {self.advert_int_ms})")
        if self.vrrp_version == 3 and self.advert_int_ms % 10:
            raise ValueError(f"advert_int_ms: VRRPv3 adverts are centiseconds (got {self.advert_int_ms})")
        if not str(self.track_file).startswith("/"):
            raise ValueError(f"track_file: must be an absolute path (got {str(self.track_file)!r})")
        return self

    @property
    def master_down_ms(self) -> float:
        """RFC 3768/5798: 3 × advert interval + skew time, as keepalived computes it."""
        if self.vrrp_version == 2:
            skew = (256 - self.priority) / 256 * 1000
        else:
            skew = (256 - self.priority) * self.advert_int_ms / 256
        return 3 * self.advert_int_ms + skew


class ReferenceConfig(_Model):
    addresses: Annotated[tuple[IPvAnyAddress, ...], _count(1)]
    quorum: int = Field(default=1, strict=True, ge=1)
    interval_ms: Millis = 1000
    timeout_ms: Millis = 500
    rise: int = Field(default=2, strict=True, ge=1, le=10)
    fall: int = Field(default=2, strict=True, ge=1, le=10)

    @model_validator(mode="after")
    def _rules(self) -> ReferenceConfig:
        if self.quorum > len(self.addresses):
            raise ValueError(f"quorum: must not exceed the {len(self.addresses)} addresses (got {self.quorum})")
        if self.timeout_ms >= self.interval_ms:
            raise ValueError(f"timeout_ms: must be below interval_ms {self.interval_ms} (got {self.timeout_ms})")
        return self


def _sentinel_address(value: str) -> str:
    host, port = _host_port(value, 26379)
    return f"{host}:{port}"


class SentinelConfig(_Model):
    # Validated one by one so an error names its index: `lease.sentinel.addresses[1]`.
    addresses: Annotated[tuple[Annotated[str, AfterValidator(_sentinel_address)], ...], _count(1)]
    service: Name
    password_file: Path | None = None


class LeaseConfig(_Model):
    redis_url: str | None = None
    sentinel: SentinelConfig | None = None
    password_file: Path | None = None
    ttl_ms: Millis = 3000
    renew_ms: Millis = 1000
    timeout_ms: Millis = 300
    # Self-demotion happens this long before the lease would expire (clock drift, gate write, VIP removal).
    safety_ms: Millis = 500

    @field_validator("redis_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        if scheme != "unix":
            hostport = rest.rpartition("@")[2].partition("/")[0]
            _host_port(hostport, 6379)
        return value

    @model_validator(mode="after")
    def _rules(self) -> LeaseConfig:
        if (self.redis_url is None) == (self.sentinel is None):
            raise ValueError("redis_url: give exactly one of redis_url or sentinel")
        floor = self.renew_ms + 2 * self.timeout_ms
        if self.ttl_ms <= floor:
            raise ValueError(f"ttl_ms: must exceed renew_ms + 2 × timeout_ms = {floor} (got {self.ttl_ms})")
        if self.safety_ms < self.timeout_ms:
            raise ValueError(f"safety_ms: must be at least timeout_ms {self.timeout_ms} (got {self.safety_ms})")
        demote_at = self.ttl_ms - self.safety_ms
        if self.renew_ms + self.timeout_ms > demote_at:
            raise ValueError(
                f"safety_ms: a renewal (renew_ms + timeout_ms = {self.renew_ms + self.timeout_ms}) must fit "
                f"before self-demotion at ttl_ms − safety_ms = {demote_at} (got {self.safety_ms})"
            )
        return self


class UdpMedium(_Model):
    interface: Annotated[str, Field(min_length=1, max_length=15, pattern=r"^[^/\s]+$")]


class SerialMedium(_Model):
    device: Path
    baud: Literal[9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600] = 115200


class HeartbeatConfig(_Model):
    port: Port = 6941
    interval_ms: Millis = 200
    deadtime_ms: Millis = 1000
    key_file: Path
    udp: tuple[UdpMedium, ...] = ()
    serial: tuple[SerialMedium, ...] = ()

    @model_validator(mode="after")
    def _rules(self) -> HeartbeatConfig:
        if self.deadtime_ms <= 2 * self.interval_ms:
            raise ValueError(
                f"deadtime_ms: must exceed 2 × interval_ms = {2 * self.interval_ms} (got {self.deadtime_ms})"
            )
        if not self.udp and not self.serial:
            raise ValueError("udp: at least one heartbeat medium (udp or serial) is required")
        return self


class FencingConfig(_Model):
    # This node's static fence-race delay: the node that should lose a no-lease race waits this long.
    delay_ms: int = Field(default=0, strict=True, ge=0, le=600_000)
    random_delay_ms: int = Field(default=0, strict=True, ge=0, le=600_000)
    power_timeout_ms: Millis = 20000
    # Without a heartbeat or status proof, OFF is confirmed by silence on every medium for this long.
    confirm_ms: Millis = 5000
    hold_down_ms: Millis = 60000
    # What a node holding the lease does when fencing fails: "close" its gate (safe) or "keep" the VIP.
    on_failure: Literal["close", "keep"] = "close"


class Webhook(_Model):
    url: str
    secret_file: Path | None = None
    format: Literal["json", "slack", "alertmanager"] = "json"
    # One delivery attempt, connect to last byte of the answer.
    timeout_ms: Millis = 5000
    # Exponential backoff between attempts (with jitter), from retry_min_ms up to retry_max_ms; a Retry-After
    # answer is honoured up to retry_max_ms.
    retry_min_ms: Millis = 500
    retry_max_ms: Millis = 60000

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme = value.partition("://")[0]
        if scheme not in ("http", "https") or "://" not in value or len(value) < len(scheme) + 4:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _rules(self) -> Webhook:
        if self.retry_min_ms > self.retry_max_ms:
            raise ValueError(
                f"retry_min_ms: must not exceed retry_max_ms {self.retry_max_ms} (got {self.retry_min_ms})"
            )
        return self


class AlertsConfig(_Model):
    webhooks: tuple[Webhook, ...] = ()
    # Per webhook: when full, the oldest queued alert is dropped (and counted) to make room for the new one.
    queue_size: int = Field(default=1000, strict=True, ge=1, le=100_000)
    # An alert not delivered within this long is dropped (and counted): a page about an old event misleads.
    max_age_ms: Millis = 3_600_000


class ApiConfig(_Model):
    socket: Path = Path("/run/keepalived-arbiter/agent.sock")
    # keepalived's `vrrp_notify_fifo`, read as a third source of its state (the hook and netlink are the others).
    # Leave unset if something else reads that FIFO: two readers split its lines between them.
    notify_fifo: Path | None = None
    metrics: str | None = "127.0.0.1:9687"
    group: str | None = None

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        host, port = _host_port(value, 9687)
        return f"{host}:{port}"


class KeepalivedConfig(_Model):
    # This node's keepalived.conf, which the agent's periodic drift check lints (`check-keepalived`'s rules).
    config: Path = Path("/etc/keepalived/keepalived.conf")
    check_interval_ms: Millis = 300000


class Config(_Model):
    node: NodeConfig
    peer: Annotated[tuple[PeerConfig, ...], _count(1, 2)]
    instance: Annotated[tuple[InstanceConfig, ...], _count(1)]
    reference: ReferenceConfig
    lease: LeaseConfig
    heartbeat: HeartbeatConfig
    fencing: FencingConfig = FencingConfig()
    alerts: AlertsConfig = AlertsConfig()
    api: ApiConfig = ApiConfig()
    keepalived: KeepalivedConfig = KeepalivedConfig()

    @model_validator(mode="after")
    def _cross_rules(self) -> Config:
        # Each message starts with the full key path of the second occurrence (see `_message`).
        names = {self.node.name: "node.name"}
        for i, peer in enumerate(self.peer):
            if peer.name in names:
                raise ValueError(f"peer[{i}].name: must differ from {names[peer.name]} (got {peer.name!r})")
            names[peer.name] = f"peer[{i}].name"
        seen: dict[str, int] = {}
        tracks: dict[Path, int] = {}
        for i, inst in enumerate(self.instance):
            if inst.name in seen:
                raise ValueError(f"instance[{i}].name: already used by instance[{seen[inst.name]}] (got {inst.name!r})")
            if inst.track_file in tracks:
                raise ValueError(
                    f"instance[{i}].track_file: already used by instance[{tracks[inst.track_file]}] "
                    f"(got {str(inst.track_file)!r})"
                )
            seen[inst.name] = i
            tracks[inst.track_file] = i
        return self


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """Raised with every problem found; `str()` is one line per problem, each naming its key path."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _loc_path(loc: tuple[int | str, ...], data: Any) -> str:
    """Turn a pydantic location into the key path an operator typed: `peer[0].fence[1].host`."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            node = node[item] if isinstance(node, list) and item < len(node) else None
        elif isinstance(node, dict) and item in node:
            parts.append(item)
            node = node[item]
        elif item in ("ssh", "ipmi", "agent") and isinstance(node, dict):
            continue  # discriminated-union tag, not a key the operator wrote
        else:
            parts.append(str(item))
            node = None
    return ".".join(parts)


def _message(error: Any) -> tuple[str, str]:
    """One pydantic error as (extra key suffix, message); the message ends with "(got X)" when X is a value."""
    msg = str(error["msg"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "", "unknown key"
    if kind == "missing":
        return "", "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        # A fence device whose `driver` is unknown or absent: name the key, list the choices.
        key = str(ctx.get("discriminator", "driver")).strip("'")
        if kind == "union_tag_not_found":
            return key, "required key is missing"
        return key, f"must be one of {ctx.get('expected_tags')} (got {ctx.get('tag')!r})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        # Model-level rules name their own key: "ttl_ms: must exceed ..." → suffix "ttl_ms".
        key, sep, rest = msg.partition(": ")
        if sep and " " not in key:
            return key, rest
    given = error.get("input")
    if "(got " not in msg and not isinstance(given, dict | list):
        # Shown as the operator wrote it in TOML: `true`, not Python's `True`.
        shown = str(given).lower() if isinstance(given, bool) else repr(given)
        msg = f"{msg} (got {shown})"
    return "", msg


def problems_of(data: dict[str, Any]) -> list[Problem]:
    try:
        Config.model_validate(data)
    except ValidationError as exc:
        found: list[Problem] = []
        for error in exc.errors():
            path = _loc_path(tuple(error["loc"]), data)
            suffix, message = _message(error)
            found.append(Problem(f"{path}.{suffix}" if path and suffix else path or suffix, message))
        return found
    return []


def parse(text: str, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("", f"{source}: not valid TOML: {exc}")]) from exc
    found = problems_of(data)
    if found:
        raise ConfigError(found)
    return Config.model_validate(data)


def load(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem("", f"{path}: cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem("", f"{path}: not UTF-8 text: {exc.reason}")]) from exc
    return parse(text, str(path))


def track_files_of(path: Path) -> list[Path]:
    """The gate files (`instance[].track_file`) a config file names, read from its raw TOML: also when the config
    is not valid, so that an agent refusing to run can still leave its gates closed. Empty when unreadable."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    instances = data.get("instance")
    if not isinstance(instances, list):
        return []
    return [
        Path(inst["track_file"])
        for inst in instances
        if isinstance(inst, dict) and isinstance(inst.get("track_file"), str) and inst["track_file"]
    ]


def _secret_problems(path: Path | None, key: str, must_be_private: bool) -> list[Problem]:
    if path is None:
        return []
    try:
        st = path.stat()
    except OSError as exc:
        return [Problem(key, f"cannot read {str(path)!r}: {exc.strerror}")]
    if not stat.S_ISREG(st.st_mode):
        return [Problem(key, f"{str(path)!r} is not a regular file")]
    if must_be_private and st.st_mode & 0o077:
        return [Problem(key, f"{str(path)!r} is readable by group or others (mode {st.st_mode & 0o777:o})")]
    if not os.access(path, os.R_OK):
        return [Problem(key, f"cannot read {str(path)!r}: permission denied")]
    return []


def _interface_problems(name: str, key: str) -> list[Problem]:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return [Problem(key, f"no such network interface on this node ({name!r})")]
    return []


def node_problems(cfg: Config) -> list[Problem]:
    """Checks that only hold on the node itself: secrets present and private, interfaces present."""
    found: list[Problem] = []
    found += _secret_problems(cfg.heartbeat.key_file, "heartbeat.key_file", must_be_private=True)
    found += _secret_problems(cfg.lease.password_file, "lease.password_file", must_be_private=True)
    if cfg.lease.sentinel is not None:
        found += _secret_problems(
            cfg.lease.sentinel.password_file, "lease.sentinel.password_file", must_be_private=True
        )
    for i, peer in enumerate(cfg.peer):
        for j, dev in enumerate(peer.fence):
            key = f"peer[{i}].fence[{j}]"
            if isinstance(dev, SshFence):
                found += _secret_problems(dev.key_file, f"{key}.key_file", must_be_private=True)
                found += _secret_problems(dev.known_hosts, f"{key}.known_hosts", must_be_private=False)
            else:
                found += _secret_problems(dev.password_file, f"{key}.password_file", must_be_private=True)
    for i, hook in enumerate(cfg.alerts.webhooks):
        found += _secret_problems(hook.secret_file, f"alerts.webhooks[{i}].secret_file", must_be_private=True)
    for i, inst in enumerate(cfg.instance):
        found += _interface_problems(inst.interface, f"instance[{i}].interface")
        if not inst.track_file.parent.is_dir():
            found.append(
                Problem(f"instance[{i}].track_file", f"directory {str(inst.track_file.parent)!r} does not exist")
            )
    return found


def media_warnings(cfg: Config) -> list[Problem]:
    """Heartbeat media missing on this node right now. Not fatal: a USB serial adapter, a NIC or a socat pty may
    appear after the agent starts, and the agent runs with that medium down (retried, shown, alerted) meanwhile."""
    found: list[Problem] = []
    for i, medium in enumerate(cfg.heartbeat.udp):
        for problem in _interface_problems(medium.interface, f"heartbeat.udp[{i}].interface"):
            found.append(Problem(problem.path, f"{problem.message}: that medium stays down until it appears"))
    for i, line in enumerate(cfg.heartbeat.serial):
        if not line.device.exists():
            found.append(
                Problem(
                    f"heartbeat.serial[{i}].device",
                    f"no such device {str(line.device)!r}: that medium stays down until it appears",
                )
            )
    return found


def fencing_warnings(cfg: Config) -> list[Problem]:
    """Peers whose every fence level is SSH, which cannot observe power. Valid, but not STONITH: SSH asks a live
    host to power itself off; a dead or hung host (or one whose sshd or network is down) cannot be powered off
    that way, and its OFF is then only inferred from silence on every medium for `confirm_ms`."""
    found: list[Problem] = []
    for i, peer in enumerate(cfg.peer):
        if peer.fence and all(isinstance(device, SshFence) for device in peer.fence):
            found.append(
                Problem(
                    f"peer[{i}].fence",
                    f"every fence level of {peer.name} is SSH, which cannot read power: a dead or hung "
                    f"{peer.name} cannot be powered off (SSH needs a live host to run the command), and its OFF "
                    f"rests on silence alone (every medium silent for fencing.confirm_ms {cfg.fencing.confirm_ms} "
                    f"ms), not on a power reading; add an IPMI or fence-agent level for real STONITH",
                )
            )
    return found


def timing_problems(cfg: Config) -> list[Problem]:
    """Rules that tie sections together (heartbeats vs keepalived's timers, lease vs fencing)."""
    found: list[Problem] = []
    for inst in cfg.instance:
        # A cut VRRP path is recognised once a heartbeat says MASTER 1.5 adverts after the last advert seen;
        # that must happen (plus one heartbeat) before keepalived's master-down timer makes this node MASTER.
        seen_cut_at = 1.5 * inst.advert_int_ms + cfg.heartbeat.interval_ms
        if seen_cut_at >= inst.master_down_ms:
            found.append(
                Problem(
                    "heartbeat.interval_ms",
                    f"too slow for instance {inst.name!r}: a cut VRRP path is seen after "
                    f"1.5 × advert_int + interval_ms = {seen_cut_at:.0f} ms, not before keepalived's "
                    f"master-down interval {inst.master_down_ms:.0f} ms (got {cfg.heartbeat.interval_ms})",
                )
            )
    if cfg.fencing.confirm_ms <= cfg.heartbeat.deadtime_ms:
        found.append(
            Problem(
                "fencing.confirm_ms",
                f"must exceed heartbeat.deadtime_ms {cfg.heartbeat.deadtime_ms} (got {cfg.fencing.confirm_ms})",
            )
        )
    if cfg.fencing.confirm_ms >= cfg.fencing.power_timeout_ms:
        # An SSH level waits for that proof inside the level's power timeout; it could never arrive in time.
        found.append(
            Problem(
                "fencing.confirm_ms",
                f"must be below fencing.power_timeout_ms {cfg.fencing.power_timeout_ms}, or a level without "
                f"a power status (SSH) can never be confirmed (got {cfg.fencing.confirm_ms})",
            )
        )
    return found


def frame_problems(cfg: Config) -> list[Problem]:
    """The heartbeat frame this config makes, at its largest (longest state, 19-digit tokens, every optional
    field set, this config's timings), must fit one UDP datagram: a frame that cannot be sent is silence, and
    silence gets fenced."""
    # Imported here: the heartbeat package imports this module.
    from arbiter.evidence.heartbeat.frame import (  # noqa: PLC0415
        MAX_FRAME,
        Frame,
        InstanceReport,
        NodeTimings,
        frame_size,
    )
    from arbiter.model import VrrpState  # noqa: PLC0415

    holder = max([cfg.node.name, *(p.name for p in cfg.peer)], key=len)
    big = 2**63 - 1
    reports = tuple(
        InstanceReport(i.name, VrrpState.UNKNOWN, False, 255, holder, big, False, "S0", "f" * 16, i.advert_int_ms)
        for i in cfg.instance
    )
    lease, hb = cfg.lease, cfg.heartbeat
    timings = NodeTimings(lease.ttl_ms, lease.renew_ms, lease.safety_ms, hb.interval_ms, hb.deadtime_ms)
    frame = Frame(cfg.node.cluster, cfg.node.name, 2**64 - 1, big, big, big, reports, False, big, timings=timings)
    size = frame_size(frame)
    if size <= MAX_FRAME:
        return []
    return [
        Problem(
            "instance",
            f"{len(cfg.instance)} instance(s) with these names make a heartbeat frame of up to {size} bytes, "
            f"over the {MAX_FRAME}-byte limit of one datagram: use fewer instances or shorter names",
        )
    ]


def check(cfg: Config, offline: bool) -> list[Problem]:
    found = timing_problems(cfg) + frame_problems(cfg)
    if not offline:
        found += node_problems(cfg)
    return found
