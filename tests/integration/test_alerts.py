"""Alerts against a real HTTP server on loopback: shapes, signatures, retries, a hanging and a dead endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from arbiter.alerts import SIGNATURE_HEADER, TIMESTAMP_HEADER, AlertSink, verify_signature
from arbiter.config import AlertsConfig, Webhook

pytestmark = pytest.mark.integration

SECRET = b"integration-webhook-secret"
# Short backoff so that retries take milliseconds.
FAST = {"retry_min_ms": 10, "retry_max_ms": 50, "timeout_ms": 2000}


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server in a thread: records every POST and answers from a script (then 200)."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self.script: deque[tuple[int, dict[str, str]]] = deque()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.requests.append(
                        Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                    )
                    status, headers = receiver.script.popleft() if receiver.script else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, *responses: int | tuple[int, dict[str, str]]) -> None:
        for r in responses:
            self.script.append(r if isinstance(r, tuple) else (r, {}))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(port: int = 0) -> Receiver:
        started.append(Receiver(port))
        return started[-1]

    yield start
    for r in started:
        r.stop()


def free_port() -> int:
    """A loopback port that refuses connections: bound, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sink_for(*hooks: Webhook, queue_size: int = 1000, max_age_ms: int = 3_600_000) -> AlertSink:
    alerts = AlertsConfig(webhooks=hooks, queue_size=queue_size, max_age_ms=max_age_ms)
    return AlertSink.from_config(alerts, cluster="web", node="node-a")


def hook(url: str, **kw: Any) -> Webhook:
    return Webhook(url=url, **{**FAST, **kw})


@contextlib.asynccontextmanager
async def running(sink: AlertSink) -> AsyncIterator[AlertSink]:
    task = asyncio.create_task(sink.run())
    try:
        yield sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sink.close(flush_timeout=0.2)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# --- shapes and signature -------------------------------------------------------------------------------------


def test_json_body_signed_and_verifiable(receivers: Callable[..., Receiver], tmp_path: Path) -> None:
    server = receivers()
    secret = tmp_path / "webhook.secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)

    async def scenario() -> None:
        async with running(sink_for(hook(server.url, secret_file=secret))) as sink:
            sink.emit("quorum_lost", summary="0 of 2 references", instance="VI_1", details={"reachable": 0})
            sink.emit("peer_fenced", summary="node-b off", peer="node-b")
            # The server records a request before it answers: wait for the sink to have read both answers too.
            await until(lambda: len(server.requests) == 2 and sink.status()[0]["delivered"] == 2)
            [status] = sink.status()
            assert (status["delivered"], status["failed_attempts"], status["dead"]) == (2, 0, False)
            assert status["last_success"] is not None and abs(status["last_success"] - time.time()) < 60

    asyncio.run(scenario())
    first, second = server.requests
    assert first.path == "/hook"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["user-agent"].startswith("keepalived-arbiter/")
    stamp, signature = first.headers[TIMESTAMP_HEADER.lower()], first.headers[SIGNATURE_HEADER.lower()]
    assert verify_signature(SECRET, stamp, first.body, signature)
    assert not verify_signature(b"wrong", stamp, first.body, signature)
    body = first.json()
    assert set(body) == {
        "schema",
        "id",
        "kind",
        "severity",
        "cluster",
        "node",
        "instance",
        "peer",
        "summary",
        "details",
        "time",
        "sequence",
    }
    assert body["schema"] == "keepalived-arbiter.alert/1"
    assert (body["kind"], body["severity"], body["instance"], body["peer"]) == ("quorum_lost", "warning", "VI_1", None)
    assert body["details"] == {"reachable": 0}
    assert (body["sequence"], second.json()["sequence"]) == (1, 2)  # order kept
    assert second.json()["kind"] == "peer_fenced"


