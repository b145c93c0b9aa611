"""Evidence lifecycle (issue 12, 6): export as JSON lines, the offline check of an export, retention with
signed audit archives, a checkpoint copy at a destination, and the CLI commands."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, func, select

from incident_monitor import cli
from incident_monitor.domain.io import IncidentReport
from incident_monitor.domain.models import AuditEvent, Incident
from incident_monitor.errors import InvalidInput, PermissionDenied
from incident_monitor.service import audit_queries, incidents, intake, queries
from incident_monitor.service.audit_checkpoints import checkpoint_file_path, read_checkpoints, write_checkpoint
from incident_monitor.service.audit_keys import public_key_hex
from incident_monitor.service.evidence_export import export_evidence, verify_export_file
from incident_monitor.service.monitor import Monitor
from incident_monitor.service.retention import apply_retention
from support.monitors import AGENT, OPERATOR, FakeClock, MonitorFactory, flow_config


def quiet(**overrides: Any) -> dict[str, Any]:
    return flow_config(self_monitoring={"enabled": False}, **overrides)


def report(title: str) -> IncidentReport:
    return IncidentReport(title=title, source="ci", event="ci.smoke.failed", level="error")


def populated(make_monitor: MonitorFactory, **config: Any) -> Monitor:
    monitor = make_monitor(quiet(**config))
    for title in ("Checkout failed", "Login failed"):
        intake.report_incident(monitor, AGENT, report(title))
    return monitor


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def public_key(monitor: Monitor) -> str:
    return public_key_hex(monitor.audit_keys.current.public_key)


# --- export and the offline check ---------------------------------------------------------------------


def test_export_writes_every_kind_and_verifies_offline(make_monitor: MonitorFactory, tmp_path: Path) -> None:
    monitor = populated(make_monitor)
    output = tmp_path / "evidence.jsonl"

    summary = export_evidence(monitor, OPERATOR, output)

    records = lines(output)
    assert records[0]["kind"] == "export" and records[0]["data"]["format"] == "incident-monitor-evidence/1"
    kinds = {r["kind"] for r in records}
    assert {"incident", "draft", "occurrence", "audit_event", "checkpoint"} <= kinds
    assert summary.counts["incident"] == 2
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    # The audit key never leaves: only ids, MACs and public keys.
    assert monitor.audit_keys.current.secret.hex() not in output.read_text()

    pinned = verify_export_file(output, public_keys=[public_key(monitor)])
    assert pinned.audit.ok, pinned.audit.problem
    assert pinned.trusted_keys == "given" and not pinned.macs_checked
    assert pinned.audit.head_seq == summary.head_seq
    with_key = verify_export_file(output, public_keys=[public_key(monitor)], keyring=monitor.audit_keys)
    assert with_key.audit.ok and with_key.macs_checked


def test_export_refuses_to_overwrite_and_is_governed(make_monitor: MonitorFactory, tmp_path: Path) -> None:
    monitor = populated(make_monitor)
    existing = tmp_path / "taken.jsonl"
    existing.write_text("keep me")
    with pytest.raises(InvalidInput, match="exists already"):
        export_evidence(monitor, OPERATOR, existing)
    assert existing.read_text() == "keep me"
    with pytest.raises(PermissionDenied):
        export_evidence(monitor, AGENT, tmp_path / "agent.jsonl")
    assert not (tmp_path / "agent.jsonl").exists()


def edit_line(path: Path, kind: str, index: int, change: dict[str, Any]) -> None:
    records = lines(path)
    matching = [i for i, r in enumerate(records) if r["kind"] == kind]
    records[matching[index]]["data"].update(change)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def drop_lines(path: Path, kind: str, count: int) -> None:
    records = lines(path)
    matching = [i for i, r in enumerate(records) if r["kind"] == kind][-count:]
    path.write_text("".join(json.dumps(r) + "\n" for i, r in enumerate(records) if i not in matching))


EXPORT_TAMPERING = {
    "an audit row edited": lambda p: edit_line(p, "audit_event", 1, {"principal": "someone-else"}),
    "the last audit rows dropped": lambda p: drop_lines(p, "audit_event", 2),
    "every audit row dropped": lambda p: drop_lines(p, "audit_event", 10_000),
    "a checkpoint edited": lambda p: edit_line(p, "checkpoint", -1, {"seq": 1}),
    "a line cut in half": lambda p: p.write_text(p.read_text()[:-40]),
}


@pytest.mark.parametrize("name", list(EXPORT_TAMPERING))
def test_an_edited_export_fails_the_offline_check(make_monitor: MonitorFactory, tmp_path: Path, name: str) -> None:
    monitor = populated(make_monitor)
    output = tmp_path / "evidence.jsonl"
    export_evidence(monitor, OPERATOR, output)

    EXPORT_TAMPERING[name](output)

    try:
        result = verify_export_file(output, public_keys=[public_key(monitor)])
    except InvalidInput as exc:
        assert "is not an evidence record" in str(exc)
        return
    assert result.audit.ok is False, name


def test_a_re_signed_export_fails_against_the_pinned_key(make_monitor: MonitorFactory, tmp_path: Path) -> None:
    """Someone rewrites the export and signs it with a key of their own (and names it in the header)."""
    victim = populated(make_monitor)
    output = tmp_path / "evidence.jsonl"
    export_evidence(victim, OPERATOR, output)
    other = make_monitor(quiet(audit={"key_file": str(tmp_path / "forger-keys.json")}), data_dir=tmp_path / "forger")
    intake.report_incident(other, AGENT, report("Checkout failed"))
    forged = tmp_path / "forged.jsonl"
    export_evidence(other, OPERATOR, forged)

    assert verify_export_file(forged).audit.ok  # self-consistent...
    result = verify_export_file(forged, public_keys=[public_key(victim)])  # ...but not signed by the victim's key
    assert result.audit.ok is False
    assert result.audit.problem is not None and "not trusted" in result.audit.problem


# --- retention ----------------------------------------------------------------------------------------


def test_retention_deletes_old_resolved_incidents_and_archives_old_audit_rows(
    make_monitor: MonitorFactory, clock: FakeClock, tmp_path: Path
) -> None:
    monitor = populated(make_monitor, retention={"incidents_days": 30, "audit_days": 90, "archive_dir": str(tmp_path)})
    old_ids = [i.incident_id for i in queries.list_incidents(monitor, OPERATOR).incidents]
    incidents.resolve_incident(monitor, OPERATOR, old_ids[0], "fixed the checkout")
    clock.advance(days=100)
    intake.report_incident(monitor, AGENT, report("Search failed"))
    with monitor.session() as session:
        rows_before = session.exec(select(func.count()).select_from(AuditEvent)).one()

    result = apply_retention(monitor, OPERATOR)

    assert result.incidents_deleted == 1
    with monitor.session() as session:
        left = {i.incident_id for i in session.exec(select(Incident)).all()}
        first_seq = session.exec(select(func.min(AuditEvent.seq))).one()
    assert old_ids[0] not in left and old_ids[1] in left  # the open one stays, however old
    assert result.archive_file is not None and result.archived_through_seq is not None
    assert first_seq == result.archived_through_seq + 1
    assert result.audit_rows_archived == result.archived_through_seq
    assert result.audit_rows_archived < rows_before
    # Not silently dropped: the archive verifies offline, and a signed archive checkpoint anchors the rest.
    archive = verify_export_file(Path(result.archive_file), public_keys=[public_key(monitor)])
    assert archive.audit.ok, archive.audit.problem
    assert archive.audit.head_seq == result.archived_through_seq
    kinds = [(c.kind, c.seq) for c in read_checkpoints(checkpoint_file_path(monitor))]
    assert ("archive", result.archived_through_seq) in kinds
    assert audit_queries.verify_audit(monitor, OPERATOR).ok
    assert audit_queries.verify_audit(monitor, OPERATOR, incremental=True).ok
    # The database after archiving still exports and verifies from its anchor.
    export_evidence(monitor, OPERATOR, tmp_path / "after.jsonl")
    assert verify_export_file(tmp_path / "after.jsonl", public_keys=[public_key(monitor)]).audit.ok


def test_rows_removed_without_the_archive_step_are_still_caught(
    make_monitor: MonitorFactory, clock: FakeClock, tmp_path: Path
) -> None:
    monitor = populated(make_monitor)
    assert write_checkpoint(monitor) is not None
    with monitor.session() as session:
        for row in session.exec(select(AuditEvent).where(col(AuditEvent.seq) <= 3)).all():
            session.delete(row)
    result = audit_queries.verify_audit(monitor, OPERATOR)
    assert result.ok is False


def test_retention_without_a_policy_says_how_to_add_one(make_monitor: MonitorFactory) -> None:
    with pytest.raises(InvalidInput, match=r"no \[retention\] policy"):
        apply_retention(make_monitor(quiet()), OPERATOR)


def test_retention_is_admin_only(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(quiet(retention={"incidents_days": 1}))
    with pytest.raises(PermissionDenied):
        apply_retention(monitor, AGENT)


# --- checkpoints to a destination -----------------------------------------------------------------------


def test_checkpoints_go_to_a_telemetry_destination_too(make_monitor: MonitorFactory) -> None:
    monitor = populated(make_monitor, audit={"checkpoint_destination": "telemetry"})
    checkpoint = write_checkpoint(monitor)
    assert checkpoint is not None

    telemetry = [json.loads(line) for line in (monitor.data_dir / "telemetry.jsonl").read_text().splitlines()]
    copies = [t for t in telemetry if "audit-checkpoint" in json.dumps(t)]
    assert len(copies) == 1
    assert checkpoint.signature in json.dumps(copies[0])


def test_a_checkpoint_destination_must_exist(make_monitor: MonitorFactory) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="checkpoint_destination"):
        make_monitor(quiet(audit={"checkpoint_destination": "nowhere"}))


# --- the CLI --------------------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def test_cli_export_verify_file_public_key_and_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[destinations]]\nid = "telemetry"\nkind = "telemetry"\npath = "telemetry.jsonl"\n')
    data = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    assert run_cli(capsys, "audit", "verify", *data)[0] == 0
    code, out = run_cli(capsys, "export", "-o", str(tmp_path / "e.jsonl"), *data)
    assert code == 0 and "exported to" in out
    key = run_cli(capsys, "audit", "public-key", *data)[1].strip()
    assert len(key) == 64

    code, out = run_cli(capsys, "audit", "verify", "--file", str(tmp_path / "e.jsonl"), "--public-key", key)
    assert code == 0 and "verified with the given public key" in out
    drop_lines(tmp_path / "e.jsonl", "audit_event", 1)
    code, out = run_cli(capsys, "audit", "verify", "--file", str(tmp_path / "e.jsonl"), "--public-key", key)
    assert code == 1 and "BROKEN" in out

    code, out = run_cli(capsys, "audit", "rotate-key", *data)
    assert code == 0 and "audit key rotated" in out
    code, out = run_cli(capsys, "audit", "verify", "--incremental", *data)
    assert code == 0 and "intact" in out
    assert run_cli(capsys, "audit", "checkpoint", *data)[0] == 0
    # After a rotation the export holds checkpoints of both keys: `public-key` prints both, current first.
    keys = run_cli(capsys, "audit", "public-key", *data)[1]
    assert len(keys.split()) == 2 and keys.split()[1] == key
    assert run_cli(capsys, "export", "-o", str(tmp_path / "e2.jsonl"), *data)[0] == 0
    code, out = run_cli(capsys, "audit", "verify", "--file", str(tmp_path / "e2.jsonl"), "--public-key", keys)
    assert code == 0, out
    code, out = run_cli(capsys, "audit", "verify", "--file", str(tmp_path / "e2.jsonl"), "--public-key", key)
    assert code == 1 and "not trusted" in out
