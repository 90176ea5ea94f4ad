"""Heartbeats between the nodes: signed, versioned frames over UDP on every interface and over serial lines.

- `frame`: the frame, its wire format, the key file, and the decoder that refuses forged/replayed/stale frames.
- `transport`: the `HeartbeatTransport` protocol; `udp` and `serial` implement it.
- `media`: per (peer, medium) up/down with deadtime, events, the newest frame per peer.
- `service`: `HeartbeatService`, the send/receive/watch loops the agent runs.

`python -m arbiter.evidence.heartbeat` runs one service standalone (the lab's benchmark uses it).
"""

from arbiter.evidence.heartbeat.frame import (
    Frame,
    FrameDecoder,
    FrameRefusedError,
    InstanceReport,
    KeyFileError,
    NodeTimings,
    Refusal,
    encode_frame,
    load_key,
    parse_frame,
)
from arbiter.evidence.heartbeat.media import MediaTracker, MediumEvent, Received
from arbiter.evidence.heartbeat.serial import SerialTransport
from arbiter.evidence.heartbeat.service import HeartbeatService, LinkEvent, Snapshot
from arbiter.evidence.heartbeat.transport import HeartbeatTransport, Link, LinkKeeper, MediumCounters
from arbiter.evidence.heartbeat.udp import UdpTransport

__all__ = [
    "Frame",
    "FrameDecoder",
    "FrameRefusedError",
    "HeartbeatService",
    "HeartbeatTransport",
    "InstanceReport",
    "KeyFileError",
    "Link",
    "LinkEvent",
    "LinkKeeper",
    "MediaTracker",
    "MediumCounters",
    "MediumEvent",
    "NodeTimings",
    "Received",
    "Refusal",
    "SerialTransport",
    "Snapshot",
    "UdpTransport",
    "encode_frame",
    "load_key",
    "parse_frame",
]