def test_unsigned_slack_shape(receivers: Callable[..., Receiver]) -> None:
    server = receivers()

    async def scenario() -> None:
        async with running(sink_for(hook(server.url, format="slack"))) as sink:
            sink.emit("split_brain", summary="both hold 10.0.0.10", instance="VI_1", peer="node-b")
            await until(lambda: len(server.requests) == 1)

    asyncio.run(scenario())
    [request] = server.requests
    assert request.json() == {
        "text": ":rotating_light: [web/node-a] split_brain (VI_1, peer node-b): both hold 10.0.0.10"
    }
    assert SIGNATURE_HEADER.lower() not in request.headers
    assert TIMESTAMP_HEADER.lower() not in request.headers


def test_alertmanager_resolving_pairs(receivers: Callable[..., Receiver]) -> None:
    server = receivers()

    async def scenario() -> None:
        async with running(sink_for(hook(server.url + "/api/v2/alerts", format="alertmanager"))) as sink:
            sink.emit("quorum_lost", summary="lost", instance="VI_1", severity="critical")
            sink.emit("medium_down", summary="udp down", details={"medium": "udp:eth1"})
            sink.emit("medium_down", summary="serial down", details={"medium": "serial:ttyS0"})
            await asyncio.sleep(0.01)  # a later time for the resolves
            sink.emit("medium_up", summary="udp up", details={"medium": "udp:eth1"})
            sink.emit("quorum_regained", summary="back", instance="VI_1")
            sink.emit("gate_opened", summary="open", instance="VI_1")  # never closed in this run
            await until(lambda: len(server.requests) == 6)

    asyncio.run(scenario())
    [quorum_lost], [udp_down], [serial_down], [udp_up], [regained], [opened] = (r.json() for r in server.requests)
    assert all(r.path == "/hook/api/v2/alerts" for r in server.requests)
    assert quorum_lost["labels"] == {
        "alertname": "KeepalivedArbiterQuorumLost",
        "cluster": "web",
        "node": "node-a",
        "instance": "VI_1",
        "severity": "critical",
    }
    assert set(quorum_lost["annotations"]) == {"summary", "description"}
    assert "endsAt" not in quorum_lost and "endsAt" not in udp_down
    # The resolve carries the original's labels (even its overridden severity) and start, and ends now.
    assert regained["labels"] == quorum_lost["labels"]
    assert regained["startsAt"] == quorum_lost["startsAt"] < regained["endsAt"]
    assert udp_up["labels"] == udp_down["labels"] != serial_down["labels"]
    assert udp_up["labels"]["alertname"] == "KeepalivedArbiterMediumDown"
    assert udp_up["startsAt"] == udp_down["startsAt"] < udp_up["endsAt"]
    assert opened["labels"]["alertname"] == "KeepalivedArbiterGateClosed"
    assert opened["labels"]["severity"] == "warning"
    assert opened["startsAt"] == opened["endsAt"]


def test_alertmanager_firing_alerts_are_sent_again_until_resolved(receivers: Callable[..., Receiver]) -> None:
    """Alertmanager resolves an alert nobody re-sends within resolve_timeout: a still-lost quorum is re-sent
    with its first start; after its resolve it is not sent again. A one-off event is never re-sent."""
    server = receivers()

    def named(alertname: str) -> list[dict[str, Any]]:
        return [r.json()[0] for r in server.requests if r.json()[0]["labels"]["alertname"] == alertname]

    async def scenario() -> None:
        async with running(sink_for(hook(server.url + "/api/v2/alerts", format="alertmanager"))) as sink:
            sink.refire_interval = 0.1
            sink.emit("quorum_lost", summary="lost")
            sink.emit("split_brain", summary="both hold VI_1", instance="VI_1")
            await until(lambda: len(named("KeepalivedArbiterQuorumLost")) >= 3)
            sink.emit("quorum_regained", summary="back")
            await until(lambda: any("endsAt" in a for a in named("KeepalivedArbiterQuorumLost")))
            resolved_at = len(server.requests)
            await asyncio.sleep(0.35)  # three more re-send intervals
            assert len(server.requests) == resolved_at

    asyncio.run(scenario())
    lost = named("KeepalivedArbiterQuorumLost")
    assert len({a["startsAt"] for a in lost}) == 1  # the same alert each time, from its first start
    assert "endsAt" in lost[-1] and all("endsAt" not in a for a in lost[:-1])
    assert len(named("KeepalivedArbiterSplitBrain")) == 1


