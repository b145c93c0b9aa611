"""The audit key ring and incremental verification (issue 12, 4).

Where the key comes from (environment, key file, the default file created 0600 outside the data dir),
rotation (old rows verify under their key ids, the change only at a rotation record), and the
incremental check reading the rows since the last checkpoint only (counted, never timed).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlmodel import col, select

from incident_monitor.domain.enums import Decision
from incident_monitor.domain.models import AuditEvent
from incident_monitor.errors import ConfigError, PermissionDenied
from incident_monitor.service import audit_queries, queries
from incident_monitor.service.audit_chain import ROTATION_ACTION, SYSTEM_PRINCIPAL, _row_hash, append_audit, row_mac
from incident_monitor.service.audit_checkpoints import (
    checkpoint_file_path,
    read_checkpoints,
    verify_audit_log,
    write_checkpoint,
)
from incident_monitor.service.audit_keys import KEY_ENV, KEY_FILE_ENV, key_id_for
from incident_monitor.service.governance import posture
from incident_monitor.service.monitor import Monitor
from support.databases import stored_bytes
from support.monitors import AGENT, OPERATOR, MonitorFactory, flow_config


def quiet(**overrides: object) -> dict[str, object]:
    return flow_config(self_monitoring={"enabled": False}, **overrides)


def chain_rows(monitor: Monitor) -> list[AuditEvent]:
    with monitor.session() as session:
        return list(session.exec(select(AuditEvent).order_by(col(AuditEvent.seq))).all())


# --- where the key lives ----------------------------------------------------------------------------


def test_without_configuration_a_key_file_is_created_0600_outside_the_data_dir(
    make_monitor: MonitorFactory, audit_key_home: Path
) -> None:
    monitor = make_monitor(quiet())
    queries.list_incidents(monitor, OPERATOR)

    key_file = audit_key_home / "audit-keys.json"
    assert monitor.audit_keys.key_file == key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not key_file.resolve().is_relative_to(monitor.data_dir)
    # The secret is nowhere in the database: only its id is.
    secret = json.loads(key_file.read_text())["keys"][0]["secret"]
    database = stored_bytes(monitor)
    assert secret.encode() not in database
    assert monitor.audit_keys.current.secret not in database
    assert {r.key_id for r in chain_rows(monitor)} == {monitor.audit_keys.current.key_id}


def test_a_key_from_the_environment_wins_and_is_checked(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch, audit_key_home: Path
) -> None:
    monkeypatch.setenv(KEY_ENV, "k" * 40)
    monitor = make_monitor(quiet())
    queries.list_incidents(monitor, OPERATOR)

    assert monitor.audit_keys.current.key_id == key_id_for(b"k" * 40)
    assert monitor.audit_keys.source == f"environment ({KEY_ENV})"
    assert not (audit_key_home / "audit-keys.json").exists()

    monkeypatch.setenv(KEY_ENV, "too-short")
    with pytest.raises(ConfigError, match=f"{KEY_ENV}: each comma-separated key must be at least 32") as raised:
        make_monitor(quiet(), data_dir=monitor.data_dir.parent / "other")
    assert "too-short" not in str(raised.value)


def test_a_key_file_from_config_or_environment(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    configured = tmp_path / "keys" / "configured.json"
    monitor = make_monitor(quiet(audit={"key_file": str(configured)}))
    assert monitor.audit_keys.key_file == configured and configured.exists()

    from_env = tmp_path / "keys" / "env.json"
    monkeypatch.setenv(KEY_FILE_ENV, str(from_env))
    other = make_monitor(quiet(audit={"key_file": str(configured)}), data_dir=tmp_path / "other")
    assert other.audit_keys.key_file == from_env


def test_a_damaged_key_file_is_one_clear_error(make_monitor: MonitorFactory, tmp_path: Path) -> None:
    key_file = tmp_path / "keys.json"
    key_file.write_text('{"current": "ak_x", "keys": [{"id": "ak_x", "secret": "c2VjcmV0LXZhbHVl"}]}')
    with pytest.raises(ConfigError, match="does not match its secret") as raised:
        make_monitor(quiet(audit={"key_file": str(key_file)}))
    assert "c2VjcmV0LXZhbHVl" not in str(raised.value)
    key_file.write_text("not json")
    with pytest.raises(ConfigError, match="is not a valid key file"):
        make_monitor(quiet(audit={"key_file": str(key_file)}), data_dir=tmp_path / "d2")


# --- rotation ---------------------------------------------------------------------------------------


def test_rotation_keeps_old_rows_verifying_under_their_key(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(quiet())
    for _ in range(3):
        queries.list_incidents(monitor, OPERATOR)
    assert write_checkpoint(monitor) is not None
    old_id = monitor.audit_keys.current.key_id

    new_id = audit_queries.rotate_audit_key(monitor, OPERATOR)
    queries.list_incidents(monitor, OPERATOR)

    assert new_id != old_id
    rows = chain_rows(monitor)
    rotation = [r for r in rows if r.action == ROTATION_ACTION]
    assert len(rotation) == 1
    assert rotation[0].key_id == new_id and rotation[0].principal == SYSTEM_PRINCIPAL
    assert rotation[0].reasons == [f"new key {new_id}", f"previous key {old_id}"]
    before, after = rows[: rotation[0].seq - 1], rows[rotation[0].seq :]
    assert {r.key_id for r in before} == {old_id} and {r.key_id for r in after} == {new_id}
    assert any(r.action == "rotate_audit_key" for r in after)
    # Checkpoints signed by each key verify: the old key is still in the ring.
    assert {c.key_id for c in read_checkpoints(checkpoint_file_path(monitor))} == {old_id, new_id}
    assert audit_queries.verify_audit(monitor, OPERATOR).ok

    # A new process reads the rotated key file: both keys, the new one current.
    reopened = make_monitor(quiet(), data_dir=monitor.data_dir)
    assert reopened.audit_keys.current.key_id == new_id and set(reopened.audit_keys.keys) == {old_id, new_id}
    assert audit_queries.verify_audit(reopened, OPERATOR).ok


def test_dropping_the_old_key_breaks_verification(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(quiet())
    queries.list_incidents(monitor, OPERATOR)
    old_id = monitor.audit_keys.current.key_id
    audit_queries.rotate_audit_key(monitor, OPERATOR)
    key_file = monitor.audit_keys.key_file
    assert key_file is not None
    document = json.loads(key_file.read_text())
    document["keys"] = [k for k in document["keys"] if k["id"] != old_id]
    key_file.write_text(json.dumps(document))

    result = audit_queries.verify_audit(make_monitor(quiet(), data_dir=monitor.data_dir), OPERATOR)
    assert result.ok is False
    assert result.problem is not None and old_id in result.problem


def test_rotating_environment_keys_writes_the_record_at_the_next_row(
    make_monitor: MonitorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = "o" * 40, "n" * 40
    monkeypatch.setenv(KEY_ENV, old)
    monitor = make_monitor(quiet())
    queries.list_incidents(monitor, OPERATOR)
    with pytest.raises(ConfigError, match="rotate by putting a new key first"):
        audit_queries.rotate_audit_key(monitor, OPERATOR)

    monkeypatch.setenv(KEY_ENV, f"{new},{old}")
    reopened = make_monitor(quiet(), data_dir=monitor.data_dir)
    queries.list_incidents(reopened, OPERATOR)

    rows = chain_rows(reopened)
    assert [r.action for r in rows if r.action == ROTATION_ACTION] == [ROTATION_ACTION]
    assert audit_queries.verify_audit(reopened, OPERATOR).ok


def test_a_key_change_without_a_rotation_record_is_caught(make_monitor: MonitorFactory) -> None:
    """Someone holding a retired key appends a row sealed with it, without a rotation record."""
    monitor = make_monitor(quiet())
    queries.list_incidents(monitor, OPERATOR)
    audit_queries.rotate_audit_key(monitor, OPERATOR)
    retired = next(k for k in monitor.audit_keys.keys.values() if k.key_id != monitor.audit_keys.current.key_id)
    with monitor.session() as session:
        head = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc())).first()
        assert head is not None and head.seq is not None
        forged = AuditEvent(
            seq=head.seq + 1,
            at=monitor.clock(),
            principal="x",
            action="forged",
            decision=Decision.allow,
            reasons=["x"],
            arguments_digest="sha256:0",
            prev_hash=head.hash,
            hash="",
        )
        forged.hash = _row_hash(forged, head.hash)
        forged.key_id, forged.mac = retired.key_id, row_mac(retired, head.seq + 1, forged.hash)
        session.add(forged)

    result = audit_queries.verify_audit(monitor, OPERATOR)
    assert result.ok is False
    assert result.problem is not None and "without a rotation record" in result.problem


# --- incremental verification -----------------------------------------------------------------------


def bulk_rows(monitor: Monitor, count: int) -> None:
    with monitor.session() as session:
        for i in range(count):
            append_audit(
                session,
                monitor.audit_keys,
                at=monitor.clock(),
                principal="bulk",
                action="list_incidents",
                decision=Decision.allow,
                reasons=[f"row {i}"],
                arguments={"i": i},
            )


def test_the_incremental_check_reads_only_the_rows_since_the_last_checkpoint(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(quiet())
    bulk_rows(monitor, 3_000)
    checkpoint = write_checkpoint(monitor)
    assert checkpoint is not None
    bulk_rows(monitor, 5)

    with monitor.session() as session:
        full = verify_audit_log(monitor, session)
        incremental = verify_audit_log(monitor, session, incremental=True)

    assert full.ok and incremental.ok
    assert full.rows_read == 3_006
    assert incremental.from_seq == checkpoint.seq
    # The five new rows, plus the checkpointed row(s) compared with their signed hashes.
    assert incremental.rows_read == 5 + 1
    assert incremental.head_hash == full.head_hash


def test_posture_verifies_incrementally(make_monitor: MonitorFactory, tmp_path: Path) -> None:
    """Posture's cost does not grow with history: 300 or 3,000 rows behind a checkpoint read the same."""
    read = []
    for size in (300, 3_000):
        monitor = make_monitor(quiet(), data_dir=tmp_path / f"size-{size}")
        bulk_rows(monitor, size)
        assert write_checkpoint(monitor) is not None
        queries.list_incidents(monitor, OPERATOR)
        with monitor.session() as session:
            found = posture.collect_evidence(monitor, session, [])
        assert found.audit_chain.ok
        read.append(found.audit_chain.rows_read)
    assert read[0] == read[1] <= 3


