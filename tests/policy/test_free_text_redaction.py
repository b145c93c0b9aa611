"""Canaries in every free-text field besides the report's own, plain and encoded, reach no surface.

For each family in ``secret_samples.SAMPLES`` one monitor on a real SQLite file plays, over MCP (agent
and operator) and the HTTP intake endpoint:

- a report whose fields carry the sample base64-, URL-safe-base64-, URL- and hex-encoded, routed to
  the signed webhook; the agent's ``request_approval`` reason and the operator's ``decide_approval``
  note carry it plain and encoded; the receiver's reply (kept as the receipt's ``response_excerpt``)
  carries it too; the incident is resolved with a ``resolution_note`` carrying it;
- a second report whose approval the operator denies with a note carrying it (which also opens a
  self-monitoring incident quoting the note);
- every id argument (incident, draft, approval ids, a list filter) and an unknown tool's name set to
  the sample, and an intake request whose ``project_id``, ``source_id`` and a ``selfmon:`` fingerprint
  carry it: each refused without repeating it.

Then, as in test_redaction_surfaces, the table asks for every family and surface whether the raw secret
(or one of its encodings) is there: tool output (results and errors), HTTP answers, receipts, audit,
deliveries (webhook and telemetry), logs, every table, every file under the data dir (database, WAL,
telemetry), and CLI output (approvals and audit lists, the assessment report).
"""

from __future__ import annotations

import base64
import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx2
import pytest

from incident_monitor import cli
from incident_monitor.config import MonitorConfig
from incident_monitor.policy.principal import local_operator
from incident_monitor.service import intake_keys
from incident_monitor.service.monitor import Monitor
from support.http_helpers import http_server
from support.mcp_helpers import mcp_client
from support.monitors import AGENT, OPERATOR, WEBHOOK_SECRET_VARIABLE, flow_config, new_webhook_secret
from support.receivers import WebhookReceiver
from support.secret_samples import SAMPLES, SecretSample
from support.surface_helpers import all_logs, deliveries, files, recorded_ok, recorded_refusal, tables

SURFACES = ("tool output", "http", "receipts", "audit", "deliveries", "logs", "database", "files", "cli")
INTAKE = "/incident-monitor/intake/report"


def marker(index: int) -> str:
    return f"can{index:02d}"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def encodings(text: str) -> dict[str, str]:
    return {"base64": b64(text), "base64url": b64url(text), "url": quote(text, safe=""), "hex": text.encode().hex()}


def forbidden(sample: SecretSample) -> dict[str, str]:
    """What must appear nowhere: the secret and the encodings of the lines that carried it."""
    return {"plain": sample.secret, **encodings(sample.text)}


class EchoingReceiver(WebhookReceiver):
    """The examples' receiver, answering with whatever ``reply`` holds (a downstream echoing input)."""

    reply = ""

    def _handle(self, number: int, request_path: str, body: bytes, headers: dict[str, str]) -> Any:
        answer = super()._handle(number, request_path, body, headers)
        answer.body["note"] = self.reply
        return answer


@dataclass
class Flow:
    surfaces: dict[str, str] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)


def _carrying(tag: str, text: str) -> str:
    encoded = encodings(text)
    return f"{tag} {text} b64 {encoded['base64']} url {encoded['url']}"


def _report(tag: str, text: str, *, webhook: bool) -> dict[str, Any]:
    encoded = encodings(text)
    return {
        "title": f"{tag} deploy failed {encoded['base64'][:200]}"[:300],
        "detail": f"{tag} log url {encoded['url']}\nhex {encoded['hex']}\nb64url {encoded['base64url']}",
        "source": "ci",
        "event": "ci.deploy.failed",
        "level": "error",  # high: the route needs an approval
        "fingerprint": f"{tag}-{'webhook' if webhook else 'telemetry'}",
        "route_tags": ["runtime-failure"] if webhook else [],
        "evidence_refs": [encoded["base64url"]],
        "context": {"marker": tag, "b64": encoded["base64"], "nested": {"hex": encoded["hex"]}},
    }