# --- retries --------------------------------------------------------------------------------------------------


def test_server_errors_are_retried_until_delivered(receivers: Callable[..., Receiver]) -> None:
    server = receivers()
    server.answer(500, 500)

    async def scenario() -> None:
        async with running(sink_for(hook(server.url))) as sink:
            sink.emit("lease_lost", summary="lease expired")
            await until(lambda: sink.status()[0]["delivered"] == 1)
            [status] = sink.status()
            assert (status["failed_attempts"], status["consecutive_failures"], status["queued"]) == (2, 0, 0)
            assert status["last_error"] == "HTTP 500 Internal Server Error"
            assert status["dead"] is False

    asyncio.run(scenario())
    assert len(server.requests) == 3
    assert len({r.json()["id"] for r in server.requests}) == 1  # the same alert three times


def test_client_error_is_not_retried_and_the_queue_moves_on(receivers: Callable[..., Receiver]) -> None:
    server = receivers()
    server.answer(400)

    async def scenario() -> None:
        async with running(sink_for(hook(server.url))) as sink:
            sink.emit("config_drift", summary="refused by the receiver")
            sink.emit("config_drift", summary="accepted")
            await until(lambda: sink.status()[0]["delivered"] == 1)
            await asyncio.sleep(0.2)  # time for a retry that must not happen
            [status] = sink.status()
            assert (status["rejected"], status["failed_attempts"], status["queued"]) == (1, 1, 0)
            assert status["last_error"] == "HTTP 400 Bad Request"

    asyncio.run(scenario())
    assert [r.json()["summary"] for r in server.requests] == ["refused by the receiver", "accepted"]


def test_redirect_is_not_followed(receivers: Callable[..., Receiver]) -> None:
    server = receivers()
    server.answer((302, {"Location": server.url + "/elsewhere"}))

    async def scenario() -> None:
        async with running(sink_for(hook(server.url))) as sink:
            sink.emit("agent_started", summary="up")
            await until(lambda: sink.status()[0]["rejected"] == 1)
            await asyncio.sleep(0.2)
            assert "redirects are not followed" in str(sink.status()[0]["last_error"])

    asyncio.run(scenario())
    assert [r.path for r in server.requests] == ["/hook"]


def test_retry_after_is_honoured_and_capped(receivers: Callable[..., Receiver]) -> None:
    server = receivers()
    server.answer((503, {"Retry-After": "1"}), (429, {"Retry-After": "3600"}))

    async def scenario() -> None:
        # retry_max_ms caps the second Retry-After (an hour) to 1.5 s.
        async with running(sink_for(hook(server.url, retry_max_ms=1500))) as sink:
            sink.emit("gate_closed", summary="closed", instance="VI_1")
            await until(lambda: sink.status()[0]["delivered"] == 1, timeout=10)

    asyncio.run(scenario())
    first, second, third = (r.at for r in server.requests)
    assert second - first >= 0.95  # waited as told, not the 10 ms backoff
    assert third - second >= 1.45


# --- a hanging and a dead endpoint ----------------------------------------------------------------------------


def test_hanging_endpoint_delays_neither_emit_nor_another_endpoint(receivers: Callable[..., Receiver]) -> None:
    server = receivers()
    with socket.socket() as hang:
        # Listening but never accepting: the kernel completes the handshake, nobody ever answers.
        hang.bind(("127.0.0.1", 0))
        hang.listen(16)
        hanging_url = f"http://127.0.0.1:{hang.getsockname()[1]}/hook"

        async def scenario() -> None:
            sink = sink_for(hook(hanging_url, timeout_ms=30_000), hook(server.url))
            async with running(sink):
                await asyncio.sleep(0.05)
                sink.emit("fence_failed", summary="first")
                await asyncio.sleep(0.05)  # the hanging endpoint's worker is now inside its attempt
                # A plain call (emit is not a coroutine): it returns while the other worker is stuck in IO.
                sink.emit("fence_failed", summary="second")
                await until(lambda: len(server.requests) == 2 and sink.status()[1]["delivered"] == 2)
                hanging, working = sink.status()
                assert working["delivered"] == 2
                # The first attempt to the hanging endpoint has not even failed yet.
                assert (hanging["delivered"], hanging["failed_attempts"], hanging["queued"]) == (0, 0, 2)

        asyncio.run(scenario())
    assert [r.json()["summary"] for r in server.requests] == ["first", "second"]


