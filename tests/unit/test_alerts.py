"""Alerts, the pure parts: body shapes, signatures, secret files, URL redaction, backoff, the queue bound."""

from __future__ import annotations

import inspect
import json
import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from arbiter.alerts import (
    DEFAULT_SEVERITY,
    KINDS,
    RESOLVES,
    SCHEMA,
    AlertSink,
    Backoff,
    Event,
    SecretFileError,
    alertmanager_body,
    alertname,
    json_body,
    load_secret,
    redact_url,
    retry_after,
    rfc3339,
    sign,
    slack_body,
    verify_signature,
)
from arbiter.config import AlertsConfig, Webhook

SECRET = b"s3cret-for-webhooks"
NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z


def event(kind: str = "quorum_lost", **kw: Any) -> Event:
    fields: dict[str, Any] = {
        "id": "3f1c2b9e-1d2a-4c5b-8e7f-0a1b2c3d4e5f",
        "kind": kind,
        "severity": DEFAULT_SEVERITY[kind],
        "cluster": "web",
        "node": "node-a",
        "instance": "VI_1",
        "peer": None,
        "summary": "0 of 2 reference addresses reachable",
        "details": {"reachable": 0, "needed": 1},
        "time": NOW,
        "sequence": 7,
    }
    fields.update(kw)
    return Event(**fields)


def secret_file(tmp_path: Path, content: bytes = SECRET + b"\n", mode: int = 0o600) -> Path:
    path = tmp_path / "webhook.secret"
    path.write_bytes(content)
    path.chmod(mode)
    return path


# --- kinds and severities -------------------------------------------------------------------------------------


def test_every_kind_has_a_default_severity_as_the_issue_lists() -> None:
    assert set(DEFAULT_SEVERITY) == set(KINDS)
    assert {k for k, v in DEFAULT_SEVERITY.items() if v == "critical"} == {"split_brain", "fence_failed"}
    assert {k for k, v in DEFAULT_SEVERITY.items() if v == "info"} == {
        "quorum_regained",
        "medium_up",
        "gate_opened",
        "agent_started",
        "agent_stopping",
        "maintenance_resumed",
    }
    assert set(RESOLVES.items()) == {
        ("quorum_regained", "quorum_lost"),
        ("medium_up", "medium_down"),
        ("gate_opened", "gate_closed"),
        ("maintenance_resumed", "maintenance_paused"),
    }


def test_alertname_is_camel_case() -> None:
    assert alertname("config_reload_failed") == "KeepalivedArbiterConfigReloadFailed"
    assert alertname("split_brain") == "KeepalivedArbiterSplitBrain"


# --- body shapes ----------------------------------------------------------------------------------------------


def test_json_body_schema() -> None:
    body = json.loads(json_body(event(peer="node-b")))
    assert body == {
        "schema": SCHEMA,
        "id": "3f1c2b9e-1d2a-4c5b-8e7f-0a1b2c3d4e5f",
        "kind": "quorum_lost",
        "severity": "warning",
        "cluster": "web",
        "node": "node-a",
        "instance": "VI_1",
        "peer": "node-b",
        "summary": "0 of 2 reference addresses reachable",
        "details": {"reachable": 0, "needed": 1},
        "time": "2024-05-01T12:00:00.000Z",
        "sequence": 7,
    }


def test_json_body_keeps_unusual_details_as_text() -> None:
    body = json.loads(json_body(event(details={"file": Path("/etc/x"), "n": 1})))
    assert body["details"] == {"file": "/etc/x", "n": 1}


def test_rfc3339_is_utc_with_z() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rfc3339(1_714_564_800.25))
    assert rfc3339(1_714_564_800.25) == "2024-05-01T12:00:00.250Z"


def test_slack_body_is_one_line_with_emoji_per_severity() -> None:
    text = json.loads(slack_body(event("split_brain", severity="critical", peer="node-b")))["text"]
    assert text == (
        ":rotating_light: [web/node-a] split_brain (VI_1, peer node-b): 0 of 2 reference addresses reachable"
    )
    assert json.loads(slack_body(event(instance=None)))["text"].startswith(":warning: [web/node-a] quorum_lost: ")
    assert json.loads(slack_body(event("agent_started", instance=None)))["text"].startswith(":information_source: ")
    assert set(json.loads(slack_body(event()))) == {"text"}


def test_alertmanager_firing_alert_has_no_ends_at() -> None:
    [alert] = json.loads(alertmanager_body(event(peer="node-b")))
    assert alert == {
        "labels": {
            "alertname": "KeepalivedArbiterQuorumLost",
            "cluster": "web",
            "node": "node-a",
            "instance": "VI_1",
            "peer": "node-b",
            "severity": "warning",
        },
        "annotations": {
            "summary": "0 of 2 reference addresses reachable",
            "description": "quorum_lost on node-a (cluster web): 0 of 2 reference addresses reachable. "
            "reachable=0; needed=1",
        },
        "startsAt": "2024-05-01T12:00:00.000Z",
    }