def test_verify_is_governed(make_monitor: MonitorFactory) -> None:
    monitor = make_monitor(quiet())
    with pytest.raises(PermissionDenied):
        audit_queries.verify_audit(monitor, AGENT)
    with pytest.raises(PermissionDenied):
        audit_queries.rotate_audit_key(monitor, AGENT)


def test_a_scratch_monitor_never_signs_into_the_real_checkpoint_file(make_monitor: MonitorFactory) -> None:
    """Posture probes run on a scratch monitor (same data dir, throwaway key): its checkpoints would be
    signed by a key nobody trusts and break the real file."""
    monitor = make_monitor(quiet(audit={"checkpoint_every": 1}))
    queries.list_incidents(monitor, OPERATOR)
    before = checkpoint_file_path(monitor).read_text()
    scratch = Monitor(monitor.config, monitor.engine, monitor.data_dir, monitor.destinations, clock=monitor.clock)

    assert write_checkpoint(scratch) is None
    assert checkpoint_file_path(monitor).read_text() == before


def test_a_database_from_before_keyed_macs_verifies_and_is_sealed_once(make_monitor: MonitorFactory) -> None:
    """An upgrade: rows without MACs pass (as a prefix, while no checkpoint exists) and the first checkpoint seals
    them; from then on a row without a MAC is tampering."""
    monitor = make_monitor(quiet())
    for _ in range(3):
        queries.list_incidents(monitor, OPERATOR)
    with monitor.session() as session:
        for row in session.exec(select(AuditEvent)).all():
            row.key_id, row.mac = None, None
            session.add(row)
    assert not checkpoint_file_path(monitor).exists()
    with monitor.session() as session:
        assert posture.collect_evidence(monitor, session, []).audit_chain.ok

    assert audit_queries.verify_audit(monitor, OPERATOR).ok  # seals, then signs a checkpoint
    assert all(r.mac for r in chain_rows(monitor))
    with monitor.session() as session:
        row = session.get(AuditEvent, 1)
        assert row is not None
        row.mac = None
        session.add(row)
    assert audit_queries.verify_audit(monitor, OPERATOR).ok is False


def test_the_default_key_file_sits_beside_a_private_config_only(tmp_path: Path, audit_key_home: Path) -> None:
    """Beside config.toml where `incident-monitor init` keeps it with secrets.env; a config in a shared place
    (the repo's examples/) gets no key written beside it."""
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text('[[destinations]]\nid = "telemetry"\nkind = "telemetry"\npath = "telemetry.jsonl"\n')
    shared = Monitor.open(config_path=config, data_dir=tmp_path / "data")
    (config.parent / "secrets.env").write_text("")
    private = Monitor.open(config_path=config, data_dir=tmp_path / "data2")
    try:
        assert shared.audit_keys.key_file == audit_key_home / "audit-keys.json"
        assert private.audit_keys.key_file == config.parent / "audit-keys.json"
    finally:
        shared.close()
        private.close()
