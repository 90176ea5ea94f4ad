"""Webhook alerts: what the agent tells people, in which shapes, and how it gets there without ever waiting.

The agent calls `AlertSink.emit(kind, summary=...)` — synchronous, no IO: the alert is rendered once per format
and appended to every webhook's own bounded queue. `AlertSink.run()` runs one delivery worker per webhook, so a
dead or hanging endpoint delays nobody but itself; order is kept per webhook. When a queue is full the OLDEST
alert is dropped (an alert dropped while its attempt is in flight may still arrive); an alert older than
`alerts.max_age_ms` is dropped too; both are counted in `status()`, which the metrics code reads.

Delivery: one POST per alert, redirects not followed, `timeout_ms` for the whole attempt. 2xx = delivered.
3xx and 4xx other than 408/429 = refused for good (counted as `rejected`, not retried: the same request would
be refused again; still a failed attempt, since a 401 for a wrong secret loses every alert). 5xx, 408, 429,
connection errors and timeouts = retried after exponential backoff with jitter (`retry_min_ms` doubling up to
`retry_max_ms`) or after the answer's Retry-After, capped at `retry_max_ms`.
An endpoint is `dead` after `DEAD_AFTER_FAILURES` failed attempts in a row, or while its oldest queued alert
has waited `DEAD_AFTER_WAIT` seconds with no success in that time; the first success makes it alive again.
Each transition is logged once.

Body shapes (Content-Type: application/json, User-Agent: keepalived-arbiter/VERSION):

- `format = "json"` (schema `keepalived-arbiter.alert/1`; fields are only ever added within that schema):

      {"schema": "keepalived-arbiter.alert/1", "id": "<uuid4, the same for every webhook>", "kind": "quorum_lost",
       "severity": "info" | "warning" | "critical", "cluster": "...", "node": "...", "instance": "..." | null,
       "peer": "..." | null, "summary": "...", "details": {...}, "time": "2024-05-01T12:00:00.123Z",
       "sequence": 7}

  `sequence` counts alerts emitted by this sink (one per agent process) from 1; `time` is RFC 3339 UTC.

- `format = "slack"` (Slack incoming webhook): `{"text": "<emoji> [cluster/node] kind (instance, peer): summary"}`,
  emoji by severity: critical :rotating_light:, warning :warning:, info :information_source:.

- `format = "alertmanager"`: a list of one alert as POSTed to Alertmanager's `/api/v2/alerts`:

      [{"labels": {"alertname": "KeepalivedArbiterQuorumLost", "cluster": ..., "node": ..., "instance"?: ...,
                   "peer"?: ..., "medium"?: ..., "severity": ...},
        "annotations": {"summary": ..., "description": ...}, "startsAt": RFC 3339, "endsAt"?: RFC 3339}]

  Four kinds resolve another: `quorum_regained` resolves `quorum_lost`, `medium_up` resolves `medium_down`,
  `gate_opened` resolves `gate_closed`, `maintenance_resumed` resolves `maintenance_paused`. The resolving
  event is sent under the ORIGINAL alertname with the same labels (including the severity the original was
  sent with, and `medium` taken from `details["medium"]`) and `endsAt` = now, so Alertmanager marks that alert
  resolved. Every other alert is sent without `endsAt`.
  Alertmanager resolves an alert by itself when it is not sent again within its `resolve_timeout` (5 min by
  default), so the four resolvable kinds still firing are sent again every `REFIRE_INTERVAL` (60 s) with their
  first `startsAt` until their pair arrives; one-off events (split_brain, peer_fenced, ...) are sent once and
  resolve after that timeout.

Signature (every format, only when the webhook has a `secret_file`): headers
`X-Arbiter-Timestamp: <unix seconds>` and `X-Arbiter-Signature: sha256=<hex HMAC-SHA256 of timestamp + "." + body>`,
computed at each attempt, so a receiver can refuse replays by age; `verify_signature` is the receiver's check.

Secrets (the signing key, URL userinfo, query strings, a Slack URL's path) never appear in logs or `status()`.
`emit` must be called from the event loop's thread (it wakes the workers with asyncio events).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import hmac
import itertools
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from arbiter.config import AlertsConfig, Webhook
from arbiter.secretfile import read_secret

log = logging.getLogger(__name__)

KINDS = (
    "split_brain",
    "peer_fenced",
    "fence_failed",
    "fence_ineffective",
    "fence_confirmed_off",
    "lease_lost",
    "quorum_lost",
    "quorum_regained",
    "medium_down",
    "medium_up",
    "gate_closed",
    "gate_opened",
    "agent_started",
    "agent_stopping",
    "config_drift",
    "config_reload_failed",
    "maintenance_paused",
    "maintenance_resumed",
)
SEVERITIES = ("info", "warning", "critical")
DEFAULT_SEVERITY: Mapping[str, str] = {
    "split_brain": "critical",
    "fence_failed": "critical",
    "fence_ineffective": "warning",
    "fence_confirmed_off": "warning",
    "peer_fenced": "warning",
    "lease_lost": "warning",
    "quorum_lost": "warning",
    "medium_down": "warning",
    "gate_closed": "warning",
    "config_drift": "warning",
    "config_reload_failed": "warning",
    "maintenance_paused": "warning",
    "quorum_regained": "info",
    "medium_up": "info",
    "gate_opened": "info",
    "agent_started": "info",
    "agent_stopping": "info",
    "maintenance_resumed": "info",
}
# Resolving kind → the kind it resolves (Alertmanager shape).
RESOLVES: Mapping[str, str] = {
    "quorum_regained": "quorum_lost",
    "medium_up": "medium_down",
    "gate_opened": "gate_closed",
    "maintenance_resumed": "maintenance_paused",
}
SCHEMA = "keepalived-arbiter.alert/1"
SIGNATURE_HEADER = "X-Arbiter-Signature"
TIMESTAMP_HEADER = "X-Arbiter-Timestamp"
DEAD_AFTER_FAILURES = 3
DEAD_AFTER_WAIT = 300.0  # seconds
_SLACK_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def _version() -> str:
    try:
        return metadata.version("keepalived-arbiter")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


USER_AGENT = f"keepalived-arbiter/{_version()}"


# --- secrets and signatures ---------------------------------------------------------------------------------


REFIRE_INTERVAL = 60.0  # well under Alertmanager's default resolve_timeout of 5 min


class SecretFileError(Exception):
    """A webhook secret file cannot be used; the message names the file and what to do."""


def load_secret(path: Path) -> bytes:
    """Read a webhook signing secret; refused when group/world readable, not a regular file or empty."""
    hint = "put the secret the receiver verifies signatures with in it"
    return read_secret(path, "webhook secret file", empty_hint=hint, error=SecretFileError)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Arbiter-Signature` value for a body sent with `X-Arbiter-Timestamp: timestamp`."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, header: str, *, now: float | None = None, tolerance: float = 300
) -> bool:
    """A receiver's check: the signature matches and the timestamp is within `tolerance` seconds of `now`."""
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode("ascii"), header.strip().encode("utf-8"))