async def _play(
    monitor: Monitor, receiver: EchoingReceiver, base_url: str, key: str, flow: Flow, seen: list[str]
) -> None:
    async with mcp_client(monitor, AGENT) as agent, mcp_client(monitor, OPERATOR) as operator:
        for index, sample in enumerate(SAMPLES):
            tag, text = marker(index), sample.text
            # Published after an approval; the receiver's reply carries the canary.
            first = await recorded_ok(agent, seen, "report_incident", **_report(tag, text, webhook=True))
            requested = await recorded_ok(
                agent, seen, "request_approval", draft_id=first["draft_id"], reason=_carrying(f"{tag}-reason", text)
            )
            await recorded_ok(
                operator,
                seen,
                "decide_approval",
                approval_id=requested["approval"]["approval_id"],
                decision="approve",
                note=_carrying(f"{tag}-note", text),
            )
            receiver.reply = _carrying(f"{tag}-reply", text)
            await recorded_ok(agent, seen, "publish_draft", draft_id=first["draft_id"])
            await recorded_ok(agent, seen, "get_draft", draft_id=first["draft_id"])
            await recorded_ok(
                operator,
                seen,
                "resolve_incident",
                incident_id=first["incident_id"],
                resolution_note=_carrying(f"{tag}-resolution", text),
            )
            await recorded_ok(agent, seen, "get_incident", incident_id=first["incident_id"])
            # Denied: the note also reaches the self-monitoring incident about the denial.
            second = await recorded_ok(agent, seen, "report_incident", **_report(tag, text, webhook=False))
            requested = await recorded_ok(
                agent, seen, "request_approval", draft_id=second["draft_id"], reason=f"{tag}-ask"
            )
            await recorded_ok(
                operator,
                seen,
                "decide_approval",
                approval_id=requested["approval"]["approval_id"],
                decision="deny",
                note=_carrying(f"{tag}-denial", text),
            )
            await recorded_ok(agent, seen, "get_draft", draft_id=second["draft_id"])
            # Ids and names carrying the sample: refused, never repeated.
            for value in (sample.secret, b64(sample.secret)):
                flow.refusals += [
                    await recorded_refusal(agent, seen, "get_incident", incident_id=value[:100]),
                    await recorded_refusal(agent, seen, "get_draft", draft_id=value[:100]),
                    await recorded_refusal(agent, seen, "triage_draft", draft_id=value[:100]),
                    await recorded_refusal(agent, seen, "publish_draft", draft_id=value[:100]),
                    await recorded_refusal(agent, seen, "list_receipts", draft_id=value[:100]),
                    await recorded_refusal(
                        operator, seen, "decide_approval", approval_id=value[:100], decision="deny", note="x"
                    ),
                    await recorded_refusal(agent, seen, value[:100]),
                ]
            for payload in (
                {"project_id": sample.secret[:64], "source_id": "ci", "report": {"title": "t", "event": "e.failed"}},
                {"project_id": "shop", "source_id": sample.secret[:200], "report": {"title": "t", "event": "e.failed"}},
                {
                    "project_id": "shop",
                    "source_id": "ci",
                    "report": {"title": "t", "event": "e.failed", "fingerprint": f"selfmon:{sample.secret}"[:200]},
                },
            ):
                answer = await anyio.to_thread.run_sync(
                    lambda p=payload: httpx2.post(
                        f"{base_url}{INTAKE}", json=p, headers={"x-incident-monitor-intake-key": key}, timeout=30
                    )
                )
                assert 400 <= answer.status_code < 500, answer.text
                flow.refusals.append(f"{answer.status_code} {answer.text}")
        await recorded_ok(operator, seen, "build_assessment_report")


def _cli(data_dir: Path) -> str:
    config = data_dir.parent / "cli-config.toml"
    config.write_text("")  # the operator views need no destinations
    out = io.StringIO()
    for argv in (
        ["approvals", "list", "--status", "all", "--limit", "200"],
        ["approvals", "list", "--status", "all", "--limit", "200", "--json"],
        ["incidents", "list", "--status", "all", "--limit", "200", "--json"],
        ["drafts", "list", "--limit", "200", "--json"],
        ["receipts", "list", "--limit", "200", "--json"],
        ["audit", "list", "--limit", "10000", "--json"],
        ["report"],
    ):
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = cli.main([*argv, "--config", str(config), "--data-dir", str(data_dir)])
        assert code in (0, 1), (argv, out.getvalue()[-500:])  # 1: the report has open findings
    return out.getvalue()


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    data_dir = tmp_path_factory.mktemp("free-text") / "data"
    secret = new_webhook_secret()
    with pytest.MonkeyPatch.context() as env, EchoingReceiver(secret) as receiver:
        env.setenv(WEBHOOK_SECRET_VARIABLE, secret)
        config = flow_config(
            receiver.url,
            projects=[{"id": "shop", "sources": ["ci"]}],
            http={"rate_limits": {"intake_key_burst": 10_000, "intake_key_per_minute": 1_000_000}},
        )
        monitor = Monitor.open(config=MonitorConfig.model_validate(config), data_dir=data_dir)
        key = intake_keys.create_intake_key(monitor, local_operator(), project_id="shop", source_id=None).secret
        seen: list[str] = []
        result = Flow()
        try:
            with all_logs() as records, http_server(monitor) as base_url:
                anyio.run(_play, monitor, receiver, base_url, key, result, seen)
        finally:
            monitor.close()
        result.surfaces = {
            "tool output": "\n".join(seen),
            "http": "\n".join(result.refusals),
            "receipts": tables(data_dir, "receipts"),
            "audit": tables(data_dir, "audit_events"),
            "deliveries": deliveries(receiver, data_dir),
            "logs": "\n".join(records.lines),
            "database": tables(data_dir),
            "files": files(data_dir),
            "cli": _cli(data_dir),
        }
    return result


# Each surface must visibly carry what the flow put there, so "not there" is not true merely because
# nothing arrived: (surface, the marker suffix it must hold for every family).
CARRIED = [
    ("cli", "-reason"),  # tools return approval summaries without the reason (issue 10)
    ("tool output", "-note"),
    ("tool output", "-resolution"),
    ("database", "-denial"),
    ("database", "-reason"),
    ("receipts", "-reply"),
    ("deliveries", ""),
    ("files", "-resolution"),
    ("cli", "-note"),
]


@pytest.mark.parametrize(("surface", "suffix"), CARRIED)
def test_every_surface_carries_every_family(flow: Flow, surface: str, suffix: str) -> None:
    missing = [s.family for i, s in enumerate(SAMPLES) if f"{marker(i)}{suffix}" not in flow.surfaces[surface]]
    assert missing == [], f"{surface} lacks {suffix or 'the reports'}: its check below would prove nothing"


def test_every_refusal_was_made(flow: Flow) -> None:
    assert len(flow.refusals) == len(SAMPLES) * (2 * 7 + 3)


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.family)
def test_no_canary_reaches_any_surface(flow: Flow, sample: SecretSample, surface: str) -> None:
    found = [kind for kind, value in forbidden(sample).items() if value in flow.surfaces[surface]]
    assert found == [], f"{sample.family} found in {surface} as {found}"
