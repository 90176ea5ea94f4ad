"""Heartbeat frames: round trip, every refusal reason, replay and forgery, restarts, and a fuzzed decoder."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbiter.evidence.heartbeat.frame import (
    MAGIC,
    MAX_FRAME,
    VERSION,
    Frame,
    FrameDecoder,
    FrameRefusedError,
    InstanceReport,
    KeyFileError,
    Refusal,
    encode_frame,
    load_key,
    parse_frame,
)
from arbiter.model import VrrpState

KEY = b"0123456789abcdef0123456789abcdef"


def frame(node: str = "node-b", seq: int = 1, incarnation: int = 0xB0B, cluster: str = "web", **kw: Any) -> Frame:
    fields: dict[str, Any] = {
        "cluster": cluster,
        "node": node,
        "incarnation": incarnation,
        "sequence": seq,
        "sent_wall_ns": 1_700_000_000_000_000_000,
        "sent_mono_ns": 5_000_000_000 + seq,
        "instances": (InstanceReport("VI_1", VrrpState.MASTER, True, 150, "node-b", 41),),
        "quorate": True,
        "highest_token": 41,
    }
    fields.update(kw)
    return Frame(**fields)


def decoder(peers: tuple[str, ...] | None = ("node-b",)) -> FrameDecoder:
    return FrameDecoder(KEY, "web", "node-a", peers)


def sign(body: bytes, version: int = VERSION, key: bytes = KEY) -> bytes:
    signed = MAGIC + bytes([version]) + body
    return signed + hmac.new(key, signed, hashlib.sha256).digest()


def body_of(f: Frame) -> dict[str, Any]:
    wire = encode_frame(f, KEY)
    return dict(json.loads(wire[3:-32]))


def refused(data: bytes, dec: FrameDecoder | None = None, medium: str = "udp:eth0") -> Refusal:
    with pytest.raises(FrameRefusedError) as info:
        (dec or decoder()).decode(data, medium)
    return info.value.reason


# --- round trip and size ------------------------------------------------------------------------------------


def test_round_trip() -> None:
    f = frame(quorate=None)
    assert parse_frame(encode_frame(f, KEY), KEY) == f
    assert decoder().decode(encode_frame(f, KEY), "udp:eth0") == f


def test_eight_instances_fit_one_datagram() -> None:
    reports = tuple(
        InstanceReport(f"VI_web_{n:02d}", VrrpState.BACKUP, False, 100 + n, "node-a-long-name", 2**40 + n)
        for n in range(8)
    )
    wire = encode_frame(frame(node="node-b-long-name", instances=reports, highest_token=2**40), KEY)
    assert len(wire) < 1000  # well under MAX_FRAME (1400): room for longer names


def test_version_2_fields_round_trip_and_eight_full_instances_fit() -> None:
    reports = tuple(
        InstanceReport(
            f"VI_web_{n:02d}",
            VrrpState.MASTER,
            True,
            100 + n,
            "node-a-long-name",
            2**40 + n,
            True,
            "H1",
            "0123456789abcdef",
        )
        for n in range(8)
    )
    f = frame(node="node-b-long-name", instances=reports, highest_token=2**40, leaving=True)
    wire = encode_frame(f, KEY)
    assert parse_frame(wire, KEY) == f
    assert len(wire) < MAX_FRAME


@pytest.mark.parametrize(
    ("index", "value", "named"),
    [
        (6, "open", "e[0].gate"),
        (6, 1, "e[0].gate"),
        (7, "h1", "e[0].rule"),
        (7, "H1; rm", "e[0].rule"),
        (8, "XYZ", "e[0].fp"),
        (8, "0" * 17, "e[0].fp"),
    ],
)
def test_bad_version_2_instance_fields_are_malformed(index: int, value: Any, named: str) -> None:
    body = body_of(frame())
    body["e"][0][index] = value
    with pytest.raises(FrameRefusedError, match=re.escape(named)) as info:
        parse_frame(sign(json.dumps(body).encode()), KEY)
    assert info.value.reason is Refusal.MALFORMED


def test_a_version_1_frame_is_still_read_during_a_rolling_upgrade() -> None:
    body = body_of(frame())
    del body["l"], body["t"]
    body["e"] = [entry[:6] for entry in body["e"]]
    old = parse_frame(sign(json.dumps(body).encode(), version=1), KEY)
    assert old.version == 1 and old.leaving is False
    assert old.instances[0].lease_token == 41 and old.instances[0].gate_open is None and old.instances[0].rule is None
    body["e"][0].append(True)  # a version-1 frame with a version-2 field is malformed
    with pytest.raises(FrameRefusedError, match="not a list of 6 fields"):
        parse_frame(sign(json.dumps(body).encode(), version=1), KEY)


def test_leaving_must_be_a_boolean() -> None:
    body = body_of(frame())
    body["l"] = 0
    with pytest.raises(FrameRefusedError, match="l: not a boolean"):
        parse_frame(sign(json.dumps(body).encode()), KEY)


def test_too_big_frame_is_refused_at_encoding() -> None:
    reports = tuple(InstanceReport("i" * 60 + f"{n:03d}", VrrpState.BACKUP, False, 1, "h" * 64, 1) for n in range(32))
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(frame(instances=reports), KEY)


# --- every refusal reason -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"KH\x01",
        b"XX\x01" + b"{}" + bytes(32),
        b"KH\x01" + b"x" * MAX_FRAME,
        sign(b"not json"),
        sign(b"[1,2]"),
        sign(b"[" * 1300),  # deeper than the interpreter's recursion limit
        sign(b'{"c":"web"}'),
    ],
)
def test_malformed(data: bytes) -> None:
    assert refused(data) is Refusal.MALFORMED


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("s", 0),
        ("s", True),
        ("s", 1.5),
        ("s", 2**63),
        ("i", -1),
        ("i", 2**64),
        ("n", "bad name!"),
        ("n", ""),
        ("c", 7),
        ("q", 1),
        ("h", None),
        ("w", "now"),
        ("e", {}),
        ("e", [["VI_1", "MASTER", True, 256, None, None]]),
        ("e", [["VI_1", "MASTERFUL", True, 1, None, None]]),
        ("e", [["VI_1", "MASTER", 1, 1, None, None]]),
        ("e", [["VI_1", "MASTER", True, 1, None]]),
        ("e", [["VI_1", "MASTER", True, 1, None, -5]]),
        ("e", [["VI_1", "MASTER", True, 1, None, None], ["VI_1", "BACKUP", False, 1, None, None]]),
    ],
)
def test_malformed_signed_values(key: str, value: Any) -> None:
    body = body_of(frame())
    body[key] = value
    assert refused(sign(json.dumps(body).encode())) is Refusal.MALFORMED


def test_extra_key_is_malformed() -> None:
    body = body_of(frame())
    body["x"] = 1
    assert refused(sign(json.dumps(body).encode())) is Refusal.MALFORMED


def test_unknown_version() -> None:
    wire = bytearray(encode_frame(frame(), KEY))
    wire[2] = VERSION + 1
    assert refused(bytes(wire)) is Refusal.UNKNOWN_VERSION
    assert refused(sign(json.dumps(body_of(frame())).encode(), version=0)) is Refusal.UNKNOWN_VERSION


def test_forgery_flipped_bit_and_wrong_key() -> None:
    wire = encode_frame(frame(), KEY)
    for position in (3, 10, len(wire) // 2, len(wire) - 1):
        flipped = bytearray(wire)
        flipped[position] ^= 0x01
        # A flip inside the cluster name reads as another cluster's frame: refused all the same.
        assert refused(bytes(flipped)) in (Refusal.BAD_MAC, Refusal.MALFORMED, Refusal.OTHER_CLUSTER)
    assert refused(encode_frame(frame(), b"another key")) is Refusal.BAD_MAC
    # A bit flipped in the MAC itself leaves the body intact: only the MAC can catch it.
    flipped = bytearray(wire)
    flipped[-1] ^= 0x80
    assert refused(bytes(flipped)) is Refusal.BAD_MAC


def test_other_cluster_same_key_and_own_key() -> None:
    assert refused(encode_frame(frame(cluster="db"), KEY)) is Refusal.OTHER_CLUSTER
    assert refused(encode_frame(frame(cluster="db"), b"the db cluster's key")) is Refusal.OTHER_CLUSTER
    # Wrong key but claiming our cluster: a forgery, not a neighbour.
    assert refused(encode_frame(frame(cluster="web"), b"the db cluster's key")) is Refusal.BAD_MAC


def test_own_frame_and_unknown_peer() -> None:
    assert refused(encode_frame(frame(node="node-a"), KEY)) is Refusal.OWN_FRAME
    assert refused(encode_frame(frame(node="node-z"), KEY)) is Refusal.UNKNOWN_PEER
    assert decoder(peers=None).decode(encode_frame(frame(node="node-z"), KEY), "udp:eth0").node == "node-z"


def test_captured_frame_replayed_is_refused() -> None:
    dec = decoder()
    captured = encode_frame(frame(seq=5), KEY)
    dec.decode(captured, "udp:eth0")
    # The newest frame again (a second address of the peer's reached through the same interface): a duplicate.
    assert refused(captured, dec) is Refusal.DUPLICATE
    dec.decode(encode_frame(frame(seq=6), KEY), "udp:eth0")
    assert refused(captured, dec) is Refusal.REPLAYED
    assert refused(encode_frame(frame(seq=6), KEY), dec) is Refusal.DUPLICATE


def test_sequence_is_per_medium() -> None:
    dec = decoder()
    wire = encode_frame(frame(seq=10), KEY)
    # The same frame arrives once on every medium: each accepts it once.
    assert dec.decode(wire, "udp:eth0").sequence == 10
    assert dec.decode(wire, "udp:eth1").sequence == 10
    assert dec.decode(wire, "serial:/dev/ttyS1").sequence == 10
    assert refused(wire, dec, "udp:eth1") is Refusal.DUPLICATE
    # eth0 is ahead; a late frame on the serial line is still new there.
    dec.decode(encode_frame(frame(seq=12), KEY), "udp:eth0")
    assert dec.decode(encode_frame(frame(seq=11), KEY), "serial:/dev/ttyS1").sequence == 11
    assert refused(encode_frame(frame(seq=11), KEY), dec, "udp:eth0") is Refusal.REPLAYED


def test_restart_accepted_and_old_incarnation_refused() -> None:
    dec = decoder()
    old = [encode_frame(frame(seq=n, incarnation=1), KEY) for n in range(1, 50)]
    dec.decode(old[40], "udp:eth0")
    # The peer restarts: a new incarnation whose sequence starts over is accepted on every medium.
    dec.decode(encode_frame(frame(seq=1, incarnation=2), KEY), "udp:eth0")
    dec.decode(encode_frame(frame(seq=1, incarnation=2), KEY), "udp:eth1")
    assert dec.incarnation_of("node-b") == 2
    assert refused(old[45], dec) is Refusal.OLD_INCARNATION
    assert refused(old[48], dec, "udp:eth1") is Refusal.OLD_INCARNATION
    assert dec.decode(encode_frame(frame(seq=2, incarnation=2), KEY), "udp:eth0").sequence == 2


def test_retired_incarnations_are_bounded() -> None:
    dec = FrameDecoder(KEY, "web", "node-a", ("node-b",), retired_limit=3)
    for inc in range(1, 6):
        dec.decode(encode_frame(frame(incarnation=inc), KEY), "udp:eth0")
    assert refused(encode_frame(frame(seq=9, incarnation=4), KEY), dec) is Refusal.OLD_INCARNATION
    assert refused(encode_frame(frame(seq=9, incarnation=2), KEY), dec) is Refusal.OLD_INCARNATION
    # Incarnation 1 fell out of the bounded set: it would count as a restart again (documented limit).
    assert dec.decode(encode_frame(frame(seq=9, incarnation=1), KEY), "udp:eth0").incarnation == 1


# --- key file -----------------------------------------------------------------------------------------------


def test_key_file(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat.key"
    path.write_bytes(b"s3cret-key\n")
    path.chmod(0o600)
    assert load_key(path) == b"s3cret-key"
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match=r"heartbeat\.key.*readable by group or others \(mode 640\)"):
        load_key(path)
    path.chmod(0o604)
    with pytest.raises(KeyFileError, match="readable by group or others"):
        load_key(path)
    for empty in (b"", b" \n"):
        path.write_bytes(empty)
        path.chmod(0o600)
        with pytest.raises(KeyFileError, match=r"heartbeat\.key.*empty"):
            load_key(path)
    with pytest.raises(KeyFileError, match=r"missing\.key.*cannot open"):
        load_key(tmp_path / "missing.key")
    link = tmp_path / "link.key"
    os.symlink(path, link)
    with pytest.raises(KeyFileError, match=r"link\.key"):
        load_key(link)


# --- fuzzing: the decoder only ever returns a frame or raises FrameRefusedError ------------------------------

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
reports = st.builds(
    InstanceReport,
    name=names,
    state=st.sampled_from(VrrpState),
    vip_present=st.booleans(),
    priority=st.integers(0, 255),
    lease_holder=st.none() | names,
    lease_token=st.none() | st.integers(0, 2**63 - 1),
)
frames = st.builds(
    Frame,
    cluster=st.just("web"),
    node=st.sampled_from(["node-b", "node-c", "node-a"]),
    incarnation=st.integers(0, 2**64 - 1),
    sequence=st.integers(1, 2**63 - 1),
    sent_wall_ns=st.integers(0, 2**63 - 1),
    sent_mono_ns=st.integers(0, 2**63 - 1),
    instances=st.lists(reports, max_size=6, unique_by=lambda r: r.name).map(tuple),
    quorate=st.none() | st.booleans(),
    highest_token=st.integers(0, 2**63 - 1),
)
# Fuzzing draws its valid starting points from a fixed varied set: building frames with regex-drawn names
# costs more than the decoding under test, and the mutations are where the variety matters.
BASE_FRAMES = [
    frame(
        node=("node-b", "node-c", "node-a")[n % 3],
        seq=1 + n * 7919,
        incarnation=(n * 0x9E3779B97F4A7C15) % 2**64,
        instances=tuple(
            InstanceReport(f"VI_{m}", list(VrrpState)[(n + m) % 5], bool(m % 2), (n * 37 + m) % 256, None, m * n)
            for m in range(n % 5)
        ),
        quorate=(None, True, False)[n % 3],
    )
    for n in range(24)
]
base_frames = st.sampled_from(BASE_FRAMES)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
# Shallow on purpose: the body is at most two levels deep (entries in a list), deeper nesting is covered by the
# raw "[[[[" case; a recursive strategy here costs most of the test's time.
entries = st.lists(scalars, max_size=7)
json_values = (
    scalars
    | st.lists(scalars | entries, max_size=4)
    | st.dictionaries(st.sampled_from(list("cniswmqhex")), scalars | entries, max_size=10)
)
FUZZ = settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_refuse(dec: FrameDecoder, data: bytes, medium: str = "udp:eth0") -> Frame | None:
    try:
        return dec.decode(data, medium)
    except FrameRefusedError as exc:
        assert isinstance(exc.reason, Refusal)
        return None


@FUZZ
@given(data=st.binary(max_size=1600) | st.binary(max_size=1500).map(lambda b: MAGIC + bytes([VERSION]) + b))
def test_fuzz_raw_bytes(data: bytes) -> None:
    assert decode_or_refuse(decoder(), data) is None


@FUZZ
@given(
    f=base_frames,
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]), st.integers(0, 2000), st.binary()),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_mutated_signed_frames(f: Frame, edits: list[tuple[str, int, bytes]]) -> None:
    wire = bytearray(encode_frame(f, KEY))
    original = bytes(wire)
    for op, where, payload in edits:
        at = where % (len(wire) + 1)
        if op == "flip" and at < len(wire):
            wire[at] ^= 1 << (at % 8)
        elif op == "set" and at < len(wire):
            wire[at : at + len(payload)] = payload[: len(wire) - at]
        elif op == "insert":
            wire[at:at] = payload
        elif op == "delete":
            del wire[at : at + 1 + len(payload)]
        elif op == "truncate":
            del wire[at:]
    got = decode_or_refuse(decoder(peers=None), bytes(wire))
    # Only an unchanged frame can pass: any real change breaks the MAC.
    assert got is None or (bytes(wire) == original and got == f)


@FUZZ
@given(
    f=base_frames,
    field_name=st.sampled_from(["c", "n", "i", "s", "w", "m", "q", "h", "e", "x"]),
    value=json_values,
    whole=st.sampled_from([None, None, None]) | json_values,
)
def test_fuzz_signed_malformed_bodies(f: Frame, field_name: str, value: Any, whole: Any) -> None:
    if whole is not None:
        body_bytes = json.dumps(whole).encode()
    else:
        body = body_of(f)
        body[field_name] = value
        body_bytes = json.dumps(body).encode()
    got = decode_or_refuse(decoder(peers=None), sign(body_bytes))
    if got is not None:
        # Accepted means valid: it survives its own round trip.
        assert parse_frame(encode_frame(got, KEY), KEY) == got


@settings(max_examples=300, deadline=None)
@given(f=frames)
def test_fuzz_round_trip(f: Frame) -> None:
    assert parse_frame(encode_frame(f, KEY), KEY) == dataclasses.replace(f)