# --- the event and its shapes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    severity: str
    cluster: str
    node: str
    instance: str | None
    peer: str | None
    summary: str
    details: Mapping[str, Any]
    time: float  # unix seconds
    sequence: int


def rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(value: Any) -> bytes:
    # default=str: a caller's details may hold paths, enums or addresses; an alert is better than an exception.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def json_body(event: Event) -> bytes:
    return _dumps(
        {
            "schema": SCHEMA,
            "id": event.id,
            "kind": event.kind,
            "severity": event.severity,
            "cluster": event.cluster,
            "node": event.node,
            "instance": event.instance,
            "peer": event.peer,
            "summary": event.summary,
            "details": dict(event.details),
            "time": rfc3339(event.time),
            "sequence": event.sequence,
        }
    )


def slack_body(event: Event) -> bytes:
    about = ", ".join(part for part in (event.instance, event.peer and f"peer {event.peer}") if part)
    where = f" ({about})" if about else ""
    text = f"{_SLACK_EMOJI[event.severity]} [{event.cluster}/{event.node}] {event.kind}{where}: {event.summary}"
    return _dumps({"text": text})


def alertname(kind: str) -> str:
    return "KeepalivedArbiter" + "".join(part.capitalize() for part in kind.split("_"))


def _identity(event: Event) -> tuple[str, str | None, str | None, str | None]:
    """What tells one Alertmanager alert from another of the same original kind (its labels but severity)."""
    original = RESOLVES.get(event.kind, event.kind)
    medium = event.details.get("medium")
    return original, event.instance, event.peer, str(medium) if medium is not None else None


