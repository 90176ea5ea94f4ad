"""The heartbeat frame: what one node tells its peers each interval, its wire format, key and acceptance rules.

Wire format (version 3), at most `MAX_FRAME` bytes so one frame fits one UDP datagram on a 1500-byte MTU:

    b"KH" | version (1 byte) | body: compact ASCII JSON | HMAC-SHA256 over everything before it (32 bytes)

The body is `{"c": cluster, "n": node, "i": incarnation, "s": sequence, "w": wall ns, "m": monotonic ns,
"q": quorum, "h": highest token, "l": leaving, "t": [lease ttl_ms, renew_ms, safety_ms, heartbeat interval_ms,
deadtime_ms], "e": [[instance, state, vip, priority, lease holder, lease token, gate open, rule, config
fingerprint, advert_int_ms], ...]}`. Version 2 added the gate, the last rule and the keepalived config
fingerprint per instance (the peer's half of `status`, and drift between the nodes' keepalived.conf), and "l":
the agent's last frames on a clean stop, sent after its gates are closed and its VIPs are gone. Version 3 added
the sender's timings ("t", and advert_int_ms per instance): a peer judges the sender's lease renewals by the
sender's TTL, not its own, and the drift check reports nodes whose timings differ.

Older versions are still read, and sent: a node sends the lowest version among its peers' newest frames (the
newest version before it has heard any), so a peer that still runs an older agent, which refuses newer
frames, never takes the upgraded node for silent, and fences it.

`parse_frame` is pure (bytes → Frame or `FrameRefusedError`); `FrameDecoder` adds what needs memory: the cluster and
own-node checks, the peer's incarnation (a restart) and the sequence per (peer, medium), so that a captured frame
replayed later, or a frame of a process that has since restarted, is refused.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arbiter.model import VrrpState
from arbiter.secretfile import read_secret

MAGIC = b"KH"
VERSION = 3
MAC_SIZE = hashlib.sha256().digest_size
HEADER_SIZE = len(MAGIC) + 1
# 1500-byte Ethernet MTU minus IPv6 (40) and UDP (8) headers, with room to spare: never fragmented.
MAX_FRAME = 1400
MAX_INSTANCES = 32
U64 = 2**64 - 1
I63 = 2**63 - 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_STATES = {s.value: s for s in VrrpState}
_KEYS = {1: frozenset("cniswmqhe"), 2: frozenset("cniswmqhle"), 3: frozenset("cniswmqhlte")}
# Older versions are accepted (version 1: 6 fields per instance, no "l"; version 2: 9 fields, no "t"): during a
# rolling upgrade a node that runs the newer agent must not take its not-yet-upgraded peer for silent, and fence it.
_FIELDS = {1: 6, 2: 9, 3: 10}
MAX_MS = 3_600_000  # the config's largest timing (arbiter.config Millis)
_FINGERPRINT = re.compile(r"[0-9a-f]{1,16}")
_RULE = re.compile(r"[A-Z][A-Z0-9]{0,3}")


class Refusal(enum.Enum):
    MALFORMED = "malformed"  # bad length, magic, JSON, types or values out of range
    UNKNOWN_VERSION = "unknown_version"
    BAD_MAC = "bad_mac"  # forged, corrupted on the way, or signed with another key
    OTHER_CLUSTER = "other_cluster"  # a neighbouring cluster on the same network or port
    OWN_FRAME = "own_frame"  # our own frame came back (a looped serial cable, our own address as a peer's)
    UNKNOWN_PEER = "unknown_peer"  # validly signed by a node this config does not list as a peer
    OLD_INCARNATION = "old_incarnation"  # from a process of the peer that has since restarted
    REPLAYED = "replayed"  # sequence below the last one accepted from that peer on that medium
    # The last accepted frame again on the same medium: normal when a peer has several addresses reachable
    # through one interface (every frame goes to every address). Counted, harmless, not an anomaly.
    DUPLICATE = "duplicate"


class FrameRefusedError(Exception):
    """The one exception the decoder raises: a reason to count and a detail to log."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class KeyFileError(Exception):
    """The heartbeat key file cannot be used; the message names the file and what to do."""


