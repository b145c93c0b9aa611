"""Webhook adapter against a real Standard Webhooks receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from incident_monitor import __version__
from incident_monitor.destinations.delivery import MAX_RETRY_AFTER_SECONDS, retry_after_seconds
from incident_monitor.destinations.settings import WebhookConfig
from incident_monitor.destinations.webhook import sanitize_error
from incident_monitor.policy.permit import PermitError
from support.adapter_requests import SECRET_VAR, make_adapter, make_request, new_secret, permit_for, publish
from support.receivers import WebhookReceiver, delivery_id_for


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/incident"


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = new_secret()
    monkeypatch.setenv(SECRET_VAR, value)
    return value


# -- delivery ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_signed_delivery_is_verified_and_published(secret: str, tmp_path: Path) -> None:
    request = make_request()
    with WebhookReceiver(secret) as receiver:
        outcome = await publish(make_adapter(receiver.url, tmp_path), request)

    assert outcome.status == "published"
    assert outcome.attempts == 1
    assert outcome.external_id == delivery_id_for(request.idempotency_key)
    assert outcome.external_url is None
    assert outcome.response_excerpt is not None and '"received": true' in outcome.response_excerpt
    assert receiver.rejected == []
    [delivery] = receiver.deliveries
    assert delivery.webhook_id == request.idempotency_key
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["user-agent"] == f"incident-monitor-mcp/{__version__}"
    assert delivery.payload["type"] == "incident.published"
    assert datetime.fromisoformat(delivery.payload["timestamp"]).utcoffset() == timedelta(0)
    expected = request.model_dump(mode="json", exclude={"attempt"})
    assert delivery.payload["data"] == expected


@pytest.mark.anyio
async def test_body_is_compact_with_sorted_keys(secret: str, tmp_path: Path) -> None:
    with WebhookReceiver(secret) as receiver:
        await publish(make_adapter(receiver.url, tmp_path))
    delivery = receiver.deliveries[0]
    assert delivery.body == json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.anyio
async def test_republish_sends_same_webhook_id(secret: str, tmp_path: Path) -> None:
    request = make_request()
    with WebhookReceiver(secret) as receiver:
        adapter = make_adapter(receiver.url, tmp_path)
        first = await publish(adapter, request)
        second = await publish(adapter, request)
    assert first.external_id == second.external_id
    assert len(receiver.deliveries) == 2
    assert receiver.unique_webhook_ids() == {request.idempotency_key}


@pytest.mark.anyio
async def test_wrong_signing_secret_is_rejected_with_hint(secret: str, tmp_path: Path) -> None:
    with WebhookReceiver(new_secret()) as receiver:
        outcome = await publish(make_adapter(receiver.url, tmp_path, max_attempts=3))
    assert outcome.status == "failed"
    assert outcome.attempts == 1
    assert outcome.error is not None
    assert "401" in outcome.error and "signing secret" in outcome.error
    assert SECRET_VAR in outcome.error
    assert receiver.deliveries == [] and len(receiver.rejected) == 1


# -- retries ----------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", [503, 429])
async def test_retries_transient_status_then_succeeds(secret: str, tmp_path: Path, status: int) -> None:
    with WebhookReceiver(secret, fail_first=1, fail_status=status) as receiver:
        outcome = await publish(make_adapter(receiver.url, tmp_path))
    assert outcome.status == "published"
    assert outcome.attempts == 2
    assert receiver.request_count == 2
    assert len(receiver.deliveries) == 1


@pytest.mark.anyio
async def test_gives_up_after_max_attempts(secret: str, tmp_path: Path) -> None:
    with WebhookReceiver(secret, fail_first=10, fail_status=502) as receiver:
        outcome = await publish(make_adapter(receiver.url, tmp_path, max_attempts=3))
    assert outcome.status == "failed"
    assert outcome.attempts == 3
    assert receiver.request_count == 3
    assert outcome.error is not None and "502 after 3 attempts" in outcome.error
    assert outcome.response_excerpt is not None and "simulated failure" in outcome.response_excerpt


@pytest.mark.anyio
async def test_honours_retry_after_seconds(secret: str, tmp_path: Path) -> None:
    # backoff alone would retry at once; only Retry-After makes it wait.
    with WebhookReceiver(secret, fail_first=1, fail_status=503, retry_after="1") as receiver:
        started = time.monotonic()
        outcome = await publish(make_adapter(receiver.url, tmp_path, backoff_seconds=0))
        elapsed = time.monotonic() - started
    assert outcome.status == "published"
    assert outcome.attempts == 2
    assert elapsed >= 0.9


@pytest.mark.anyio
async def test_retry_after_zero_overrides_backoff(secret: str, tmp_path: Path) -> None:
    # A long backoff would blow the test's time; Retry-After: 0 says "retry now".
    with WebhookReceiver(secret, fail_first=1, fail_status=429, retry_after="0") as receiver:
        started = time.monotonic()
        outcome = await publish(make_adapter(receiver.url, tmp_path, backoff_seconds=20))
        elapsed = time.monotonic() - started
    assert outcome.status == "published"
    assert outcome.attempts == 2
    assert elapsed < 15


def test_retry_after_parsing() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("garbage") is None
    assert retry_after_seconds("nan") is None
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("3600") == MAX_RETRY_AFTER_SECONDS
    in_ten = format_datetime(now + timedelta(seconds=10), usegmt=True)
    assert retry_after_seconds(in_ten, now=now) == pytest.approx(10.0)
    assert retry_after_seconds(format_datetime(now - timedelta(hours=1), usegmt=True), now=now) == 0.0
    assert retry_after_seconds(format_datetime(now + timedelta(days=1), usegmt=True), now=now) == 30.0


@pytest.mark.anyio
async def test_client_error_fails_at_once(secret: str, tmp_path: Path) -> None:
    with WebhookReceiver(secret, fail_first=5, fail_status=400) as receiver:
        outcome = await publish(make_adapter(receiver.url, tmp_path, max_attempts=5))
    assert outcome.status == "failed"
    assert outcome.attempts == 1
    assert receiver.request_count == 1
    assert outcome.error is not None and "400 after 1 attempt" in outcome.error


@pytest.mark.anyio
async def test_redirect_is_a_failure(secret: str, tmp_path: Path) -> None:
    with WebhookReceiver(secret, fail_first=5, fail_status=307) as receiver:
        outcome = await publish(make_adapter(receiver.url, tmp_path, max_attempts=5))
    assert outcome.status == "failed"
    assert outcome.attempts == 1
    assert outcome.error is not None and "redirect" in outcome.error and "final URL" in outcome.error
    assert receiver.request_count == 1


@pytest.mark.anyio
async def test_timeout_then_success_keeps_webhook_id(secret: str, tmp_path: Path) -> None:
    request = make_request()
    # The first delivery is received but answered too late; the retry must carry the same webhook-id.
    with WebhookReceiver(secret, delay_first_seconds=10) as receiver:
        adapter = make_adapter(receiver.url, tmp_path, timeout_seconds=1, max_attempts=3)
        outcome = await publish(adapter, request)
    assert outcome.status == "published"
    assert outcome.attempts == 2
    assert len(receiver.deliveries) == 2
    assert receiver.unique_webhook_ids() == {request.idempotency_key}


@pytest.mark.anyio
async def test_connection_refused_is_retried_then_fails(secret: str, tmp_path: Path) -> None:
    outcome = await publish(make_adapter(closed_port_url(), tmp_path, max_attempts=2))
    assert outcome.status == "failed"
    assert outcome.attempts == 2
    assert outcome.error is not None
    assert "could not reach the webhook" in outcome.error and "after 2 attempts" in outcome.error


@pytest.mark.anyio
async def test_oversized_payload_fails_without_request(secret: str, tmp_path: Path) -> None:
    with WebhookReceiver(secret) as receiver:
        adapter = make_adapter(receiver.url, tmp_path, max_payload_bytes=1024)
        outcome = await publish(adapter, make_request(body="x" * 2000))
    assert outcome.status == "failed"
    assert outcome.attempts == 0
    assert outcome.error is not None and "max_payload_bytes = 1024" in outcome.error
    assert receiver.request_count == 0


# -- permits ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_publish_without_permit_is_refused(secret: str, tmp_path: Path) -> None:
    with WebhookReceiver(secret) as receiver, pytest.raises(PermitError):
        await make_adapter(receiver.url, tmp_path).publish(make_request(), None)  # type: ignore[arg-type]
    assert receiver.request_count == 0


@pytest.mark.anyio
async def test_publish_with_permit_for_another_receipt_is_refused(secret: str, tmp_path: Path) -> None:
    request = make_request()
    with WebhookReceiver(secret) as receiver, pytest.raises(PermitError):
        await make_adapter(receiver.url, tmp_path).publish(request, permit_for(request, receipt_id="rcpt_other"))
    assert receiver.request_count == 0


# -- readiness --------------------------------------------------------------------------------------


def test_ready_when_configured(secret: str, tmp_path: Path) -> None:
    adapter = make_adapter("https://hooks.example.com/incident", tmp_path, allow_insecure_http=False)
    assert adapter.readiness().ready
    assert make_adapter("http://127.0.0.1:9/x", tmp_path, allow_insecure_http=True).readiness().ready


def test_not_ready_when_disabled(secret: str, tmp_path: Path) -> None:
    readiness = make_adapter("https://hooks.example.com/x", tmp_path, enabled=False).readiness()
    assert not readiness.ready
    assert any("disabled" in reason for reason in readiness.reasons)


def test_not_ready_without_secret_ref(tmp_path: Path) -> None:
    readiness = make_adapter("https://hooks.example.com/x", tmp_path, secret=None).readiness()
    assert not readiness.ready
    assert any("no signing secret" in reason for reason in readiness.reasons)


@pytest.mark.parametrize("value", [None, ""])
def test_not_ready_when_variable_missing_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(SECRET_VAR, raising=False)
    else:
        monkeypatch.setenv(SECRET_VAR, value)
    readiness = make_adapter("https://hooks.example.com/x", tmp_path).readiness()
    assert not readiness.ready
    assert readiness.reasons == [
        f"environment variable {SECRET_VAR} is not set or empty: put the webhook signing secret in it"
    ]


@pytest.mark.parametrize(
    "value",
    [
        "not-a-webhook-secret-CANARY",
        "whsec_!!!CANARY!!!",
        "whsec_" + base64.b64encode(b"short-CANARY").decode(),  # decodes, but too short to be a key
    ],
)
def test_not_ready_with_invalid_secret_never_shows_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv(SECRET_VAR, value)
    readiness = make_adapter("https://hooks.example.com/x", tmp_path).readiness()
    assert not readiness.ready
    assert any(SECRET_VAR in reason and "whsec_" in reason for reason in readiness.reasons)
    assert "CANARY" not in readiness.model_dump_json()
    assert value not in readiness.model_dump_json()


def test_plain_http_needs_opt_in(secret: str, tmp_path: Path) -> None:
    readiness = make_adapter("http://hooks.example.com/x", tmp_path, allow_insecure_http=False).readiness()
    assert not readiness.ready
    assert readiness.reasons == [
        "url is not https://: use https:// or set allow_insecure_http = true for local testing"
    ]


@pytest.mark.anyio
async def test_not_ready_publish_sends_nothing(secret: str, tmp_path: Path) -> None:
    with WebhookReceiver(secret) as receiver:
        outcome = await publish(make_adapter(receiver.url, tmp_path, allow_insecure_http=False))
    assert outcome.status == "failed"
    assert outcome.attempts == 0
    assert outcome.error is not None and "allow_insecure_http" in outcome.error
    assert receiver.request_count == 0


# -- secrets never leak -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_secret_value_never_appears(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    canary = new_secret()
    monkeypatch.setenv(SECRET_VAR, canary)
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with WebhookReceiver(canary) as good, WebhookReceiver(new_secret()) as bad:
        for url, config in [
            (good.url, {}),
            (bad.url, {}),
            (closed_port_url(), {"max_attempts": 1}),
            (good.url, {"allow_insecure_http": False}),
            (good.url, {"max_payload_bytes": 1024}),
        ]:
            adapter = make_adapter(url, tmp_path, **config)
            outcome = await publish(adapter, make_request(body="x" * 1500))
            seen += [outcome.model_dump_json(), repr(outcome), repr(adapter), repr(adapter.config)]
            seen += [adapter.readiness().model_dump_json(), adapter.config.model_dump_json()]
    seen += [record.getMessage() for record in caplog.records]
    key = canary.removeprefix("whsec_")
    assert all(key not in text for text in seen)
    assert good.deliveries and bad.rejected  # the runs really succeeded and failed


def test_sanitize_error_strips_secrets_signatures_and_queries() -> None:
    secret = new_secret()
    exc = RuntimeError(
        f"boom with {secret} and webhook-signature: v1,AbC+/dEf= at https://h.example/x?token=t0k3n\nheaders: x"
    )
    text = sanitize_error(exc)
    assert text.startswith("RuntimeError: boom")
    assert secret.removeprefix("whsec_") not in text
    assert "AbC+/dEf=" not in text and "t0k3n" not in text and "headers" not in text
    assert "https://h.example/x" in text


# -- config validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/x", "http(s) URL with a host"),
        ("hooks.example.com/x", "http(s) URL with a host"),
        ("https://", "http(s) URL with a host"),
        ("https://hooks.example.com:99999/x", "not a valid URL"),
        ("https://user:pass@hooks.example.com/x", "must not contain credentials"),
    ],
)
def test_bad_url_is_rejected_naming_the_field(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookConfig(id="hook", url=url)
    [error] = caught.value.errors()
    assert error["loc"] == ("url",)
    assert message in error["msg"] and "url" in error["msg"]


def test_literal_secret_in_config_is_rejected_without_echo() -> None:
    literal = new_secret()
    with pytest.raises(ValidationError) as caught:
        WebhookConfig(id="hook", url="https://hooks.example.com/x", secret=literal)
    [error] = caught.value.errors()
    assert error["loc"] == ("secret",)
    assert literal not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("timeout_seconds", 0), ("max_attempts", 11), ("max_payload_bytes", 10), ("backoff_seconds", 31)],
)
def test_out_of_range_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookConfig(id="hook", url="https://hooks.example.com/x", **{field: value})
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


# -- url from the environment (env:NAME) -----------------------------------------------------------------

URL_VAR = "IM_TEST_WEBHOOK_URL"


@pytest.mark.anyio
async def test_an_env_url_is_read_when_publishing(secret: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with WebhookReceiver(secret) as receiver:
        monkeypatch.setenv(URL_VAR, receiver.url)
        adapter = make_adapter(f"env:{URL_VAR}", tmp_path)
        assert adapter.readiness().ready
        outcome = await publish(adapter)

    assert outcome.status == "published"
    assert len(receiver.deliveries) == 1


@pytest.mark.anyio
async def test_an_unset_env_url_is_not_ready_and_names_only_the_variable(
    secret: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(URL_VAR, raising=False)
    adapter = make_adapter(f"env:{URL_VAR}", tmp_path)

    readiness = adapter.readiness()
    outcome = await publish(adapter)

    assert not readiness.ready
    assert readiness.reasons == [
        f"url: environment variable {URL_VAR} is not set or empty: put the receiver's URL in it"
    ]
    assert outcome.status == "failed" and outcome.attempts == 0
    assert outcome.error is not None and URL_VAR in outcome.error


def test_an_env_url_holding_no_url_is_not_ready(secret: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_VAR, "ftp://user:pw@example.com/x")
    readiness = make_adapter(f"env:{URL_VAR}", tmp_path).readiness()

    assert not readiness.ready
    assert readiness.reasons[0].startswith(f"url: environment variable {URL_VAR}: url must be an http(s) URL")
    assert "pw@" not in " ".join(readiness.reasons)


def test_a_malformed_env_reference_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        make_adapter("env:not a name", tmp_path)
    assert "env:VARIABLE_NAME" in str(caught.value)