@pytest.mark.parametrize(("resolving", "original"), sorted(RESOLVES.items()))
def test_alertmanager_resolving_event_ends_the_original(resolving: str, original: str) -> None:
    details = {"medium": "udp:eth1"}
    [fired] = json.loads(alertmanager_body(event(original, details=details)))
    [resolved] = json.loads(
        alertmanager_body(event(resolving, time=NOW + 60, details=details), severity="warning", starts_at=NOW)
    )
    assert resolved["labels"] == fired["labels"]
    assert resolved["labels"]["alertname"] == alertname(original)
    assert resolved["labels"]["medium"] == "udp:eth1"
    assert resolved["startsAt"] == fired["startsAt"]
    assert resolved["endsAt"] == "2024-05-01T12:01:00.000Z"
    assert "endsAt" not in fired


def test_alertmanager_omits_absent_labels() -> None:
    [alert] = json.loads(alertmanager_body(event("agent_started", instance=None, details={})))
    assert alert["labels"] == {
        "alertname": "KeepalivedArbiterAgentStarted",
        "cluster": "web",
        "node": "node-a",
        "severity": "info",
    }


# --- signatures -----------------------------------------------------------------------------------------------


def test_signature_verifies() -> None:
    body = json_body(event())
    stamp = str(int(NOW))
    header = sign(SECRET, stamp, body)
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", header)
    assert verify_signature(SECRET, stamp, body, header, now=NOW)
    assert verify_signature(SECRET, stamp, body, header, now=NOW + 299)


def test_signature_refuses_tampered_body_wrong_secret_and_stale_or_forged_timestamps() -> None:
    body = json_body(event())
    stamp = str(int(NOW))
    header = sign(SECRET, stamp, body)
    assert not verify_signature(SECRET, stamp, body.replace(b"node-a", b"node-b"), header, now=NOW)
    assert not verify_signature(b"another secret", stamp, body, header, now=NOW)
    assert not verify_signature(SECRET, stamp, body, header, now=NOW + 301)  # a replay, too late
    assert not verify_signature(SECRET, stamp, body, header, now=NOW - 301)  # from the future
    assert not verify_signature(SECRET, stamp, body, header, now=NOW + 60, tolerance=30)
    # The timestamp is signed: moving it forward to pass the age check breaks the signature.
    assert not verify_signature(SECRET, str(int(NOW) + 600), body, header, now=NOW + 600)
    assert not verify_signature(SECRET, "1.5e9", body, header, now=NOW)
    assert not verify_signature(SECRET, stamp, body, header.removeprefix("sha256="), now=NOW)
    assert not verify_signature(SECRET, stamp, body, "sha256=" + "0" * 64, now=NOW)
    assert not verify_signature(SECRET, stamp, body, "sha256=ü", now=NOW)


# --- secret files ---------------------------------------------------------------------------------------------


def test_secret_file_is_read_and_stripped(tmp_path: Path) -> None:
    assert load_secret(secret_file(tmp_path)) == SECRET


@pytest.mark.parametrize(
    ("content", "mode", "expected"),
    [
        (SECRET, 0o640, "readable by group or others (mode 640); run: chmod 600"),
        (SECRET, 0o604, "readable by group or others (mode 604)"),
        (b"", 0o600, "empty"),
        (b" \n\t\n", 0o600, "empty"),
    ],
)
def test_secret_file_refusals_name_the_file(tmp_path: Path, content: bytes, mode: int, expected: str) -> None:
    path = secret_file(tmp_path, content, mode)
    with pytest.raises(SecretFileError) as caught:
        load_secret(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)
    assert SECRET.decode() not in str(caught.value)


def test_secret_file_missing_directory_or_symlink(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match=r"missing\.secret'.*cannot open"):
        load_secret(tmp_path / "missing.secret")
    with pytest.raises(SecretFileError, match="not a regular file"):
        load_secret(tmp_path)
    link = tmp_path / "link.secret"
    os.symlink(secret_file(tmp_path), link)
    with pytest.raises(SecretFileError, match=r"link\.secret'.*cannot open"):
        load_secret(link)


def test_from_config_refuses_a_bad_secret_file_by_name(tmp_path: Path) -> None:
    path = secret_file(tmp_path, mode=0o644)
    alerts = AlertsConfig(webhooks=(Webhook(url="https://h.example/a", secret_file=path),))
    with pytest.raises(SecretFileError, match=re.escape(str(path))):
        AlertSink.from_config(alerts, cluster="web", node="node-a")