def load_key(path: Path) -> bytes:
    """Read the shared heartbeat key; refused when group/world readable, not a regular file or empty."""
    hint = "put a random secret in it, the same on every node"
    return read_secret(path, "heartbeat key file", empty_hint=hint, error=KeyFileError)


@dataclass(frozen=True)
class InstanceReport:
    """One VRRP instance as the sender sees it."""

    name: str
    state: VrrpState  # keepalived's state on the sender
    vip_present: bool
    priority: int
    lease_holder: str | None  # who the sender's lease view names as holder
    lease_token: int | None
    gate_open: bool | None = None  # the sender's gate for this instance; None before its first decision
    rule: str | None = None  # the policy rule of the sender's last decision (e.g. "H1")
    fingerprint: str | None = None  # of the sender's keepalived.conf for this instance (arbiter.kconf)
    advert_int_ms: int | None = None  # the instance's VRRP advert interval in the sender's config (version 3)


@dataclass(frozen=True)
class NodeTimings:
    """The sender's timings as its config sets them, in milliseconds (version 3)."""

    ttl_ms: int  # [lease]
    renew_ms: int
    safety_ms: int
    interval_ms: int  # [heartbeat]
    deadtime_ms: int

    def as_list(self) -> list[int]:
        return [self.ttl_ms, self.renew_ms, self.safety_ms, self.interval_ms, self.deadtime_ms]


@dataclass(frozen=True)
class Frame:
    cluster: str
    node: str
    incarnation: int  # random 64-bit per process start: tells a restart from a replay
    sequence: int  # per sender incarnation, +1 per frame; the same frame goes out on every medium
    # Wall clock only for logs (it can step); the sender's monotonic lets the receiver express the send time in
    # its own clock (see MediaTracker), immune to wall-clock steps on either side.
    sent_wall_ns: int
    sent_mono_ns: int
    instances: tuple[InstanceReport, ...]
    quorate: bool | None  # the sender's reference quorum; None before its first round
    highest_token: int  # highest fencing token the sender has seen
    leaving: bool = False  # a clean stop: gates closed, VIPs released; silence after this is not a failure
    version: int = VERSION  # the wire version it came in, or is to be sent in (older ones leave fields out)
    timings: NodeTimings | None = None  # the sender's (version 3); None in older frames

    def instance(self, name: str) -> InstanceReport | None:
        return next((i for i in self.instances if i.name == name), None)


def _mac(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, signed, hashlib.sha256).digest()


def encode_frame(frame: Frame, key: bytes) -> bytes:
    """The frame on the wire; ValueError when it is larger than MAX_FRAME (check-config refuses such configs)."""
    wire = _encode(frame, key)
    if len(wire) > MAX_FRAME:
        raise ValueError(f"heartbeat frame of {len(wire)} bytes exceeds {MAX_FRAME}: too many or too long names")
    return wire


def frame_size(frame: Frame) -> int:
    return len(_encode(frame, b"size"))


def _encode(frame: Frame, key: bytes) -> bytes:
    body = {
        "c": frame.cluster,
        "n": frame.node,
        "i": frame.incarnation,
        "s": frame.sequence,
        "w": frame.sent_wall_ns,
        "m": frame.sent_mono_ns,
        "q": frame.quorate,
        "h": frame.highest_token,
        "l": frame.leaving,
        "t": None if frame.timings is None else frame.timings.as_list(),
        "e": [
            [
                i.name,
                i.state.value,
                i.vip_present,
                i.priority,
                i.lease_holder,
                i.lease_token,
                i.gate_open,
                i.rule,
                i.fingerprint,
                i.advert_int_ms,
            ][: _FIELDS[frame.version]]
            for i in frame.instances
        ],
    }
    # An older version leaves out what it does not know (the peer that reads only it refuses anything more).
    body = {key: value for key, value in body.items() if key in _KEYS[frame.version]}
    signed = MAGIC + bytes([frame.version]) + json.dumps(body, separators=(",", ":")).encode("ascii")
    return signed + _mac(key, signed)


def _malformed(detail: str) -> FrameRefusedError:
    return FrameRefusedError(Refusal.MALFORMED, detail)