def test_dead_endpoint_is_reported_bounded_and_comes_back(receivers: Callable[..., Receiver]) -> None:
    port = free_port()

    async def scenario() -> None:
        sink = sink_for(hook(f"http://127.0.0.1:{port}/hook"), queue_size=10)
        for i in range(2000):
            sink.emit("medium_down", summary=f"down {i}")
        [status] = sink.status()
        assert (status["queued"], status["dropped"]) == (10, 1990)
        async with running(sink):
            await until(lambda: sink.status()[0]["dead"])
            [status] = sink.status()
            assert status["consecutive_failures"] >= 3
            assert status["queued"] == 10
            assert "ConnectError" in str(status["last_error"])
            server = receivers(port)  # the endpoint comes back on the same port
            await until(lambda: sink.status()[0]["queued"] == 0)
            [status] = sink.status()
            assert (status["dead"], status["delivered"], status["consecutive_failures"]) == (False, 10, 0)
            # The ten newest survived, in order.
            assert [r.json()["summary"] for r in server.requests] == [f"down {i}" for i in range(1990, 2000)]

    asyncio.run(scenario())


def test_old_alerts_expire(receivers: Callable[..., Receiver]) -> None:
    port = free_port()

    async def scenario() -> None:
        async with running(sink_for(hook(f"http://127.0.0.1:{port}/hook"), max_age_ms=200)) as sink:
            sink.emit("lease_lost", summary="too old by the time anyone listens")
            await until(lambda: sink.status()[0]["expired"] == 1)
            assert sink.status()[0]["queued"] == 0

    asyncio.run(scenario())


def test_status_and_errors_keep_url_secrets(receivers: Callable[..., Receiver]) -> None:
    port = free_port()

    async def scenario() -> None:
        url = f"http://admin:pw-XYZ@127.0.0.1:{port}/hook?token=TOK-XYZ"
        async with running(sink_for(hook(url))) as sink:
            sink.emit("agent_started", summary="up")
            await until(lambda: sink.status()[0]["failed_attempts"] >= 1)
            shown = json.dumps(sink.status(), ensure_ascii=False)
            assert f"http://127.0.0.1:{port}/hook?…" in shown
            assert "pw-XYZ" not in shown and "TOK-XYZ" not in shown and "admin" not in shown

    asyncio.run(scenario())


def test_userinfo_is_sent_as_basic_auth(receivers: Callable[..., Receiver]) -> None:
    server = receivers()

    async def scenario() -> None:
        async with running(sink_for(hook(f"http://alice:pw@127.0.0.1:{server.port}/hook"))) as sink:
            sink.emit("agent_started", summary="up")
            await until(lambda: len(server.requests) == 1)

    asyncio.run(scenario())
    assert server.requests[0].headers["authorization"] == "Basic YWxpY2U6cHc="


# --- close ----------------------------------------------------------------------------------------------------


def test_close_flushes_what_is_queued(receivers: Callable[..., Receiver]) -> None:
    server = receivers()
    server.answer(500)

    async def scenario() -> None:
        sink = sink_for(hook(server.url))  # never run: close alone delivers
        sink.emit("agent_stopping", summary="SIGTERM")
        await sink.close(flush_timeout=5)
        assert sink.status()[0]["delivered"] == 1

    asyncio.run(scenario())
    assert [r.json()["kind"] for r in server.requests] == ["agent_stopping", "agent_stopping"]


def test_close_gives_up_on_a_dead_endpoint_within_the_timeout() -> None:
    async def scenario() -> float:
        sink = sink_for(hook(f"http://127.0.0.1:{free_port()}/hook"))
        sink.emit("agent_stopping", summary="SIGTERM")
        started = time.monotonic()
        await sink.close(flush_timeout=0.3)
        assert sink.status()[0]["queued"] == 1
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 3  # generous: the point is that it returns, not how fast