# --- URL redaction --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fmt", "shown"),
    [
        ("https://user:pw@alerts.example.com/hook?token=abc#x", "json", "https://alerts.example.com/hook?…"),
        ("http://127.0.0.1:8080/api/v2/alerts", "alertmanager", "http://127.0.0.1:8080/api/v2/alerts"),
        ("http://[::1]:9093/api/v2/alerts", "alertmanager", "http://[::1]:9093/api/v2/alerts"),
        ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "slack", "https://hooks.slack.com/services/…"),
        ("https://token@example.com", "json", "https://example.com"),
    ],
)
def test_redact_url(url: str, fmt: str, shown: str) -> None:
    assert redact_url(url, fmt) == shown


def test_status_shows_no_secret(tmp_path: Path) -> None:
    hooks = (
        Webhook(url="https://user:pw-XYZ@a.example/hook?token=TOK-XYZ", secret_file=secret_file(tmp_path)),
        Webhook(url="https://hooks.slack.com/services/T0/B0/SLACK-XYZ", format="slack"),
    )
    sink = AlertSink.from_config(AlertsConfig(webhooks=hooks), cluster="web", node="node-a")
    sink.emit("agent_started", summary="started")
    shown = json.dumps(sink.status())
    for secret in ("pw-XYZ", "TOK-XYZ", "SLACK-XYZ", SECRET.decode(), "user"):
        assert secret not in shown


# --- delivery policy ------------------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 60.0)
    rng = random.Random(1)
    for failures, base in [(1, 0.5), (2, 1.0), (3, 2.0), (8, 60.0), (1000, 60.0)]:
        for _ in range(50):
            assert base / 2 <= backoff.compute(failures, rng) <= base


def test_retry_after_seconds_and_dates() -> None:
    assert retry_after(None, NOW) is None
    assert retry_after("7", NOW) == 7.0
    assert retry_after(" 0 ", NOW) == 0.0
    assert retry_after("Wed, 01 May 2024 12:00:30 GMT", NOW) == 30.0
    assert retry_after("Wed, 01 May 2024 11:00:00 GMT", NOW) == 0.0
    assert retry_after("soon", NOW) is None
    assert retry_after("-5", NOW) is None


# --- emit and the queue (no IO: nothing runs the workers here) ------------------------------------------------


def sink(queue_size: int = 1000, **hook: Any) -> AlertSink:
    alerts = AlertsConfig(webhooks=(Webhook(url="http://127.0.0.1:9/x", **hook),), queue_size=queue_size)
    return AlertSink.from_config(alerts, cluster="web", node="node-a")


def test_emit_is_synchronous_and_checks_kind_and_severity() -> None:
    assert not inspect.iscoroutinefunction(AlertSink.emit)
    s = sink()
    assert s.emit("agent_started", summary="started") is None  # type: ignore[func-returns-value]
    with pytest.raises(ValueError, match="unknown alert kind 'split_brian'; known: split_brain, "):
        s.emit("split_brian", summary="typo")
    with pytest.raises(ValueError, match="unknown severity 'fatal'"):
        s.emit("split_brain", summary="x", severity="fatal")
    assert s.status()[0]["queued"] == 1


def test_emit_survives_details_json_cannot_hold() -> None:
    s = sink()
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    s.emit("config_drift", summary="drift", details=cycle)
    assert s.status()[0]["queued"] == 1


def test_full_queue_drops_the_oldest_and_counts() -> None:
    s = sink(queue_size=10)
    for i in range(2000):
        s.emit("medium_down", summary=f"down {i}")
    [status] = s.status()
    assert status["queued"] == 10
    assert status["dropped"] == 1990
    assert status["delivered"] == 0


def test_status_before_any_delivery() -> None:
    [status] = sink().status()
    assert status == {
        "url": "http://127.0.0.1:9/x",
        "format": "json",
        "queued": 0,
        "delivered": 0,
        "failed_attempts": 0,
        "dropped": 0,
        "expired": 0,
        "rejected": 0,
        "last_error": None,
        "last_success": None,
        "consecutive_failures": 0,
        "dead": False,
    }


# --- config ---------------------------------------------------------------------------------------------------


def test_config_defaults_and_rules() -> None:
    hook = Webhook(url="https://a.example/hook")
    assert (hook.timeout_ms, hook.retry_min_ms, hook.retry_max_ms) == (5000, 500, 60000)
    assert (AlertsConfig().queue_size, AlertsConfig().max_age_ms) == (1000, 3_600_000)
    with pytest.raises(ValidationError, match="retry_min_ms: must not exceed retry_max_ms 100"):
        Webhook(url="https://a.example/hook", retry_min_ms=200, retry_max_ms=100)
    with pytest.raises(ValidationError):
        AlertsConfig(queue_size=0)
    with pytest.raises(ValidationError):
        Webhook.model_validate({"url": "https://a.example/hook", "timeout_ms": "5000"})
