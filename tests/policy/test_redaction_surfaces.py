"""Every secret family, reported through a real MCP client, comes out of no surface in clear.

One monitor on a real SQLite file takes, for each family in ``secret_samples.SAMPLES``, two reports
carrying the sample in every free-text field (title, detail, run and session ids, evidence refs, nested
context): one routed to the signed webhook (the examples' verifying receiver), one to the telemetry
file. Each is read back, triaged and published through the tools. Then the table asks, for every
family and every surface, whether the raw secret is there:

- tool output: every tool result the agent saw (content and structured content);
- receipts: the receipts table;
- audit: the audit_events table;
- deliveries: what the webhook receiver got (body and headers) and the telemetry file;
- logs: every record logged at DEBUG and above, with its arguments and extra fields;
- database: every row of every table;
- files: every byte under the data directory (database, WAL, telemetry), which also holds what SQL no
  longer shows (freed pages).

The flow runs once for the module; the table is one cheap test per family and surface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from incident_monitor.config import MonitorConfig
from incident_monitor.service.monitor import Monitor
from support.mcp_helpers import mcp_client
from support.monitors import AGENT, WEBHOOK_SECRET_VARIABLE, flow_config, new_webhook_secret
from support.receivers import WebhookReceiver
from support.secret_samples import SAMPLES, SecretSample
from support.surface_helpers import all_logs, deliveries, files, recorded_ok, tables

SURFACES = ("tool output", "receipts", "audit", "deliveries", "logs", "database", "files")
# Surfaces that must visibly carry each report (its marker survives redaction), so that "the secret is
# not there" is not true merely because nothing arrived.
# Receipts and logs carry none of a report's text today; they are checked so that stays true.
CARRY_THE_REPORT = ("tool output", "audit", "deliveries", "database", "files")


def marker(index: int) -> str:
    return f"fam{index:02d}"


@dataclass
class Flow:
    surfaces: dict[str, str] = field(default_factory=dict)
    published: list[tuple[str, str]] = field(default_factory=list)  # (marker, destination_id)


def _report(index: int, sample: SecretSample, destination: str) -> dict[str, Any]:
    tag = marker(index)
    return {
        "title": f"{tag} {destination}: {sample.text}",
        "detail": f"{tag} what happened:\n{sample.text}\nend of log",
        "source": "ci",
        "event": "ci.deploy.failed",
        "level": "warning",  # below the severity that needs an approval before publishing
        "fingerprint": f"{tag}-{destination}",
        "route_tags": ["runtime-failure"] if destination == "webhook" else [],
        "run_id": f"{tag} {sample.text}",
        # Prefixed: the SDK parses a str | None argument that is valid JSON (the password sample) as JSON.
        "session_id": f"{tag} {sample.text}",
        "evidence_refs": [sample.text],
        "context": {"marker": tag, "log": sample.text, "nested": {"lines": ["before", sample.text, "after"]}},
    }


async def _play(monitor: Monitor, flow: Flow, seen: list[str]) -> None:
    async with mcp_client(monitor, AGENT) as agent:
        for index, sample in enumerate(SAMPLES):
            for destination in ("webhook", "telemetry"):
                reported = await recorded_ok(agent, seen, "report_incident", **_report(index, sample, destination))
                assert reported["deduplicated"] is False, sample.family
                incident_id, draft_id = reported["incident_id"], reported["draft_id"]
                await recorded_ok(agent, seen, "get_incident", incident_id=incident_id)
                await recorded_ok(agent, seen, "get_draft", draft_id=draft_id)
                await recorded_ok(agent, seen, "triage_draft", draft_id=draft_id)
                published = await recorded_ok(agent, seen, "publish_draft", draft_id=draft_id)
                flow.published.append((marker(index), published["receipt"]["destination_id"]))
                await recorded_ok(agent, seen, "list_receipts", draft_id=draft_id)
                await recorded_ok(agent, seen, "get_draft", draft_id=draft_id)
        await recorded_ok(agent, seen, "list_incidents")
        await recorded_ok(agent, seen, "list_drafts")


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    data_dir = tmp_path_factory.mktemp("surfaces") / "data"
    secret = new_webhook_secret()
    with pytest.MonkeyPatch.context() as env, WebhookReceiver(secret) as receiver:
        env.setenv(WEBHOOK_SECRET_VARIABLE, secret)
        config = flow_config(receiver.url)
        # The webhook route publishes without approval: approvals are not a surface this test is about.
        config["routes"][0]["approval_policy"] = "never"
        monitor = Monitor.open(config=MonitorConfig.model_validate(config), data_dir=data_dir)
        seen: list[str] = []
        result = Flow()
        try:
            with all_logs() as records:
                anyio.run(_play, monitor, result, seen)
        finally:
            monitor.close()
        result.surfaces = {
            "tool output": "\n".join(seen),
            "receipts": tables(data_dir, "receipts"),
            "audit": tables(data_dir, "audit_events"),
            "deliveries": deliveries(receiver, data_dir),
            "logs": "\n".join(records.lines),
            "database": tables(data_dir),
            "files": files(data_dir),
        }
    return result


def test_every_report_was_published_where_it_was_routed(flow: Flow) -> None:
    expected = [(marker(i), d) for i in range(len(SAMPLES)) for d in ("ops-webhook", "telemetry")]
    assert flow.published == expected
    assert flow.surfaces["receipts"].count("'published'") >= len(expected)
    assert flow.surfaces["logs"], "no record was captured: the logs check below would prove nothing"


@pytest.mark.parametrize("surface", CARRY_THE_REPORT)
def test_every_surface_carries_every_report(flow: Flow, surface: str) -> None:
    missing = [s.family for i, s in enumerate(SAMPLES) if marker(i) not in flow.surfaces[surface]]
    assert missing == [], f"{surface} holds nothing of these reports, so its check below would prove nothing"


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.family)
def test_no_secret_reaches_any_surface(flow: Flow, sample: SecretSample, surface: str) -> None:
    assert sample.secret not in flow.surfaces[surface], f"{sample.family} secret in clear in {surface}"