def alertmanager_body(event: Event, *, severity: str | None = None, starts_at: float | None = None) -> bytes:
    """`severity` and `starts_at`: for a resolving event, those the original was sent with (when known)."""
    original, instance, peer, medium = _identity(event)
    labels = {"alertname": alertname(original), "cluster": event.cluster, "node": event.node}
    for key, value in (("instance", instance), ("peer", peer), ("medium", medium)):
        if value is not None:
            labels[key] = value
    labels["severity"] = severity or event.severity
    facts = "; ".join(f"{k}={v}" for k, v in event.details.items())
    description = f"{event.kind} on {event.node} (cluster {event.cluster}): {event.summary}"
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {"summary": event.summary, "description": f"{description}. {facts}" if facts else description},
        "startsAt": rfc3339(event.time if starts_at is None else starts_at),
    }
    if event.kind in RESOLVES:
        alert["endsAt"] = rfc3339(event.time)
    return _dumps([alert])


# --- delivery policy ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: attempt n waits between half and all of start × 2^(n−1), capped."""

    start: float
    cap: float

    def compute(self, failures: int, rng: random.Random) -> float:
        base: float = min(self.cap, self.start * 2.0 ** min(max(failures, 1) - 1, 32))
        return base * rng.uniform(0.5, 1.0)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def redact_url(url: str, fmt: str) -> str:
    """The URL without its secrets: userinfo and query dropped; a Slack webhook's path is its secret too."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    path = parts.path
    if fmt == "slack" and path.strip("/"):
        path = "/" + path.strip("/").split("/")[0] + "/…"
    return f"{parts.scheme}://{host}{f':{port}' if port is not None else ''}{path}{'?…' if parts.query else ''}"


def _url_secrets(url: str, fmt: str) -> list[str]:
    """Substrings of the URL that must not reach a log line or status (longest first, for replacement)."""
    parts = urlsplit(url)
    found = [url, parts.query, parts.password or "", parts.netloc.rpartition("@")[0]]
    if fmt == "slack":
        found.append(parts.path)
    return sorted((s for s in found if len(s) > 1), key=len, reverse=True)


# --- per-endpoint queue and worker --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Queued:
    id: str
    kind: str
    body: bytes
    enqueued: float  # monotonic


@dataclass(frozen=True)
class _Outcome:
    delivered: bool
    retry: bool
    error: str | None = None
    wait: float | None = None  # Retry-After, seconds


class _Endpoint:
    def __init__(self, hook: Webhook, secret: bytes | None, *, queue_size: int, max_age: float) -> None:
        self.url = hook.url
        self.format = hook.format
        self.shown = redact_url(hook.url, hook.format)
        self._secret = secret
        self._secrets_in_url = _url_secrets(hook.url, hook.format)
        self.timeout = hook.timeout_ms / 1000
        self.backoff = Backoff(hook.retry_min_ms / 1000, hook.retry_max_ms / 1000)
        self.queue_size = queue_size
        self.max_age = max_age
        self.queue: deque[_Queued] = deque()
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        self.active = False
        self.rng = random.Random()
        # Counters (plain ints, read by the metrics code through status()).
        self.delivered = 0
        self.failed_attempts = 0
        self.dropped = 0
        self.expired = 0
        self.rejected = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_success: float | None = None  # unix time
        self._last_success_mono: float | None = None
        self._dead = False
        self._dropping = False

    # -- queue (called from emit: no IO, no await) --

    def enqueue(self, item: _Queued) -> None:
        if len(self.queue) >= self.queue_size:
            self.queue.popleft()
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning("alerts: %s: queue full (%d), dropping the oldest alerts", self.shown, self.queue_size)
        self.queue.append(item)
        self.drained.clear()
        self.wake.set()

    def _head(self, now: float) -> _Queued | None:
        """The next alert to send, after dropping those too old to matter."""
        expired = []
        while self.queue and now - self.queue[0].enqueued > self.max_age:
            expired.append(self.queue.popleft().kind)
        if expired:
            self.expired += len(expired)
            # One line for the lot: a backlog of a dead endpoint expires in bursts.
            log.warning(
                "alerts: %s: dropped %d alert(s) undelivered after %.0f s (%s)",
                self.shown,
                len(expired),
                self.max_age,
                ", ".join(sorted(set(expired))),
            )
        if len(self.queue) <= self.queue_size // 2:
            self._dropping = False
        return self.queue[0] if self.queue else None

    def _done(self, item: _Queued) -> None:
        # The head may have been dropped by a full queue while its attempt was in flight.
        if self.queue and self.queue[0] is item:
            self.queue.popleft()

    # -- state --

    def dead_now(self, now: float) -> bool:
        if self.consecutive_failures >= DEAD_AFTER_FAILURES:
            return True
        if not self.queue or now - self.queue[0].enqueued <= DEAD_AFTER_WAIT:
            return False
        return self._last_success_mono is None or now - self._last_success_mono > DEAD_AFTER_WAIT

    def update_dead(self, now: float) -> bool:
        dead = self.dead_now(now)
        if dead != self._dead:
            self._dead = dead
            if dead:
                log.error(
                    "alerts: %s: endpoint dead (%d failed attempts in a row, %d queued; last error: %s)",
                    self.shown,
                    self.consecutive_failures,
                    len(self.queue),
                    self.last_error,
                )
            else:
                log.warning("alerts: %s: endpoint alive again", self.shown)
        return dead

    def scrub(self, text: str) -> str:
        for secret in self._secrets_in_url:
            text = text.replace(secret, "…")
        if self._secret:
            text = text.replace(self._secret.decode("utf-8", "replace"), "…")
        return text

    def status(self, now: float) -> dict[str, Any]:
        return {
            "url": self.shown,
            "format": self.format,
            "queued": len(self.queue),
            "delivered": self.delivered,
            "failed_attempts": self.failed_attempts,
            "dropped": self.dropped,
            "expired": self.expired,
            "rejected": self.rejected,
            "last_error": self.last_error,
            "last_success": self.last_success,
            "consecutive_failures": self.consecutive_failures,
            "dead": self.update_dead(now),
        }

    # -- delivery --

    async def _attempt(self, client: httpx.AsyncClient, item: _Queued) -> _Outcome:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self._secret is not None:
            stamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = sign(self._secret, stamp, item.body)
        try:
            # httpx's timeout bounds each phase (a trickling answer could last forever): this bounds the whole.
            async with asyncio.timeout(self.timeout):
                response = await client.post(self.url, content=item.body, headers=headers, timeout=self.timeout)
        except TimeoutError:
            return _Outcome(False, True, f"no answer within {self.timeout:g} s")
        except httpx.TimeoutException as exc:
            return _Outcome(False, True, f"{type(exc).__name__} after {self.timeout:g} s")
        except Exception as exc:  # any other failure to reach the endpoint is worth another attempt too
            return _Outcome(False, True, self.scrub(f"{type(exc).__name__}: {exc}"))
        code = response.status_code
        if 200 <= code < 300:
            return _Outcome(True, False)
        error = f"HTTP {code} {response.reason_phrase}".rstrip()
        if code >= 500 or code in (408, 429):
            return _Outcome(False, True, error, retry_after(response.headers.get("Retry-After"), time.time()))
        if 300 <= code < 400:
            error += " (redirects are not followed: give the final URL)"
        return _Outcome(False, False, error)

    async def work(self, client: httpx.AsyncClient, *, until_empty: bool = False) -> None:
        """Deliver the queue in order, forever (or until it is empty, for the flush at close)."""
        self.active = True
        try:
            while not client.is_closed:
                item = self._head(time.monotonic())
                if item is None:
                    self.drained.set()
                    if until_empty:
                        return
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                outcome = await self._attempt(client, item)
                now = time.monotonic()
                if outcome.delivered:
                    self._done(item)
                    self.delivered += 1
                    self.consecutive_failures = 0
                    self.last_success = time.time()
                    self._last_success_mono = now
                    self.update_dead(now)
                    continue
                self.failed_attempts += 1
                self.consecutive_failures += 1
                self.last_error = outcome.error
                if not outcome.retry:
                    self._done(item)
                    self.rejected += 1
                    log.warning("alerts: %s: %s alert %s refused: %s", self.shown, item.kind, item.id, outcome.error)
                    self.update_dead(now)
                    continue
                if outcome.wait is not None:
                    # Honoured, but never a hot loop (`Retry-After: 0`) nor longer than the configured cap.
                    delay = min(max(outcome.wait, self.backoff.start), self.backoff.cap)
                else:
                    delay = self.backoff.compute(self.consecutive_failures, self.rng)
                # Once dead, the transition was logged; each further attempt is detail.
                log.log(
                    logging.DEBUG if self.update_dead(now) else logging.INFO,
                    "alerts: %s: %s alert %s not delivered (%s); next attempt in %.1f s",
                    self.shown,
                    item.kind,
                    item.id,
                    outcome.error,
                    delay,
                )
                await asyncio.sleep(delay)
        finally:
            self.active = False

    async def drain(self, client: httpx.AsyncClient) -> None:
        if self.active:
            await self.drained.wait()
        else:
            await self.work(client, until_empty=True)


# --- the sink -----------------------------------------------------------------------------------------------


class AlertSink:
    """Every configured webhook, each with its own queue and worker. See the module docstring."""

    def __init__(
        self,
        webhooks: Sequence[tuple[Webhook, bytes | None]],
        *,
        cluster: str,
        node: str,
        queue_size: int = 1000,
        max_age: float = 3600.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`transport`: httpx's own by default; tests give an httpx.MockTransport that answers in memory."""
        self.cluster = cluster
        self.node = node
        self._endpoints = [_Endpoint(h, s, queue_size=queue_size, max_age=max_age) for h, s in webhooks]
        self._client = httpx.AsyncClient(follow_redirects=False, transport=transport)
        self._sequence = itertools.count(1)
        # Alertmanager: what each still-firing resolvable alert was sent with, so its resolve matches it.
        # (severity, first start, latest event) per still-firing resolvable alert; re-sent every `refire_interval`.
        self._firing: dict[tuple[str, str | None, str | None, str | None], tuple[str, float, Event]] = {}
        self.refire_interval = REFIRE_INTERVAL

    @classmethod
    def from_config(cls, alerts: AlertsConfig, *, cluster: str, node: str) -> AlertSink:
        """Raises SecretFileError naming the file when a webhook's secret file cannot be used."""
        hooks = [(h, load_secret(h.secret_file) if h.secret_file is not None else None) for h in alerts.webhooks]
        return cls(hooks, cluster=cluster, node=node, queue_size=alerts.queue_size, max_age=alerts.max_age_ms / 1000)

    def emit(
        self,
        kind: str,
        *,
        summary: str,
        severity: str | None = None,
        instance: str | None = None,
        peer: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue an alert for every webhook; never waits, never raises (but on an unknown kind or severity)."""
        if kind not in DEFAULT_SEVERITY:
            raise ValueError(f"unknown alert kind {kind!r}; known: {', '.join(KINDS)}")
        if severity is not None and severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}; known: {', '.join(SEVERITIES)}")
        try:
            event = Event(
                id=str(uuid.uuid4()),
                kind=kind,
                severity=severity or DEFAULT_SEVERITY[kind],
                cluster=self.cluster,
                node=self.node,
                instance=instance,
                peer=peer,
                summary=summary,
                details=dict(details or {}),
                time=time.time(),
                sequence=next(self._sequence),
            )
            log.debug("alerts: %s #%d: %s", kind, event.sequence, summary)
            bodies = {fmt: self._render(event, fmt) for fmt in {e.format for e in self._endpoints}}
            now = time.monotonic()
            for endpoint in self._endpoints:
                endpoint.enqueue(_Queued(event.id, kind, bodies[endpoint.format], now))
        except Exception:  # an alert must never take the agent down with it
            log.exception("alerts: could not queue a %s alert", kind)

    def _render(self, event: Event, fmt: str) -> bytes:
        try:
            if fmt == "slack":
                return slack_body(event)
            if fmt == "alertmanager":
                return self._alertmanager(event)
            return json_body(event)
        except ValueError:  # details that JSON cannot hold (a cycle): send the alert without them
            log.warning("alerts: %s alert: details not serialisable, sent without them", event.kind)
            bare = dataclasses.replace(event, details={"details_error": "not serialisable"})
            return self._render(bare, fmt)

    def _alertmanager(self, event: Event) -> bytes:
        key = _identity(event)
        if event.kind in RESOLVES:
            severity, starts_at, _ = self._firing.pop(key, (DEFAULT_SEVERITY[RESOLVES[event.kind]], event.time, event))
            return alertmanager_body(event, severity=severity, starts_at=starts_at)
        if event.kind in RESOLVES.values():
            # A repeat of a still-firing alert keeps its first start (Alertmanager merges them anyway).
            first = self._firing.get(key, (event.severity, event.time, event))[1]
            self._firing[key] = (event.severity, first, event)
            return alertmanager_body(event, starts_at=first)
        return alertmanager_body(event)

    async def run(self) -> None:
        """Deliver until cancelled: one worker per webhook, and the Alertmanager re-send."""
        async with asyncio.TaskGroup() as group:
            for endpoint in self._endpoints:
                group.create_task(endpoint.work(self._client), name=f"alerts:{endpoint.shown}")
            if any(e.format == "alertmanager" for e in self._endpoints):
                group.create_task(self._refire_loop(), name="alerts:refire")

    async def _refire_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refire_interval)
            self.refire()

    def refire(self) -> int:
        """Queue every still-firing resolvable alert (quorum_lost, medium_down, gate_closed, maintenance_paused)
        again for the Alertmanager webhooks, with its first start: Alertmanager resolves an alert on its own when it
        is not sent again within its resolve_timeout, and these are not over until their pair arrives. Returns the
        count."""
        queued = 0
        now = time.monotonic()
        for _severity, first, event in list(self._firing.values()):
            body = alertmanager_body(event, starts_at=first)
            for endpoint in self._endpoints:
                if endpoint.format == "alertmanager":
                    endpoint.enqueue(_Queued(event.id, event.kind, body, now))
                    queued += 1
        return queued

    async def close(self, flush_timeout: float = 2.0) -> None:
        """Best effort: deliver what is queued within `flush_timeout` seconds, then close the HTTP client."""
        try:
            async with asyncio.timeout(flush_timeout):
                await asyncio.gather(*(e.drain(self._client) for e in self._endpoints))
        except TimeoutError:
            left = {e.shown: len(e.queue) for e in self._endpoints if e.queue}
            log.warning("alerts: closing with undelivered alerts: %s", left)
        finally:
            await self._client.aclose()

    def status(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [endpoint.status(now) for endpoint in self._endpoints]