def _int(value: Any, what: str, low: int, high: int) -> int:
    # `type(...) is int`: JSON true/false load as bool, a subclass of int, and must not pass as numbers.
    if type(value) is not int or not low <= value <= high:
        raise _malformed(f"{what}: not an integer in [{low}, {high}]")
    return value


def _name(value: Any, what: str) -> str:
    if type(value) is not str or not _NAME.fullmatch(value):
        raise _malformed(f"{what}: not a name")
    return value


def _match(pattern: re.Pattern[str], value: Any, what: str, kind: str) -> str:
    if type(value) is not str or not pattern.fullmatch(value):
        raise _malformed(f"{what}: not {kind}")
    return value


def _bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise _malformed(f"{what}: not a boolean")
    return value


def _body(body: Any, version: int = VERSION) -> Frame:
    if type(body) is not dict or body.keys() != _KEYS[version]:
        raise _malformed(f"body: not an object with exactly the version-{version} keys")
    entries = body["e"]
    if type(entries) is not list or len(entries) > MAX_INSTANCES:
        raise _malformed(f"e: not a list of at most {MAX_INSTANCES} instances")
    instances: list[InstanceReport] = []
    for n, entry in enumerate(entries):
        if type(entry) is not list or len(entry) != _FIELDS[version]:
            raise _malformed(f"e[{n}]: not a list of {_FIELDS[version]} fields")
        name, state, vip, priority, holder, token, gate, rule, fingerprint, advert = [*entry, *[None] * 4][:10]
        if type(state) is not str or state not in _STATES:
            raise _malformed(f"e[{n}].state: not a VRRP state")
        instances.append(
            InstanceReport(
                name=_name(name, f"e[{n}].name"),
                state=_STATES[state],
                vip_present=_bool(vip, f"e[{n}].vip"),
                priority=_int(priority, f"e[{n}].priority", 0, 255),
                lease_holder=None if holder is None else _name(holder, f"e[{n}].holder"),
                lease_token=None if token is None else _int(token, f"e[{n}].token", 0, I63),
                gate_open=None if gate is None else _bool(gate, f"e[{n}].gate"),
                rule=None if rule is None else _match(_RULE, rule, f"e[{n}].rule", "a rule id"),
                fingerprint=None if fingerprint is None else _match(_FINGERPRINT, fingerprint, f"e[{n}].fp", "hex"),
                advert_int_ms=None if advert is None else _int(advert, f"e[{n}].advert_int_ms", 1, MAX_MS),
            )
        )
    if len({i.name for i in instances}) != len(instances):
        raise _malformed("e: an instance is reported twice")
    quorate = body["q"]
    return Frame(
        cluster=_name(body["c"], "c"),
        node=_name(body["n"], "n"),
        incarnation=_int(body["i"], "i", 0, U64),
        sequence=_int(body["s"], "s", 1, I63),
        sent_wall_ns=_int(body["w"], "w", 0, I63),
        sent_mono_ns=_int(body["m"], "m", 0, I63),
        instances=tuple(instances),
        quorate=None if quorate is None else _bool(quorate, "q"),
        highest_token=_int(body["h"], "h", 0, I63),
        leaving=_bool(body["l"], "l") if version >= 2 else False,
        version=version,
        timings=_timings(body["t"]) if version >= 3 else None,
    )


def _timings(value: Any) -> NodeTimings | None:
    if value is None:
        return None
    if type(value) is not list or len(value) != 5:
        raise _malformed("t: not a list of 5 timings")
    keys = ("ttl_ms", "renew_ms", "safety_ms", "interval_ms", "deadtime_ms")
    return NodeTimings(*(_int(v, f"t.{key}", 1, MAX_MS) for key, v in zip(keys, value, strict=True)))


def _load_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    # RecursionError: 1,400 bytes of "[" nest deeper than the interpreter allows.
    except (ValueError, RecursionError) as exc:
        raise _malformed(f"body: not JSON ({type(exc).__name__})") from None


