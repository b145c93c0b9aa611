"""Telemetry adapter writing real JSONL files under tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from incident_monitor.destinations.base import PublishOutcome, PublishRequest
from incident_monitor.destinations.settings import TelemetryConfig
from incident_monitor.destinations.telemetry import TelemetryAdapter
from incident_monitor.policy.permit import PermitError, issue_permit


def make_request(**overrides: Any) -> PublishRequest:
    fields: dict[str, Any] = {
        "receipt_id": "rcpt_1",
        "idempotency_key": "idem_1",
        "draft_id": "draft_1",
        "incident_id": "inc_1",
        "destination_id": "telemetry",
        "route_id": None,
        "title": "Disk almost full",
        "body": "/var at 97%",
        "severity": "medium",
        "labels": ["disk"],
        "fingerprint": "fp_disk",
        "evidence": {"used_pct": 97},
        "evidence_digest": "sha256:" + "1" * 64,
    }
    fields.update(overrides)
    return PublishRequest(**fields)


def make_adapter(tmp_path: Path, **config: Any) -> TelemetryAdapter:
    return TelemetryAdapter(TelemetryConfig(id="telemetry", **config), data_dir=tmp_path)


async def publish(adapter: TelemetryAdapter, request: PublishRequest) -> PublishOutcome:
    permit = issue_permit(
        receipt_id=request.receipt_id,
        destination_id=request.destination_id,
        evidence_digest=request.evidence_digest,
        idempotency_key=request.idempotency_key,
    )
    return await adapter.publish(request, permit)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.anyio
async def test_one_line_per_publish(tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path)
    first = await publish(adapter, make_request(idempotency_key="idem_1"))
    second = await publish(adapter, make_request(idempotency_key="idem_2", receipt_id="rcpt_2"))

    assert (first.status, first.external_id) == ("published", "telemetry.jsonl:1")
    assert (second.status, second.external_id) == ("published", "telemetry.jsonl:2")
    lines = read_lines(tmp_path / "telemetry.jsonl")
    assert [line["idempotency_key"] for line in lines] == ["idem_1", "idem_2"]


@pytest.mark.anyio
async def test_lines_carry_the_event_data(tmp_path: Path) -> None:
    request = make_request()
    await publish(make_adapter(tmp_path), request)
    [line] = read_lines(tmp_path / "telemetry.jsonl")
    published_at = line.pop("published_at")
    assert published_at.endswith("+00:00")
    assert line == request.model_dump(mode="json", exclude={"attempt"})
    assert line["evidence_digest"] == request.evidence_digest


@pytest.mark.anyio
async def test_republish_is_idempotent(tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path)
    await publish(adapter, make_request(idempotency_key="idem_0"))
    first = await publish(adapter, make_request(idempotency_key="idem_1"))
    path = tmp_path / "telemetry.jsonl"
    before = path.read_bytes()

    again = await publish(adapter, make_request(idempotency_key="idem_1", attempt=2))

    assert again.status == "published"
    assert again.external_id == first.external_id == "telemetry.jsonl:2"
    assert path.read_bytes() == before


@pytest.mark.anyio
async def test_concurrent_republish_writes_once(tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path)
    outcomes: list[PublishOutcome] = []

    async def one() -> None:
        outcomes.append(await publish(adapter, make_request()))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(one)

    assert len(read_lines(tmp_path / "telemetry.jsonl")) == 1
    assert {outcome.external_id for outcome in outcomes} == {"telemetry.jsonl:1"}


@pytest.mark.anyio
async def test_creates_parent_dirs_for_relative_path(tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path, path="out/deep/incidents.jsonl")
    assert adapter.readiness().ready
    outcome = await publish(adapter, make_request())
    assert outcome.external_id == "incidents.jsonl:1"
    assert len(read_lines(tmp_path / "out" / "deep" / "incidents.jsonl")) == 1


@pytest.mark.anyio
async def test_absolute_path_is_used_as_is(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "t.jsonl"
    outcome = await publish(make_adapter(tmp_path / "data", path=str(target)), make_request())
    assert outcome.status == "published"
    assert len(read_lines(target)) == 1
    assert not (tmp_path / "data").exists()


@pytest.mark.anyio
async def test_torn_last_line_is_skipped_and_closed_off(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.jsonl"
    path.write_bytes(b'{"idempotency_key": "idem_1", "tit')  # a crash mid-write
    outcome = await publish(make_adapter(tmp_path), make_request())
    assert outcome.external_id == "telemetry.jsonl:2"
    assert json.loads(path.read_text().splitlines()[1])["idempotency_key"] == "idem_1"


def test_not_ready_when_disabled(tmp_path: Path) -> None:
    readiness = make_adapter(tmp_path, enabled=False).readiness()
    assert not readiness.ready
    assert any("disabled" in reason for reason in readiness.reasons)


@pytest.mark.anyio
async def test_not_ready_when_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("not a directory")
    adapter = make_adapter(tmp_path, path="blocker/telemetry.jsonl")
    readiness = adapter.readiness()
    assert not readiness.ready
    assert any("not a directory" in reason for reason in readiness.reasons)
    outcome = await publish(adapter, make_request())
    assert outcome.status == "failed" and outcome.attempts == 0


def test_not_ready_when_path_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    readiness = make_adapter(tmp_path, path="dir.jsonl").readiness()
    assert not readiness.ready
    assert any("is a directory" in reason for reason in readiness.reasons)


@pytest.mark.anyio
async def test_publish_without_valid_permit_writes_nothing(tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path)
    request = make_request()
    other = issue_permit(
        receipt_id="rcpt_other",
        destination_id=request.destination_id,
        evidence_digest=request.evidence_digest,
        idempotency_key=request.idempotency_key,
    )
    with pytest.raises(PermitError):
        await adapter.publish(request, other)
    with pytest.raises(PermitError):
        await adapter.publish(request, None)  # type: ignore[arg-type]
    assert not (tmp_path / "telemetry.jsonl").exists()
