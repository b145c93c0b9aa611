"""Encoded secrets and secrets split across fields (policy/redaction.py, issue 12).

Every family, base64-, URL-safe-base64-, URL- (once and twice), hex-encoded and base64 of URL-encoded,
is redacted; ordinary encoded text, digests, UUIDs and paths are left alone. A secret split between two
neighbouring report fields is caught at the seam; the documented limits are shown as such.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from urllib.parse import quote

import pytest

from incident_monitor.domain.io import IncidentReport
from incident_monitor.policy.redaction import REDACTED, redact_adjacent, redact_text
from incident_monitor.service.intake import report_incident
from support.monitors import AGENT, MonitorFactory
from support.secret_samples import GITHUB_PAT, SAMPLES, SecretSample

ENCODERS: dict[str, Callable[[str], str]] = {
    "base64": lambda t: base64.b64encode(t.encode()).decode(),
    "base64url": lambda t: base64.urlsafe_b64encode(t.encode()).decode().rstrip("="),
    "url": lambda t: quote(t, safe=""),
    "url twice": lambda t: quote(quote(t, safe=""), safe=""),
    "hex": lambda t: t.encode().hex(),
    "base64 of url": lambda t: base64.b64encode(quote(t, safe="").encode()).decode(),
}


@pytest.mark.parametrize("encoding", ENCODERS)
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.family)
def test_an_encoded_secret_is_redacted(sample: SecretSample, encoding: str) -> None:
    encoded = ENCODERS[encoding](sample.text)
    line = f"upstream said: {encoded} (retrying)"

    clean = redact_text(line)

    assert encoded not in clean and sample.secret not in clean
    assert clean.startswith("upstream said: ") and clean.endswith(" (retrying)")
    assert redact_text(clean) == clean


@pytest.mark.parametrize(
    "text",
    [
        "digest sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "run 123e4567-e89b-12d3-a456-426614174000 failed",
        "see /usr/local/lib/python3.12/site-packages/incident_monitor/service/intake.py",
        "payload " + base64.b64encode(b"the nightly export timed out after 30 minutes").decode(),
        "query ?q=" + quote("disk full on /var/lib/postgres", safe=""),
        "trace " + b"connection reset by peer while reading".hex(),
        "NetworkConnectionManager_handleIncomingRequests_timeout",
    ],
)
def test_ordinary_encoded_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_a_very_long_encoded_run_is_not_decoded_a_documented_limit() -> None:
    hidden = base64.b64encode(("x" * 20_000 + GITHUB_PAT).encode()).decode()
    assert GITHUB_PAT not in redact_text(hidden)  # not in clear anyway
    assert redact_text(hidden) == hidden  # but over 16,384 characters the run is not decoded


# --- split across fields --------------------------------------------------------------------------


def test_a_secret_split_between_neighbours_is_redacted_in_both() -> None:
    half = len(GITHUB_PAT) // 2
    left, right = f"login failed with {GITHUB_PAT[:half]}", f"{GITHUB_PAT[half:]} on retry"

    assert redact_adjacent([left, right]) == [f"login failed with {REDACTED}", f"{REDACTED} on retry"]


def test_fields_that_hold_no_secret_together_are_left_alone() -> None:
    values = ["Smoke test failed", "ci.smoke.failed", "run 42 timed out after 30 s"]
    assert redact_adjacent(values) == values


def test_a_secret_split_three_ways_is_not_recognised_a_documented_limit() -> None:
    third = len(GITHUB_PAT) // 3
    parts = [GITHUB_PAT[:third], GITHUB_PAT[third : 2 * third], GITHUB_PAT[2 * third :]]
    assert redact_adjacent([f"a {parts[0]}", parts[1], f"{parts[2]} b"])[1] == parts[1]


@pytest.mark.parametrize(
    "sample", [s for s in SAMPLES if s.text.startswith("call failed using")], ids=lambda s: s.family
)
def test_intake_redacts_a_secret_split_between_title_and_detail(
    make_monitor: MonitorFactory, sample: SecretSample
) -> None:
    monitor = make_monitor()
    half = len(sample.secret) // 2
    report = IncidentReport(
        title=f"deploy failed using {sample.secret[:half]}",
        detail=f"{sample.secret[half:]} for auth",
        source="ci",
        event="ci.deploy.failed",
    )

    result = report_incident(monitor, AGENT, report)

    assert {"title", "detail"} <= set(result.redacted_fields)
    with monitor.session() as session:
        from incident_monitor.domain.models import Incident

        stored = session.get(Incident, result.incident_id)
        assert stored is not None
        assert sample.secret[:half] not in stored.title
        assert sample.secret[half:] not in stored.detail