def parse_frame(data: bytes, key: bytes, cluster: str | None = None) -> Frame:
    """Check length, magic, version and MAC, then the body's types and ranges. Pure: no memory of the past.

    `cluster`, when given, turns a MAC failure on a frame that names another cluster into OTHER_CLUSTER (the
    neighbouring cluster has its own key), which tells an operator more than "bad_mac".
    """
    if not HEADER_SIZE + 2 + MAC_SIZE <= len(data) <= MAX_FRAME:
        raise _malformed(f"length {len(data)} outside [{HEADER_SIZE + 2 + MAC_SIZE}, {MAX_FRAME}]")
    if data[: len(MAGIC)] != MAGIC:
        raise _malformed("no heartbeat magic")
    version = data[len(MAGIC)]
    if version not in _KEYS:
        raise FrameRefusedError(
            Refusal.UNKNOWN_VERSION, f"version {version}, this node reads {', '.join(map(str, _KEYS))}"
        )
    signed, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    raw = signed[HEADER_SIZE:]
    if not hmac.compare_digest(mac, _mac(key, signed)):
        if cluster is not None:
            try:
                claimed = _load_json(raw)
            except FrameRefusedError:
                claimed = None
            if type(claimed) is dict and type(claimed.get("c")) is str and claimed["c"] != cluster:
                raise FrameRefusedError(Refusal.OTHER_CLUSTER, f"unsigned frame naming cluster {claimed['c'][:64]!r}")
        raise FrameRefusedError(Refusal.BAD_MAC, "HMAC does not match the heartbeat key")
    return _body(_load_json(raw), version)


@dataclass
class _PeerSequences:
    incarnation: int
    retired: deque[int]
    last: dict[str, int] = field(default_factory=dict)  # medium → highest sequence accepted on it


class FrameDecoder:
    """Turns received bytes into accepted frames, remembering per peer its incarnation and per (peer, medium)
    the last sequence. Sequences are per medium because the same frame is sent on every medium: each medium must
    accept it once, and a frame that is late on one medium must not be refused as a replay of another's copy."""

    def __init__(
        self,
        key: bytes,
        cluster: str,
        node: str,
        peers: Collection[str] | None = None,
        retired_limit: int = 16,
    ) -> None:
        self._key = key
        self._cluster = cluster
        self._node = node
        self._peers = frozenset(peers) if peers is not None else None
        self._retired_limit = retired_limit
        self._sequences: dict[str, _PeerSequences] = {}

    def decode(self, data: bytes, medium: str) -> Frame:
        frame = parse_frame(data, self._key, self._cluster)
        if frame.cluster != self._cluster:
            raise FrameRefusedError(Refusal.OTHER_CLUSTER, f"from cluster {frame.cluster!r}")
        if frame.node == self._node:
            raise FrameRefusedError(Refusal.OWN_FRAME, f"sent by this node ({self._node}) itself")
        if self._peers is not None and frame.node not in self._peers:
            raise FrameRefusedError(Refusal.UNKNOWN_PEER, f"from {frame.node!r}, not a configured peer")
        self._admit(frame, medium)
        return frame

    def _admit(self, frame: Frame, medium: str) -> None:
        seen = self._sequences.get(frame.node)
        if seen is None:
            self._sequences[frame.node] = _PeerSequences(
                frame.incarnation, deque(maxlen=self._retired_limit), {medium: frame.sequence}
            )
            return
        if frame.incarnation == seen.incarnation:
            last = seen.last.get(medium, 0)
            if frame.sequence == last:
                raise FrameRefusedError(Refusal.DUPLICATE, f"sequence {frame.sequence} again on {medium}")
            if frame.sequence < last:
                raise FrameRefusedError(Refusal.REPLAYED, f"sequence {frame.sequence} after {last} on {medium}")
            seen.last[medium] = frame.sequence
            return
        if frame.incarnation in seen.retired:
            raise FrameRefusedError(Refusal.OLD_INCARNATION, f"incarnation {frame.incarnation:#x} has restarted since")
        # An unseen incarnation: the peer restarted, its sequence starts over on every medium.
        seen.retired.append(seen.incarnation)
        seen.incarnation = frame.incarnation
        seen.last = {medium: frame.sequence}

    def incarnation_of(self, peer: str) -> int | None:
        seen = self._sequences.get(peer)
        return seen.incarnation if seen else None
